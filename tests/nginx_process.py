"""Debian's nginx as a real load balancer in front of test server replicas, with deploy/nginx.conf as its config.

The deployment kit's config is used as written; only what differs on a test machine is substituted: each
``server app:8765 ...;`` upstream line becomes one line per replica on 127.0.0.1, and ``listen 8080`` becomes a free
loopback port. nginx runs in the foreground with its pid, logs and temp files under ``tmp_path``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.server_process import STARTUP_TIMEOUT, free_port

ROOT = Path(__file__).resolve().parent.parent
SITE_CONF = ROOT / "deploy" / "nginx.conf"
_UPSTREAM_SERVER = re.compile(r"^(\s*)server app:8765(.*);\s*$", re.MULTILINE)
_LISTEN = re.compile(r"^(\s*)listen 8080;", re.MULTILINE)


def find_nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def ensure_nginx() -> tuple[str | None, str]:
    """nginx's path, installing Debian's package when missing and allowed (root, apt-get); else None and why."""
    found = find_nginx()
    if found:
        return found, ""
    if not shutil.which("apt-get"):
        return None, "nginx is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return None, "nginx is not installed; install it as root: apt-get install -y nginx"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q", "nginx"]
    log = ""
    for step in (install, ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-q"], install):
        try:
            done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"could not install nginx: {exc}"
        log = (done.stdout + done.stderr)[-500:]
        if step is install and done.returncode == 0 and find_nginx():
            return find_nginx(), ""
    return None, f"could not install nginx with apt-get: {log}"


def render_site(upstream_ports: list[int], listen_port: int, site: str | None = None) -> str:
    """deploy/nginx.conf with the replicas on 127.0.0.1 and a loopback listen port."""
    text = site if site is not None else SITE_CONF.read_text()
    if not _UPSTREAM_SERVER.search(text) or not _LISTEN.search(text):
        raise ValueError("deploy/nginx.conf no longer has 'server app:8765 ...;' upstream lines and 'listen 8080;'")

    def servers(match: re.Match[str]) -> str:
        indent, params = match.group(1), match.group(2)
        return "\n".join(f"{indent}server 127.0.0.1:{port}{params};" for port in upstream_ports)

    text = _UPSTREAM_SERVER.sub(servers, text)
    return _LISTEN.sub(lambda m: f"{m.group(1)}listen 127.0.0.1:{listen_port};", text)


def main_conf(prefix: Path, site_path: Path) -> str:
    """The top-level config wrapping the site file, everything writable under ``prefix``."""
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must write the temp dirs in tmp_path
    temps = "\n".join(
        f"    {kind}_temp_path {prefix / (kind + '_temp')};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} warn;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n    access_log {prefix / 'access.log'};\n{temps}\n    include {site_path};\n}}\n"
    )


class Nginx:
    """nginx in the foreground on a free loopback port, routing to ``upstream_ports``; stop() in a finally."""

    def __init__(self, binary: str, tmp_path: Path, upstream_ports: list[int], name: str = "nginx") -> None:
        self.binary = binary
        self.prefix = tmp_path / name
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        site = self.prefix / "site.conf"
        site.write_text(render_site(upstream_ports, self.port))
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(main_conf(self.prefix, site))
        self.process: subprocess.Popen[bytes] | None = None

    def command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.conf), "-e", str(self.prefix / "error.log"), *extra]

    def check(self) -> None:
        """``nginx -t`` on the rendered config; raises with nginx's own message."""
        done = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"nginx -t failed: {done.stderr.strip()}")

    def start(self, timeout: float = STARTUP_TIMEOUT) -> Nginx:
        """Start and wait until nginx answers its own /nginx-health; on failure stop it before raising."""
        self.check()
        self.process = subprocess.Popen(
            self.command("-g", "daemon off;"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a SIGKILL fallback reaches the workers too
        )
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"nginx exited with {self.process.returncode}: {self.log()}")
                try:
                    if httpx.get(f"{self.url}/nginx-health", timeout=5.0).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)  # polling interval of a condition wait
            raise TimeoutError(f"nginx not answering after {timeout:.0f} s: {self.log()}")
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown (SIGTERM: open SSE streams are cut, not waited for), then SIGKILL; idempotent."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the group nginx leads (start_new_session), nothing else
                process.wait(5)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
