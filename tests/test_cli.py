"""The command line: settings errors, stdout purity, restarts, two processes on one store, imports."""

import json
import re
import subprocess
import sys
import time

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.server_process import SCRIPT, server_env, stdio_client, structured

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "env,args,variable",
    [
        ({"SERVER_PORT": "eighty"}, [], "SERVER_PORT"),
        ({"TABLESTORE_VECTOR_DIMENSION": "0"}, [], "TABLESTORE_VECTOR_DIMENSION"),
        ({"TOOL_BLACK_LIST": '["delete_all_memories"'}, [], "TOOL_BLACK_LIST"),
        ({"TOOL_BLACK_LIST": '["no_such_tool"]'}, [], "TOOL_BLACK_LIST"),
        ({"OPENAI_BASE_URL": "dashscope.aliyuncs.com/compatible-mode/v1"}, [], "OPENAI_BASE_URL"),
        ({"TABLESTORE_ENDPOINT": "ots.example.com"}, [], "TABLESTORE_ENDPOINT"),
        ({"MCP_STDIO_USER_ID": "a/b"}, [], "MCP_STDIO_USER_ID"),
        ({}, ["--port", "99999"], "--port"),
        ({}, ["--env-file", "/nonexistent/.env"], "--env-file"),
        ({"LOG_LEVEL": "loud"}, [], "LOG_LEVEL"),
        ({"MCP_OAUTH_ISSUER": "https://login.example.com"}, [], "MCP_PUBLIC_URL"),
        (
            {
                "TABLESTORE_ENDPOINT": "https://inst.cn-hangzhou.ots.aliyuncs.com",
                "TABLESTORE_ACCESS_KEY_ID": "ak",
                "TABLESTORE_ACCESS_KEY_SECRET": "sk",
            },
            [],
            "TABLESTORE_INSTANCE_NAME",
        ),
    ],
)
def test_bad_settings_fail_with_one_line_and_exit_2(tmp_path, env, args, variable):
    done = subprocess.run(
        [SCRIPT, "--transport", "stdio", *args],
        env=server_env(tmp_path, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_env_file_and_command_line_precedence(tmp_path):
    env_file = tmp_path / "custom.env"
    env_file.write_text("SERVER_PORT=eighty\n")
    done = subprocess.run(
        [SCRIPT, "--env-file", str(env_file)],
        env=server_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "SERVER_PORT" in done.stderr, "the --env-file is read"
    from tablestore_openmemory_mcp.settings import load_settings

    settings = load_settings(None, port=9000)
    assert settings.port == 9000


def _frames(proc: subprocess.Popen, count: int, deadline: float) -> list[dict]:
    frames = []
    while len(frames) < count and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        frames.append(json.loads(line))  # any non-JSON line on stdout fails the test here
    return frames


def test_stdio_stdout_carries_only_protocol_frames(tmp_path):
    """Drive the server with raw JSON-RPC and parse every byte of stdout; a stray print fails this."""
    proc = subprocess.Popen(
        [SCRIPT, "--transport", "stdio"],
        env=server_env(tmp_path, LOG_LEVEL="DEBUG"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "add_memories", "arguments": {"text": "stdout must stay clean"}},
        },
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "tools/call",
            "params": {"name": "search_memories", "arguments": {"query": "clean"}},
        },
    ]
    for request in requests:
        proc.stdin.write(json.dumps(request) + "\n")
    proc.stdin.flush()
    frames = _frames(proc, 4, time.monotonic() + 60)
    proc.stdin.close()  # stdio mode exits when stdin closes
    assert proc.wait(timeout=30) == 0
    rest = proc.stdout.read()
    stderr = proc.stderr.read()
    assert sorted(frame.get("id") for frame in frames) == [1, 2, 3, 4]  # calls run concurrently
    assert all(frame["jsonrpc"] == "2.0" for frame in frames)
    assert rest.strip() == "", f"unexpected stdout after the last frame: {rest!r}"
    assert "transport=stdio" in stderr, "the startup line goes to stderr"


async def test_memories_survive_a_restart_and_two_processes_share_a_store(tmp_path):
    env = server_env(tmp_path)
    async with stdio_client(env) as first:
        structured(await first.call_tool("add_memories", {"text": "Remember the milk"}))
    async with stdio_client(env) as one, stdio_client(env) as two:
        assert [m["memory"] for m in structured(await two.call_tool("list_memories", {}))["memories"]] == [
            "Remember the milk"
        ]

        async def add_many(client, prefix):
            for index in range(10):
                structured(await client.call_tool("add_memories", {"text": f"{prefix} fact {index}"}))

        async with anyio.create_task_group() as group:
            group.start_soon(add_many, one, "window one")
            group.start_soon(add_many, two, "window two")
        for client in (one, two):
            listed = structured(await client.call_tool("list_memories", {}))
            assert listed["count"] == 21
            found = structured(await client.call_tool("search_memories", {"query": "window two fact 7", "limit": 1}))
            assert found["results"][0]["memory"] == "window two fact 7"


def test_import_has_no_side_effects(tmp_path):
    """Importing every module writes no file, prints nothing and opens no connection."""
    code = (
        "import pkgutil, importlib, tablestore_openmemory_mcp as p\n"
        "for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.'):\n"
        "    if '.stores.' not in m.name: importlib.import_module(m.name)\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "XDG_DATA_HOME": str(home / "data")},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert list(home.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["home"]


async def test_no_files_outside_the_data_dir_and_telemetry_off(tmp_path):
    env = server_env(tmp_path)
    async with stdio_client(env) as client:
        structured(await client.call_tool("add_memories", {"text": "privacy first"}))
    assert list((tmp_path / "home").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "home"]
    config = tmp_path / "data" / "mem0" / "config.json"
    if config.exists():  # mem0 writes it only when its Memory class is imported; then it is inside our data dir
        assert "user_id" in json.loads(config.read_text())


async def test_black_list_and_custom_descriptions(tmp_path):
    env = server_env(
        tmp_path,
        TOOL_BLACK_LIST='["memory_history", "delete_memories"]',
        TOOL_ADD_MEMORIES_DESCRIPTION="Remember what matters.",
        TOOL_SEARCH_MEMORIES_DESCRIPTION="Look it up first.",
    )
    async with stdio_client(env) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        # The list replaces the default, so delete_all_memories is shown here.
        assert set(tools) == {
            "add_memories",
            "search_memories",
            "list_memories",
            "update_memory",
            "delete_all_memories",
            "set_memory_state",
        }
        assert tools["add_memories"].description == "Remember what matters."
        assert tools["search_memories"].description == "Look it up first."
        with pytest.raises(MCPError) as hidden:  # a hidden tool is an unknown tool: JSON-RPC -32602
            await client.call_tool("delete_memories", {"memory_ids": ["00000000-0000-4000-8000-000000000000"]})
        assert hidden.value.code == -32602
    async with stdio_client(server_env(tmp_path)) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "memory_history" in names
        assert not {"delete_all_memories", "set_memory_state"} & names, "hidden by default"


def test_version_and_help_list_every_variable_and_the_client_urls(tmp_path):
    from tablestore_openmemory_mcp import __version__
    from tablestore_openmemory_mcp.settings import Settings, env_name

    for flag in ("-V", "--version"):
        done = subprocess.run([SCRIPT, flag], env=server_env(tmp_path), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.strip() == f"tablestore-openmemory-mcp {__version__}"
    done = subprocess.run([SCRIPT, "--help"], env=server_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for field in Settings.model_fields:
        assert re.search(rf"^  {env_name(Settings, field)}\b", done.stdout, flags=re.M), field
    assert "http://127.0.0.1:8765/mcp/<client>/sse/<user>" in done.stdout
    assert "http://127.0.0.1:8765/mcp/<client>/http/<user>" in done.stdout


def test_stdio_startup_failure_answers_the_handshake_and_the_waiting_call(tmp_path):
    """The client gets the reason as a tool error (not "Connection closed"); then the process exits 1."""
    proc = subprocess.Popen(
        [SCRIPT, "--transport", "stdio"],
        env=server_env(tmp_path, TABLESTORE_VECTOR_DIMENSION="1000"),  # the offline embedder makes 384
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        requests = [
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            },
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_memories", "arguments": {}}},
        ]
        proc.stdin.write("".join(json.dumps(request) + "\n" for request in requests))
        proc.stdin.flush()  # stdin stays open: the server must exit on its own
        frames = {frame["id"]: frame for frame in _frames(proc, 2, time.monotonic() + 90)}
        assert proc.wait(timeout=90) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    assert sorted(frames) == [1, 2], stderr
    result = frames[2]["result"]
    assert result["isError"] is True
    text = result["content"][0]["text"]
    assert "could not start" in text and "TABLESTORE_VECTOR_DIMENSION=1000" in text
    assert [line for line in stderr.splitlines() if "cannot start" in line] == [
        f"tablestore-openmemory-mcp: cannot start: {text.split('could not start: ', 1)[1]}"
    ]
    assert "Traceback" not in stderr


async def test_startup_line_shows_the_embedder_url_and_a_rejected_key_is_one_warning(tmp_path):
    """A wrong OPENAI_API_KEY is found at startup (one line naming it); the server still serves."""
    from mcp import StdioServerParameters
    from mcp.client.stdio import stdio_client as sdk_stdio_client

    from tests.unit.test_probe import Stub

    stub = Stub(401)
    errlog_path = tmp_path / "stderr.log"
    try:
        env = server_env(tmp_path, LOG_LEVEL="info", OPENAI_API_KEY="sk-wrong", OPENAI_BASE_URL=stub.url)
        params = StdioServerParameters(command=SCRIPT, args=["--transport", "stdio"], env=env)
        with errlog_path.open("w") as errlog:
            async with Client(sdk_stdio_client(params, errlog=errlog)) as client:
                assert "add_memories" in {tool.name for tool in (await client.list_tools()).tools}
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:  # the probe and the startup line come from background threads
                    stderr = errlog_path.read_text()
                    if "transport=stdio" in stderr and "rejected the API key" in stderr:
                        break
                    await anyio.sleep(0.1)
                assert structured(await client.call_tool("list_memories", {}))["count"] == 0
    finally:
        stub.close()
    stderr = errlog_path.read_text()
    warnings = [line for line in stderr.splitlines() if "rejected the API key" in line]
    assert len(warnings) == 1 and "OPENAI_API_KEY" in warnings[0] and stub.url in warnings[0], stderr
    [startup] = [line for line in stderr.splitlines() if "transport=stdio" in line]
    assert f"embedder=openai:text-embedding-v4@{stub.url}" in startup and f"llm=openai:qwen-plus@{stub.url}" in startup
    assert stub.requests == [("/v1/models", "Bearer sk-wrong")], "one probe for the shared endpoint"


async def test_env_example_uncommented_as_it_is_starts(tmp_path):
    """Every ``# VAR=...`` line of .env.example uncommented: empty values are unset, the defaults run."""
    from tests.unit.test_settings import uncommented_env_example

    env_file = uncommented_env_example(tmp_path)
    env = server_env(tmp_path)
    del env["MEMORY_DATA_DIR"], env["LOG_LEVEL"]  # only the file speaks
    env["XDG_DATA_HOME"] = str(tmp_path / "home" / ".local" / "share")  # the user data dir, inside tmp_path
    async with stdio_client(env, "--env-file", str(env_file)) as client:
        assert "add_memories" in {tool.name for tool in (await client.list_tools()).tools}
        structured(await client.call_tool("add_memories", {"text": "configured by .env.example"}))
        found = structured(await client.call_tool("search_memories", {"query": "env example"}))
        assert [m["memory"] for m in found["results"]] == ["configured by .env.example"]
    default_dir = tmp_path / "home" / ".local" / "share" / "tablestore-openmemory-mcp"
    assert sys.platform != "linux" or any(default_dir.iterdir()), "MEMORY_DATA_DIR= means the user data dir"
