"""Command line: parse options, load settings, build the server, serve.

Exit codes: 0 after a clean shutdown, 2 for a bad setting or option (one line on stderr, no
traceback), 1 when the server cannot start (store unreachable, data directory unwritable, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, NoReturn

from tablestore_openmemory_mcp import __version__
from tablestore_openmemory_mcp.settings import APP_NAME, Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from tablestore_openmemory_mcp.app.bootstrap import Components, ServiceHandle
    from tablestore_openmemory_mcp.app.stdio_startup import StartupGate

logger = logging.getLogger(APP_NAME)


SUBCOMMANDS = """\
maintenance commands (each has its own --help):
  tablestore-openmemory-mcp export --user-id U [FILE]   write one user's memories to a backup (.zip, .jsonl[.gz])
  tablestore-openmemory-mcp import FILE                 import a backup (this server's, OpenMemory's, .jsonl)
  tablestore-openmemory-mcp migrate [--dry-run]         copy the reference deployment's memories into this table
  tablestore-openmemory-mcp reembed [--dry-run]         rebuild every vector with the embedder now configured"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from tablestore_openmemory_mcp.app.helptext import epilog

    parser = _Parser(
        prog=APP_NAME,
        description="Long-term memory server for MCP clients.\n\n" + SUBCOMMANDS,
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--transport",
        choices=["stdio", "sse", "streamable-http", "http"],
        help="stdio for one local client; sse or streamable-http (alias http) serve every HTTP route "
        "(default: sse, or MCP_TRANSPORT)",
    )
    parser.add_argument("--host", help="address to bind in HTTP modes (default 127.0.0.1, or SERVER_HOST)")
    parser.add_argument("--port", type=int, help="port in HTTP modes (default 8765, or SERVER_PORT)")
    parser.add_argument("--env-file", help="read settings from this file instead of ./.env")
    parser.add_argument("-V", "--version", action="version", version=f"{APP_NAME} {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in {"migrate", "export", "import", "reembed"}:  # maintenance subcommands (commands.py)
        from tablestore_openmemory_mcp.app import commands

        commands.main(argv)
    args = parse_args(argv)
    transport = "streamable-http" if args.transport == "http" else args.transport
    try:
        settings = load_settings(args.env_file, transport=transport, host=args.host, port=args.port)
    except SettingsError as exc:
        print(f"{APP_NAME}: {exc}", file=sys.stderr)
        sys.exit(2)

    from tablestore_openmemory_mcp import transports
    from tablestore_openmemory_mcp.app import logs

    if (
        settings.transport != "stdio"
        and not transports.is_loopback(settings.host)
        and not settings.auth_tokens
        and not settings.oauth_issuer
        and not settings.allow_unauthenticated
    ):
        print(
            f"{APP_NAME}: refusing to listen on {settings.host} without authentication: set MCP_AUTH_TOKENS or "
            "MCP_OAUTH_ISSUER, or MCP_ALLOW_UNAUTHENTICATED=true if a proxy in front of the server authenticates "
            "callers",
            file=sys.stderr,
        )
        sys.exit(2)

    sock = None
    if settings.transport != "stdio":  # bind first: "port in use" is one line, before anything slow
        try:
            sock = transports.bind_socket(settings.host, settings.port)
        except transports.PortInUse as exc:
            print(f"{APP_NAME}: {exc}", file=sys.stderr)
            sys.exit(1)
    logs.configure(settings.log_level)
    from tablestore_openmemory_mcp.app import probe
    from tablestore_openmemory_mcp.app.bootstrap import ServiceHandle, build_server

    handle = ServiceHandle(settings)
    handle.start()
    probe.start(settings)  # one warning line per unreachable/rejecting LLM or embedder endpoint
    if settings.transport == "stdio":
        from tablestore_openmemory_mcp.app.stdio_startup import StartupGate

        # Answer the handshake at once; a startup failure answers the waiting calls, then exits with code 1.
        gate = StartupGate(handle)
        server = build_server(settings, gate)
        watcher = threading.Thread(target=_exit_on_startup_failure, args=(gate, settings), daemon=True)
        watcher.start()
        gate.serving.set()
        transports.run(transports.serve_stdio, server)  # returns when stdin closes
        if handle.failed(timeout=60.0):  # stdin closed while startup failed: the watcher says why and exits 1
            watcher.join(timeout=30.0)
            os._exit(1)
        handle.close()
        return
    server = build_server(settings, handle)
    if not transports.is_loopback(settings.host):
        logger.warning(
            "!!! Listening on %s: every machine that can reach this address can use these memories. "
            "Bind to 127.0.0.1 unless you mean it.",
            settings.host,
        )
    from tablestore_openmemory_mcp.edge.security import describe_binding
    from tablestore_openmemory_mcp.transports.http_app import HttpApp
    from tablestore_openmemory_mcp.transports.serve import serve_http

    binding = describe_binding(settings)
    if binding:
        logger.warning(binding)

    def startup() -> dict[str, str]:  # in a worker thread while the port already answers (/health: starting)
        components = _wait_or_exit(handle)
        _log_startup(settings, components)
        return {"store": components.store_name.split("(")[0]}

    app = HttpApp(server, settings, handle)
    _survive_reraised_signals()
    with contextlib.suppress(KeyboardInterrupt):
        transports.run(serve_http, app, settings, sock, startup)  # SIGTERM/SIGINT: drain, then return
    handle.close()
    logger.info("stopped")


def _survive_reraised_signals() -> None:
    """uvicorn drains on SIGTERM/SIGINT and then re-raises the signal with the previous handler in place.

    With this no-op handler the re-raised signal returns here instead of killing the process, so the
    stores are closed and the exit code is 0.
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)


def _wait_or_exit(handle: ServiceHandle, gate: StartupGate | None = None) -> Components:
    from tablestore_openmemory_mcp.app.stdio_startup import startup_message

    try:
        return handle.wait()
    except Exception as exc:  # ours is already one line; an SDK error too, with details at debug level
        logger.debug("startup failed", exc_info=True)
        print(f"{APP_NAME}: cannot start: {startup_message(exc)}", file=sys.stderr, flush=True)
    if gate is not None:
        gate.wait_until_answered()  # stdio: the calls waiting for the service get the reason, not a dropped pipe
    os._exit(1)  # also from the stdio watcher thread, where sys.exit would only end the thread


def _exit_on_startup_failure(gate: StartupGate, settings: Settings) -> None:
    _log_startup(settings, _wait_or_exit(gate.handle, gate))


def _log_startup(settings: Settings, components: Components) -> None:
    """One line saying what runs where, including the URLs the LLM and the embedder are called at."""
    from tablestore_openmemory_mcp.app.probe import base_url

    address = "stdin/stdout" if settings.transport == "stdio" else f"http://{settings.host}:{settings.port}"
    browser = "" if settings.transport == "stdio" else f" browser={browser_url(settings)}"
    llm = f"openai:{settings.llm_model}@{base_url(settings, 'LLM')}" if settings.uses_llm else components.llm_name
    embedder = components.embedder_name
    if settings.uses_remote_embedder:
        embedder = f"{embedder}@{base_url(settings, 'EMBEDDER')}"
    logger.info(
        "%s %s: transport=%s address=%s store=%s llm=%s embedder=%s data_dir=%s%s",
        APP_NAME,
        __version__,
        settings.transport,
        address,
        components.store_name,
        llm,
        embedder,
        settings.resolved_data_dir,
        browser,
    )


def browser_url(settings: Settings) -> str:
    """The memory browser's URL: MCP_PUBLIC_URL, else the bound address (a wildcard bind shown as localhost)."""
    if settings.public_url:
        return settings.public_url.rstrip("/") + "/"
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else "[::1]" if settings.host == "::" else settings.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/"


if __name__ == "__main__":
    main()
