"""The REST API under ``/api/v1``: the owner's view of their memories, for scripts and the web page.

Same authentication as MCP (it runs behind the same middleware): a token bound to a user acts only as
that user (naming another ``user_id`` is a 403); an unbound token, or no tokens on loopback, must name the
``user_id``. Ids of another user's memories are 404, exactly like ids that never existed. Errors are JSON
``{"error", "message"}`` with a message a person can act on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any, TypeGuard, TypeVar

import anyio.to_thread
from pydantic import BaseModel, ValidationError
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from tablestore_openmemory_mcp.backup.fileformat import BackupFormatError, BackupTooLarge
from tablestore_openmemory_mcp.edge.security import bound_user
from tablestore_openmemory_mcp.edge.validation import clean_memory_id, clean_text
from tablestore_openmemory_mcp.errors import (
    AppPaused,
    ConflictError,
    DependencyError,
    NotFoundError,
    UserInputError,
)
from tablestore_openmemory_mcp.memory.admin import SORTS, BrowseRequest, user_scope
from tablestore_openmemory_mcp.memory.ports import ALL_STATES, VISIBLE_STATES, State
from tablestore_openmemory_mcp.memory.query_filters import add_fields, clean_metadata
from tablestore_openmemory_mcp.memory.service import MemoryService
from tablestore_openmemory_mcp.rest.schemas import (
    AccessOut,
    AccessPage,
    AppList,
    AppOut,
    ChangeState,
    CreateMemory,
    DeleteMemories,
    EditMemory,
    EventOut,
    ExportRequest,
    InvalidId,
    MemoryDetailOut,
    MemoryOut,
    MemoryPage,
    PauseApp,
    StateChanged,
)
from tablestore_openmemory_mcp.scope import Scope, validate_identity_part
from tablestore_openmemory_mcp.settings import Settings

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"
M = TypeVar("M", bound=BaseModel)
GetService = Callable[[], Awaitable[MemoryService]]


class Forbidden(Exception):
    """A bound token naming another user."""


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status)


def resolve_user(request: Request, given: str | None) -> str:
    """The user this request acts for: the token's own user, or the named ``user_id``."""
    bound = bound_user(request.scope)
    if bound is not None:
        if given and given != bound:
            raise Forbidden()
        return bound
    if not given:
        raise UserInputError("user_id is required (a query parameter, or a field of the JSON body)")
    return validate_identity_part(given, "user_id")


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserInputError(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise UserInputError(f"{name} must be between {low} and {high}")
    return value


def _metadata(request: Request, name: str) -> dict[str, Any]:
    """Tags as a JSON object in the query string, e.g. ``metadata={"project":"apollo"}``."""
    raw = request.query_params.get(name)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise UserInputError(f'{name} must be a JSON object, e.g. {{"project": "apollo"}}') from None
    return clean_metadata(value, name)


def _flag(request: Request, name: str) -> bool:
    """A boolean query parameter: true/false, 1/0, yes/no (absent or empty: false)."""
    raw = request.query_params.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise UserInputError(f"{name} must be true or false")


#: The query parameters of GET /memories: the MCP read tools' filters (same names, same meaning) and the
#: owner's view's own (state, q, sort, pages). Anything else is a 400 naming it, not silently ignored.
LIST_PARAMETERS = (
    "user_id",
    "client",
    "category",
    "since",
    "until",
    "metadata",
    "match_any",
    "as_of",
    "q",
    "min_score",
    "state",
    "sort",
    "page",
    "size",
)


def _known_parameters(request: Request, known: tuple[str, ...]) -> None:
    unknown = sorted(set(request.query_params) - set(known))
    if unknown:
        raise UserInputError(f"unknown query parameter {unknown[0][:40]!r}; this endpoint takes {', '.join(known)}")


def _score(request: Request, name: str) -> float | None:
    """A relevance from 0 to 1, or None when not given."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise UserInputError(f"{name} must be a number from 0 to 1") from None
    if not 0.0 <= value <= 1.0:
        raise UserInputError(f"{name} must be a number from 0 to 1")
    return value


async def _body(request: Request, model: type[M]) -> M:
    try:
        raw = await request.body()
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise UserInputError("the request body must be JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise UserInputError(f"{where}: {first.get('msg', 'invalid value')}") from None


def _is_state(value: str) -> TypeGuard[State]:
    return value in ALL_STATES


def _states(raw: str | None) -> tuple[State, ...]:
    if not raw:
        return VISIBLE_STATES
    if raw == "all":
        return ALL_STATES
    wanted = tuple(part.strip() for part in raw.split(",") if part.strip())
    bad = [s for s in wanted if not _is_state(s)]
    if bad:
        raise UserInputError(f"state must be active, paused, archived, deleted or all (got {', '.join(bad)})")
    return tuple(s for s in wanted if _is_state(s))


def _suffix(filename: str) -> str:
    """Keep the upload's kind (.zip, .jsonl, .jsonl.gz) so the reader picks the right format."""
    name = filename.lower()
    for suffix in (".jsonl.gz", ".jsonl", ".zip"):
        if name.endswith(suffix):
            return suffix
    return ".zip"


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


class RestApi:
    """The ``/api/v1`` routes on top of the memory service."""

    def __init__(self, get_service: GetService, settings: Settings) -> None:
        self.get_service = get_service
        self.settings = settings

    def routes(self) -> list[Route]:
        guard = self._guard
        return [
            Route(f"{PREFIX}/memories", guard(self.list_memories), methods=["GET"]),
            Route(f"{PREFIX}/memories", guard(self.create_memory), methods=["POST"]),
            Route(f"{PREFIX}/memories", guard(self.delete_memories), methods=["DELETE"]),
            Route(f"{PREFIX}/memories/state", guard(self.change_state), methods=["POST"]),
            Route(f"{PREFIX}/memories/{{memory_id}}", guard(self.get_memory), methods=["GET"]),
            Route(f"{PREFIX}/memories/{{memory_id}}", guard(self.edit_memory), methods=["PUT"]),
            Route(f"{PREFIX}/memories/{{memory_id}}/access-log", guard(self.access_log), methods=["GET"]),
            Route(f"{PREFIX}/apps", guard(self.list_apps), methods=["GET"]),
            Route(f"{PREFIX}/apps/{{client}}", guard(self.pause_app), methods=["PUT"]),
            Route(f"{PREFIX}/stats", guard(self.stats), methods=["GET"]),
            Route(f"{PREFIX}/backup/export", guard(self.export_backup), methods=["POST"]),
            Route(f"{PREFIX}/backup/import", guard(self.import_backup), methods=["POST"]),
        ]

    def _guard(self, endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            try:
                return await endpoint(request)
            except Forbidden:
                return _error(403, "forbidden", "This token may only access its own user's memories")
            except NotFoundError as exc:
                return _error(404, "not_found", str(exc))
            except AppPaused as exc:
                return _error(409, "app_paused", str(exc))
            except BackupTooLarge as exc:
                return _error(413, "too_large", str(exc))
            except UserInputError as exc:
                return _error(400, "bad_request", str(exc))
            except ConflictError as exc:
                return _error(409, "conflict", f"{exc}; another change won, try again")
            except DependencyError as exc:
                return _error(503, "unavailable", str(exc))
            except Exception:
                logger.exception("REST %s %s failed", request.method, request.url.path)
                return _error(500, "internal_error", "internal error; the server log has the details")

        guarded.__name__ = endpoint.__name__
        guarded.__doc__ = endpoint.__doc__
        return guarded

    # --- memories ----------------------------------------------------------------------------------
    async def list_memories(self, request: Request) -> Response:
        """List, filter, search (q: hybrid search) and page the user's memories across clients; ``as_of``: as
        they were then. The filters are the MCP read tools' (same names, same meaning)."""
        _known_parameters(request, LIST_PARAMETERS)
        params = request.query_params
        user = resolve_user(request, params.get("user_id"))
        client = params.get("client") or None
        if client is not None:
            validate_identity_part(client, "client")
        query = params.get("q") or None
        if query is not None:
            query = clean_text(query, "q", self.settings.max_text_chars)
        sort = params.get("sort") or ("score" if query else "-created_at")
        if sort not in SORTS:
            raise UserInputError(f"sort must be one of {', '.join(SORTS)}")
        browse = BrowseRequest(
            user_id=user,
            client=client,
            states=_states(params.get("state")),
            query=query,
            category=params.get("category") or None,
            since=params.get("since") or None,
            until=params.get("until") or None,
            sort=sort,
            page=_int(request, "page", 1, 1, 1_000_000),
            size=_int(request, "size", 20, 1, 200),
            min_score=_score(request, "min_score"),
            metadata=_metadata(request, "metadata") or None,
            match_any=_flag(request, "match_any"),
            as_of=params.get("as_of") or None,
        )
        page = await (await self.get_service()).browse(browse)
        return _json(
            MemoryPage(items=[MemoryOut.of(m) for m in page.items], total=page.total, page=page.page, size=page.size)
        )

    async def get_memory(self, request: Request) -> Response:
        """One memory with its history (old -> new, source, client, the LLM's reason) and recent access log."""
        user = resolve_user(request, request.query_params.get("user_id"))
        memory_id = clean_memory_id(request.path_params["memory_id"])
        detail = await (await self.get_service()).detail(user, memory_id)
        out = MemoryDetailOut(
            **MemoryOut.of(detail.memory).model_dump(),
            history=[EventOut.of(r) for r in detail.history],
            access_log=[AccessOut.of(r) for r in detail.access_log],
        )
        return _json(out)

    async def access_log(self, request: Request) -> Response:
        """A memory's access log, newest first, paged."""
        user = resolve_user(request, request.query_params.get("user_id"))
        memory_id = clean_memory_id(request.path_params["memory_id"])
        page = _int(request, "page", 1, 1, 1_000_000)
        size = _int(request, "size", 50, 1, 500)
        entries, total = await (await self.get_service()).access_log(user, memory_id, page, size)
        return _json(AccessPage(items=[AccessOut.of(r) for r in entries], total=total, page=page, size=size))

    async def create_memory(self, request: Request) -> Response:
        """Add a memory for one of the user's apps (infer=true runs the classic LLM flow)."""
        body = await _body(request, CreateMemory)
        user = resolve_user(request, body.user_id)
        scope = Scope(validate_identity_part(body.client, "client"), user)
        text = clean_text(body.text, "text", self.settings.max_text_chars)
        extra = add_fields(body.metadata, body.event_time)
        result = await (await self.get_service()).add(scope, text, body.infer, source="rest", extra=extra)
        return _json(result, status=201)

    async def edit_memory(self, request: Request) -> Response:
        """Replace a memory's text (re-embedded; the UPDATE is recorded with source rest)."""
        body = await _body(request, EditMemory)
        user = resolve_user(request, body.user_id)
        memory_id = clean_memory_id(request.path_params["memory_id"])
        text = clean_text(body.text, "text", self.settings.max_text_chars)
        return _json(await (await self.get_service()).edit(user, memory_id, text))

    async def change_state(self, request: Request) -> Response:
        """Pause, archive, resume (active) or delete memories; each transition is recorded."""
        body = await _body(request, ChangeState)
        user = resolve_user(request, body.user_id)
        service = await self.get_service()
        ids, refused = await service.resolve_ids(user_scope(user), body.memory_ids)
        changed = await service.set_state(user, ids, body.state) if ids else []
        return _json(
            StateChanged(
                changed=changed,
                unchanged=[i for i in ids if i not in set(changed)],
                invalid=[InvalidId(id=i, error=why) for i, why in refused],
            )
        )

    async def delete_memories(self, request: Request) -> Response:
        """Soft delete (history stays readable); ?purge=true erases memories, history and access log."""
        body = await _body(request, DeleteMemories)
        user = resolve_user(request, body.user_id)
        service = await self.get_service()
        ids, refused = await service.resolve_ids(user_scope(user), body.memory_ids)
        purge = request.query_params.get("purge", "").lower() in ("1", "true", "yes")
        result = await service.remove(user, ids, purge)
        result["invalid"] = [{"id": i, "error": why} for i, why in refused]
        return JSONResponse(result)

    # --- apps and statistics -----------------------------------------------------------------------
    async def list_apps(self, request: Request) -> Response:
        """The user's apps (clients) with memory counts, last access and whether they are paused."""
        user = resolve_user(request, request.query_params.get("user_id"))
        apps = await (await self.get_service()).apps(user)
        return _json(AppList(items=[AppOut.of(app) for app in apps]))

    async def pause_app(self, request: Request) -> Response:
        """Pause (its MCP writes fail, its memories are hidden from reads) or resume an app, for this user."""
        user = resolve_user(request, request.query_params.get("user_id"))
        client = validate_identity_part(request.path_params["client"], "client")
        body = await _body(request, PauseApp)
        app = await (await self.get_service()).set_app_paused(user, client, body.paused)
        return _json(AppOut.of(app))

    # --- backup -------------------------------------------------------------------------------------
    async def export_backup(self, request: Request) -> Response:
        """The user's memories as an OpenMemory-compatible backup zip (with vectors and history)."""
        body = await _body(request, ExportRequest)
        user = resolve_user(request, body.user_id)
        service = await self.get_service()
        path = await anyio.to_thread.run_sync(lambda: service.export_backup(user))
        return FileResponse(
            path,
            media_type="application/zip",
            filename=f"memories_{user}.zip",
            background=BackgroundTask(os.unlink, path),
        )

    async def import_backup(self, request: Request) -> Response:
        """Import a backup (multipart: file, user_id, mode=skip|overwrite); the upload is streamed to disk, capped."""
        limit = self.settings.max_import_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + 1024 * 1024:
            raise BackupTooLarge(f"the upload is larger than {limit} bytes (MEMORY_MAX_IMPORT_BYTES)")
        async with request.form(max_files=1, max_fields=10, max_part_size=64 * 1024) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise UserInputError("send the backup as the multipart field 'file'")
            user = resolve_user(request, str(form.get("user_id") or "") or None)
            mode = str(form.get("mode") or "skip")
            if mode not in ("skip", "overwrite"):
                raise UserInputError("mode must be skip or overwrite")
            suffix = _suffix(upload.filename or "")
            fd, path = tempfile.mkstemp(prefix="memories_import_", suffix=suffix)
            try:
                size = 0
                with os.fdopen(fd, "wb") as out:
                    while chunk := await upload.read(1024 * 1024):
                        size += len(chunk)
                        if size > limit:
                            raise BackupTooLarge(f"the upload is larger than {limit} bytes (MEMORY_MAX_IMPORT_BYTES)")
                        out.write(chunk)
                service = await self.get_service()
                try:
                    summary = await anyio.to_thread.run_sync(lambda: service.import_backup(path, user, mode))
                except BackupFormatError as exc:  # name the upload, not the server's temporary file
                    exc.args = (str(exc).replace(path, repr(upload.filename or "the upload")),)
                    raise
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        return JSONResponse(summary)

    async def stats(self, request: Request) -> Response:
        """Totals by state and app, and memories added per day per app."""
        user = resolve_user(request, request.query_params.get("user_id"))
        return JSONResponse(await (await self.get_service()).stats(user))
