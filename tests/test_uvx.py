"""``uvx --from <checkout or wheel> tablestore-openmemory-mcp --transport=stdio`` works, with uv from PyPI.

uvx resolves the project's dependencies from the package index into a fresh environment: this is the
clean-install path the reference server breaks on.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from tests.server_process import server_env, structured

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


def _uv_env(tmp_path: Path) -> dict[str, str]:
    env = server_env(tmp_path, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
    # Reuse the developer's (or CI's) uv cache so repeated runs do not download everything again.
    env["UV_CACHE_DIR"] = os.environ.get("UV_CACHE_DIR") or str(Path.home() / ".cache" / "uv")
    return env


async def _round_trip(command: list[str], env: dict[str, str]) -> None:
    params = StdioServerParameters(command=command[0], args=command[1:], env=env)
    async with Client(params) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "add_memories" in names and "delete_all_memories" not in names
        structured(await client.call_tool("add_memories", {"text": "installed with uvx"}))
        assert structured(await client.call_tool("list_memories", {}))["count"] == 1


@pytest.mark.skipif(UV is None, reason="uv is installed by the test extra")
async def test_uvx_from_checkout_and_from_wheel(tmp_path):
    env = _uv_env(tmp_path)
    uvx = [UV, "tool", "run"]
    await _round_trip([*uvx, "--from", str(ROOT), "tablestore-openmemory-mcp", "--transport=stdio"], env)

    dist = tmp_path / "dist"
    subprocess.run(
        [UV, "build", "--wheel", "--out-dir", str(dist), str(ROOT)],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = dist.glob("*.whl")
    await _round_trip([*uvx, "--from", str(wheel), "tablestore-openmemory-mcp", "--transport=stdio"], env)


@pytest.mark.skipif(UV is None, reason="uv is installed by the test extra")
async def test_uvx_default_install_has_no_mem0_and_the_extra_runs_the_mem0_engine(tmp_path):
    """The default install downloads no mem0 (nor grpcio, sqlalchemy, posthog); MEMORY_ENGINE=mem0 then says
    in one line what to install, and ``[mem0]`` runs it."""
    env = _uv_env(tmp_path)
    uvx = [UV, "tool", "run"]
    check = (
        "import importlib.util as u; print([m for m in ('mem0', 'grpc', 'sqlalchemy', 'posthog') if u.find_spec(m)])"
    )
    plain = subprocess.run(
        [*uvx, "--from", str(ROOT), "python", "-c", check], env=env, capture_output=True, text=True, timeout=600
    )
    assert plain.stdout.strip() == "[]", plain.stderr[-2000:]
    refused = subprocess.run(
        [*uvx, "--from", str(ROOT), "tablestore-openmemory-mcp", "--transport=sse", "--port=0"],
        env={**env, "MEMORY_ENGINE": "mem0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert refused.returncode != 0 and "tablestore-openmemory-mcp[mem0]" in refused.stderr, refused.stderr[-2000:]
    mem0_env = {**env, "MEMORY_ENGINE": "mem0"}
    await _round_trip([*uvx, "--from", f"{ROOT}[mem0]", "tablestore-openmemory-mcp", "--transport=stdio"], mem0_env)
