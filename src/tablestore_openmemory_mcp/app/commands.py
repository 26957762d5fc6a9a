"""Maintenance subcommands: ``migrate``, ``export``, ``import`` and ``reembed``.

They use the server's settings (environment, ``.env`` or ``--env-file``) and open the same store the
server would, including the ``<name>_v2`` table of an upgraded reference deployment. Progress bars go
to stderr and only on a terminal; the one-line summary goes to stdout. Exit codes: 0 done, 1 failed,
2 bad option or setting.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from tablestore_openmemory_mcp.settings import APP_NAME, Settings, SettingsError, load_settings

SUBCOMMANDS = frozenset({"migrate", "export", "import", "reembed"})
logger = logging.getLogger(APP_NAME)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


class ProgressBar:
    """``[#####.....] n/total`` on stderr, redrawn at most 10 times a second, when stderr is a terminal;
    otherwise (a pipe, a log file, cron) a plain progress line every 10 s (:class:`~.progress.LogProgress`)."""

    def __init__(self, label: str, total: int | None = None, stream: Any = None, clock: Any = None) -> None:
        from tablestore_openmemory_mcp.progress import LogProgress

        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0
        self._lines = None if self.enabled else LogProgress(label, self._line, clock=clock)

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, done: int, total: int | None = None) -> None:
        if self._lines is not None:
            self._lines(done, total if total is not None else self.total)
            return
        self.total = total if total is not None else self.total
        now = time.monotonic()
        if now - self._last < 0.1 and done != self.total:
            return
        self._last = now
        if self.total:
            filled = int(30 * min(done, self.total) / self.total)
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total}")
        else:
            self.stream.write(f"\r{self.label} {done}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=APP_NAME, description="Maintenance commands (the server itself runs without one).")
    sub = parser.add_subparsers(dest="command", required=True)
    migrate = sub.add_parser("migrate", help="copy the reference deployment's memories into this server's table")
    migrate.add_argument("--dry-run", action="store_true", help="count what would be copied; write nothing")
    export = sub.add_parser("export", help="write one user's memories to a backup file")
    export.add_argument("--user-id", required=True, help="whose memories (every client)")
    export.add_argument("file", nargs="?", help="target: .zip (default), .jsonl or .jsonl.gz")
    export.add_argument("--no-history", action="store_true", help="leave the memories' history out")
    imp = sub.add_parser("import", help="import a backup (.zip from this server or OpenMemory, .jsonl, .jsonl.gz)")
    imp.add_argument("file", help="the backup file")
    imp.add_argument("--user-id", help="import into this user (default: each record's own user_id)")
    imp.add_argument("--mode", choices=["skip", "overwrite"], default="skip", help="what to do with existing ids")
    reembed = sub.add_parser("reembed", help="rebuild every memory's vector with the embedder now configured")
    reembed.add_argument("--dry-run", action="store_true", help="count what would be embedded; write nothing")
    reembed.add_argument(
        "--drop-old-index", action="store_true", help="Tablestore: delete the old search index after the switch"
    )
    for p in (migrate, export, imp, reembed):
        p.add_argument("--env-file", help="read settings from this file instead of ./.env")
    return parser


def _open(settings: Settings, plan: Any) -> tuple[Any, Any, int, Settings]:
    """(repository, embedder, dimension, settings) as the server builds them, without the app switches and the
    access log, which these commands do not use."""
    from tablestore_openmemory_mcp.app.bootstrap import open_repository

    opened = open_repository(settings, plan, audit=False)
    return opened.repository, opened.embedder, opened.dimension, opened.settings


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from tablestore_openmemory_mcp.migrate.upgrade import build_copy, plan_upgrade

    if not settings.uses_tablestore:
        print(
            f"{APP_NAME} migrate: no Tablestore configured (TABLESTORE_* settings): nothing to migrate", file=sys.stderr
        )
        return 1
    plan = plan_upgrade(settings)
    if plan is None:
        print(
            f"{APP_NAME} migrate: table {settings.tablestore_table_name} is not a reference deployment's table "
            "(primary key document_id, tenant_id): nothing to migrate"
        )
        return 0
    repository, embedder, dimension, _ = _open(settings, plan)
    try:
        copy = build_copy(plan, repository, embedder, dimension)
        bar = ProgressBar(f"{plan.reference_table} -> {plan.table_name}")
        if bar.enabled:
            bar.total = copy.source.count_rows()
        try:
            counts = copy.run(dry_run=args.dry_run, progress=bar)
        finally:
            bar.close()
    finally:
        repository.close()
    if counts.already_done:
        print(f"already migrated ({plan.reference_table} -> {plan.table_name}): {counts.summary()}")
    else:
        prefix = "dry run, nothing written: " if args.dry_run else f"{plan.reference_table} -> {plan.table_name}: "
        print(prefix + counts.summary())
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from tablestore_openmemory_mcp.backup.exporter import export_backup
    from tablestore_openmemory_mcp.migrate.upgrade import plan_upgrade

    target = Path(args.file or f"memories_export_{args.user_id}.zip")
    repository, embedder, _, _ = _open(settings, plan_upgrade(settings))
    bar = ProgressBar(f"export {args.user_id}")
    try:
        summary = export_backup(
            repository,
            args.user_id,
            target,
            embedding_model=str(getattr(embedder, "name", "")) or None,
            include_history=not args.no_history,
            progress=bar,
        )
    finally:
        bar.close()
        repository.close()
    print(summary.line())
    return 0


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from tablestore_openmemory_mcp.backup.importer import import_file
    from tablestore_openmemory_mcp.migrate.upgrade import plan_upgrade

    repository, embedder, dimension, settings = _open(settings, plan_upgrade(settings))
    bar = ProgressBar(f"import {Path(args.file).name}")
    try:
        summary = import_file(
            repository,
            embedder,
            args.file,
            args.user_id,
            args.mode,
            dimension=dimension,
            max_text_chars=settings.max_text_chars,
            progress=bar,
        )
    finally:
        bar.close()
        repository.close()
    print(summary.line())
    for old_id, new_id in summary.renamed_ids.items():  # ids that were not memory ids: where the memories are now
        print(f"renamed {old_id!r} -> {new_id}")
    return 0


def _reembed(args: argparse.Namespace, settings: Settings) -> int:
    from tablestore_openmemory_mcp.app.bootstrap import _embedder
    from tablestore_openmemory_mcp.migrate.upgrade import plan_upgrade

    plan = plan_upgrade(settings)
    if plan is not None:
        settings = plan.apply(settings)
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    embedder, dimension = _embedder(settings, check_store=False)
    bar = ProgressBar("reembed")
    try:
        if settings.uses_tablestore:
            from tablestore_openmemory_mcp.reembed.tablestore import reembed_tablestore

            summary = reembed_tablestore(settings, embedder, dimension, drop_old=args.drop_old_index).run(
                dry_run=args.dry_run, progress=bar
            )
        else:
            from tablestore_openmemory_mcp.reembed.embedded import reembed_embedded

            job = reembed_embedded(settings.resolved_data_dir, embedder, dimension)
            summary = job.run(dry_run=args.dry_run, progress=bar)
    finally:
        bar.close()
    print(summary.line())
    return 0


def main(argv: list[str]) -> NoReturn:
    """Run one subcommand and exit with its code."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.env_file)
    except SettingsError as exc:
        print(f"{APP_NAME}: {exc}", file=sys.stderr)
        sys.exit(2)
    from tablestore_openmemory_mcp.app import logs
    from tablestore_openmemory_mcp.errors import MemoryServerError

    logs.configure(settings.log_level if settings.log_level != "INFO" else "WARNING")
    for sdk in ("tablestore.encoder", "tablestore.decoder"):  # "native codec not available": noise here
        logging.getLogger(sdk).setLevel(logging.ERROR)
    run = {"migrate": _migrate, "export": _export, "import": _import, "reembed": _reembed}[args.command]
    try:
        code = run(args, settings)
    except (MemoryServerError, OSError) as exc:  # StartupError among them
        print(f"{APP_NAME} {args.command}: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print(f"\n{APP_NAME} {args.command}: interrupted; run it again to continue", file=sys.stderr)
        code = 130
    sys.exit(code)


__all__ = ["SUBCOMMANDS", "ProgressBar", "main"]
