"""scripts/run: no reinstall when nothing changed, one install when the stamp is stale, a broken venv recreated.

The venv is a throw-away one in tmp_path (VENV=...). Its console script is this checkout's real one, and
``uv`` is a stand-in on PATH that records each call, so the test needs no network and can count installs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tablestore_openmemory_mcp import __version__
from tests.server_process import SCRIPT

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "scripts" / "run"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="bash scripts")


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "uv-calls.txt"
    fake_uv = bin_dir / "uv"
    fake_uv.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\n')
    fake_uv.chmod(0o755)
    return {"venv": tmp_path / "venv", "bin": bin_dir, "calls": calls}


def _make_venv(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (venv / "bin" / "tablestore-openmemory-mcp").symlink_to(SCRIPT)


def _run(sandbox: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VENV": str(sandbox["venv"]), "PATH": f"{sandbox['bin']}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHON", None)
    return subprocess.run([str(RUN), *args], env=env, capture_output=True, text=True, timeout=300)


def _installs(sandbox: dict[str, Path]) -> list[str]:
    calls = sandbox["calls"]
    return calls.read_text().splitlines() if calls.exists() else []


def test_installs_once_then_starts_without_installing(sandbox):
    _make_venv(sandbox["venv"])
    first = _run(sandbox, "-V")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"tablestore-openmemory-mcp {__version__}"
    [install] = _installs(sandbox)
    assert install.startswith("pip install") and f"-e {ROOT}" in install
    for _ in range(3):
        again = _run(sandbox, "-V")
        assert again.returncode == 0 and again.stdout.strip() == first.stdout.strip(), again.stderr
    assert len(_installs(sandbox)) == 1, "nothing changed: no reinstall"


def test_a_stale_stamp_reinstalls(sandbox):
    _make_venv(sandbox["venv"])
    assert _run(sandbox, "-V").returncode == 0
    [stamp] = sandbox["venv"].glob(".install-stamp*")
    stamp.write_text("made for another pyproject.toml\n")
    assert _run(sandbox, "-V").returncode == 0
    assert len(_installs(sandbox)) == 2


def test_a_venv_with_a_broken_python_is_recreated(sandbox):
    venv = sandbox["venv"]
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(venv / "no-such-python")  # its interpreter was removed
    (venv / "leftover").write_text("from the broken venv")
    done = _run(sandbox, "-V")
    assert "recreating it" in done.stderr
    assert not (venv / "leftover").exists()
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.stdout.strip() == "True"
    assert len(_installs(sandbox)) == 1
