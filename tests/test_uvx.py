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
