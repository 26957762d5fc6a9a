"""Run the installed console script as a real server process, the way users do.

Tests talk to it with the MCP SDK's own ``Client`` over stdio, SSE or streamable HTTP. Nothing of ours
is mocked: the only doubles are the fake OpenAI server and the Tablestore emulator behind it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client

from tests.waiting import wait_for

#: How long a server may take to start. A contended 2-core machine can need 30-90 s; override with
#: TEST_STARTUP_TIMEOUT (seconds).
STARTUP_TIMEOUT = float(os.environ.get("TEST_STARTUP_TIMEOUT", "120"))

SCRIPT = shutil.which("tablestore-openmemory-mcp", path=str(Path(sys.executable).parent)) or "tablestore-openmemory-mcp"

#: Variables a developer's shell might carry that would change what the server does under test.
_SCRUB = (
    "OPENAI_",
    "TABLESTORE_",
    "ALIBABA_CLOUD_",
    "LLM_",
    "EMBEDDER_",
    "MEM0_",
    "MCP_",
    "TOOL_",
    "SERVER_",
    "MEMORY_",
)


def server_env(tmp_path: Path, **extra: Any) -> dict[str, str]:
    """A clean environment: data dir and HOME inside ``tmp_path``, no inherited product settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), MEMORY_DATA_DIR=str(tmp_path / "data"), LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def llm_env(fake: Any, **extra: Any) -> dict[str, str]:
    """Settings pointing LLM and embedder at a fake OpenAI server."""
    return {"OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url, **extra}


def tablestore_env(emulator: Any, **extra: Any) -> dict[str, str]:
    return {
        "TABLESTORE_ENDPOINT": emulator.endpoint,
        "TABLESTORE_INSTANCE_NAME": emulator.instance_name,
        "TABLESTORE_ACCESS_KEY_ID": emulator.access_key_id,
        "TABLESTORE_ACCESS_KEY_SECRET": emulator.access_key_secret,
        **extra,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stdio_client(env: dict[str, str], *args: str) -> Client:
    return Client(StdioServerParameters(command=SCRIPT, args=["--transport", "stdio", *args], env=env))


class HttpServer:
    """The server in HTTP mode on a free port; stderr goes to a file for post-mortems."""

    def __init__(
        self, env: dict[str, str], tmp_path: Path, *args: str, transport: str = "sse", port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"server-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [SCRIPT, "--transport", transport, "--port", str(self.port), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> HttpServer:
        """Wait until /health answers; on failure the process is stopped before raising (never left behind)."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            return httpx.get(f"{self.url}/health", timeout=5.0).status_code == 200

        try:
            wait_for(ready, f"the server on port {self.port} to answer /health", timeout, ignore=(httpx.HTTPError,))
            return self
        except AssertionError as exc:
            self.stop()
            raise TimeoutError(f"server not ready after {timeout:.0f} s: {self.log()}") from exc
        except BaseException:
            self.stop()
            raise

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/health", timeout=10.0).json())

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until no tool call is running in the server (its /health reports ``in_flight``)."""
        wait_for(lambda: not self.health().get("in_flight", 0), "no tool call in flight", timeout)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def sse(self, client: str, user: str) -> Client:
        return Client(sse_client(f"{self.url}/mcp/{client}/sse/{user}"))

    def http(self, client: str, user: str) -> Client:
        return Client(f"{self.url}/mcp/{client}/http/{user}")

    def stop(self) -> int:
        """Stop the process (SIGTERM, then SIGKILL); safe to call more than once."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if not self._log.closed:
            self._log.close()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> HttpServer:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@asynccontextmanager
async def connect(server: HttpServer | None, env: dict[str, str] | None, transport: str, client: str, user: str):
    """One MCP client session over ``transport`` ("stdio", "sse" or "http")."""
    if transport == "stdio":
        assert env is not None
        cm = stdio_client({**env, "MCP_STDIO_CLIENT_NAME": client, "MCP_STDIO_USER_ID": user})
    else:
        assert server is not None
        cm = server.sse(client, user) if transport == "sse" else server.http(client, user)
    async with cm as session:
        yield session


def structured(result: Any) -> dict[str, Any]:
    """The structured content of a successful tool result (fails the test on a tool error)."""
    assert not result.is_error, result.content[0].text if result.content else result
    return result.structured_content


def error_text(result: Any) -> str:
    assert result.is_error, f"expected a tool error, got {result.structured_content}"
    return result.content[0].text
