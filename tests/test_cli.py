"""The command line: settings errors, stdout purity, restarts, two processes on one store, imports."""

import json
import subprocess
import sys
import time

import anyio
import pytest

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
    config = json.loads((tmp_path / "data" / "mem0" / "config.json").read_text())
    assert "user_id" in config  # mem0's own file, inside our data dir


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
        }
        assert tools["add_memories"].description == "Remember what matters."
        assert tools["search_memories"].description == "Look it up first."
        hidden = await client.call_tool("delete_memories", {"memory_ids": ["00000000-0000-4000-8000-000000000000"]})
        assert hidden.is_error
    async with stdio_client(server_env(tmp_path)) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "delete_all_memories" not in names and "memory_history" in names, "delete_all is hidden by default"
