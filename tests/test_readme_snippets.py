"""Every client configuration in README.md (English and Chinese) parses and its command runs.

The stdio snippets say ``uvx --from /path/to/tablestore-openmemory-mcp tablestore-openmemory-mcp ...``.
Offline, the test runs the same program with the same arguments and environment from this checkout's
venv (the console script uvx would install); with network access (``-m network``) it runs uvx itself
with the placeholder replaced by this checkout. URL snippets are opened with the SDK's own client
against a real server on a free port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from tablestore_openmemory_mcp import __version__
from tablestore_openmemory_mcp.settings import Settings, env_name
from tests.server_process import SCRIPT, HttpServer, llm_env, server_env, structured, tablestore_env

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PLACEHOLDER = "/path/to/tablestore-openmemory-mcp"
PROGRAM = "tablestore-openmemory-mcp"
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.M | re.S)


def servers() -> list[dict[str, Any]]:
    """Each distinct server entry of the README's JSON snippets."""
    found: dict[str, dict[str, Any]] = {}
    for block in code_blocks("json"):
        for entry in json.loads(block)["mcpServers"].values():
            found[json.dumps(entry, sort_keys=True)] = entry
    return list(found.values())


STDIO = [entry for entry in servers() if "command" in entry]
URLS = sorted(set(re.findall(r"http://127\.0\.0\.1:8765/mcp/[a-z]+/(?:sse|http)/[a-z]+", README)))


def test_snippets_are_found_in_both_languages():
    chinese = README[README.index("## 中文快速上手") :]
    assert len(code_blocks("json")) >= 5 and "```json" in chinese
    assert len(STDIO) == 2, "an offline and a DashScope + Tablestore stdio configuration"
    assert any("/sse/" in url for url in URLS) and any("/http/" in url for url in URLS)
    for entry in STDIO:
        assert entry["command"] == "uvx"
        assert entry["args"][:3] == ["--from", PLACEHOLDER, PROGRAM], entry["args"]


def test_readme_lists_every_variable_and_the_current_wheel():
    table = README[README.index("## Configuration") : README.index("## Models")]
    missing = [env_name(Settings, f) for f in Settings.model_fields if f"`{env_name(Settings, f)}`" not in table]
    assert not missing, f"README's configuration table lacks {missing}"
    wheels = set(re.findall(r"tablestore_openmemory_mcp-[^ ]+\.whl", README))
    assert wheels == {f"tablestore_openmemory_mcp-{__version__}-py3-none-any.whl"}


def _env(tmp_path: Path, entry: dict[str, Any], **replace: str) -> dict[str, str]:
    assert set(entry.get("env", {})) <= {env_name(Settings, f) for f in Settings.model_fields}, "unknown variable"
    return server_env(tmp_path, **{**entry.get("env", {}), **replace})


async def _round_trip(command: str, args: list[str], env: dict[str, str]) -> None:
    async with Client(StdioServerParameters(command=command, args=args, env=env)) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"add_memories", "search_memories", "list_memories"} <= names
        structured(
            await client.call_tool("add_memories", {"text": "I configured this from the README", "infer": False})
        )
        listed = structured(await client.call_tool("list_memories", {}))
        assert [m["memory"] for m in listed["memories"]] == ["I configured this from the README"]


async def test_offline_stdio_snippet_runs(tmp_path):
    [entry] = [e for e in STDIO if not any(k.startswith("OPENAI_") for k in e.get("env", {}))]
    await _round_trip(SCRIPT, entry["args"][3:], _env(tmp_path, entry))


async def test_dashscope_and_tablestore_snippet_runs_against_the_fakes(tmp_path, fake_openai, tablestore_emulator):
    """The same program with every variable of the snippet, pointed at the fake DashScope and the emulator."""
    [entry] = [e for e in STDIO if any(k.startswith("OPENAI_") for k in e.get("env", {}))]
    fakes = {**llm_env(fake_openai), **tablestore_env(tablestore_emulator)}
    assert set(entry["env"]) - {"MCP_STDIO_CLIENT_NAME", "MCP_STDIO_USER_ID"} == set(fakes)
    await _round_trip(SCRIPT, entry["args"][3:], _env(tmp_path, entry, **fakes))


@pytest.mark.parametrize("url", URLS)
async def test_url_snippets_connect(tmp_path, url):
    transport = "streamable-http" if "/http/" in url else "sse"
    with HttpServer(server_env(tmp_path), tmp_path, transport=transport) as server:
        client_name, kind, user = url.rsplit("/", 3)[1:]
        session = server.http(client_name, user) if kind == "http" else server.sse(client_name, user)
        async with session as client:
            assert "add_memories" in {tool.name for tool in (await client.list_tools()).tools}
            structured(await client.call_tool("add_memories", {"text": f"connected over {kind}", "infer": False}))


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.skipif(UV is None, reason="uv is installed by the test extra")
async def test_stdio_snippet_runs_with_uvx_from_this_checkout(tmp_path):
    [entry] = [e for e in STDIO if not any(k.startswith("OPENAI_") for k in e.get("env", {}))]
    env = _env(tmp_path, entry, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
    env["UV_CACHE_DIR"] = os.environ.get("UV_CACHE_DIR") or str(Path.home() / ".cache" / "uv")
    args = [str(ROOT) if arg == PLACEHOLDER else arg for arg in entry["args"]]
    assert UV is not None
    await _round_trip(UV, ["tool", "run", *args], env)


TOKEN_EXAMPLES = re.findall(r"MCP_AUTH_TOKENS=([^\s`|'\"]+)", README)


async def test_readme_token_examples_start_and_sign_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each ``MCP_AUTH_TOKENS=...`` README shows is accepted as written, and each of its tokens signs in."""
    import httpx
    from starlette.applications import Starlette

    from tablestore_openmemory_mcp.settings import load_settings
    from tablestore_openmemory_mcp.web.routes import WebPage

    assert TOKEN_EXAMPLES, "README shows how to set tokens"
    for example in TOKEN_EXAMPLES:
        monkeypatch.setenv("MCP_AUTH_TOKENS", example)
        settings = load_settings()
        app = Starlette(routes=WebPage(settings).routes())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            for entry in example.split(","):
                token, _, user = entry.partition(":")
                answer = await http.post("/auth/login", json={"token": token}, headers={"X-Requested-With": "t"})
                assert answer.status_code == 200 and answer.json()["user"] == (user or None), example
