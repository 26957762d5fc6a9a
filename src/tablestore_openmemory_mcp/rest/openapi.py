"""The OpenAPI 3.1 document of the REST API, built from its pydantic models (served at /api/v1/openapi.json),
and a small offline page that renders it (/api/docs: no CDN, no JavaScript framework)."""

from __future__ import annotations

import html
from typing import Any

from pydantic import BaseModel

from tablestore_openmemory_mcp import __version__
from tablestore_openmemory_mcp.memory.results import AddResult, UpdateResult
from tablestore_openmemory_mcp.rest import schemas as S

_USER = {
    "name": "user_id",
    "in": "query",
    "schema": {"type": "string"},
    "description": "Whose memories (a bound token implies it)",
}
_ID = {"name": "memory_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}


def _q(name: str, kind: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": kind}, "description": description}


Model = type[BaseModel] | None
#: method, path, summary, parameters, request body model, (status, response model)
OPERATIONS: list[tuple[str, str, str, list[dict[str, Any]], Model, tuple[int, Model]]] = [
    (
        "get",
        "/api/v1/memories",
        "List, filter, search and page the user's memories (the MCP read tools' filters; unknown parameters: 400)",
        [
            _USER,
            _q("client", "string", "Only this app"),
            _q("state", "string", "active, paused, archived, deleted, a comma list, or all (default: all but deleted)"),
            _q("q", "string", "Hybrid (vector + keyword) search"),
            _q("min_score", "number", "With q: drop hits scoring below this (0-1; default: the server's cutoff)"),
            _q("category", "string", "Only this category"),
            _q("metadata", "string", 'Only memories with these tags, a JSON object, e.g. {"project":"apollo"}'),
            _q("match_any", "boolean", "true: a memory with any one of the tags is enough"),
            _q(
                "since",
                "string",
                "ISO 8601: only memories that happened at or after this (event time, else creation time)",
            ),
            _q("until", "string", "ISO 8601: only memories that happened before this (a date: before that day)"),
            _q("as_of", "string", "ISO 8601, not in the future: the memories as they were then, from their history"),
            _q("sort", "string", "created_at, -created_at, updated_at, -updated_at, memory, -memory, score"),
            _q("page", "integer", "From 1"),
            _q("size", "integer", "1-200, default 20"),
        ],
        None,
        (200, S.MemoryPage),
    ),
    ("post", "/api/v1/memories", "Add a memory for one of the user's apps", [], S.CreateMemory, (201, AddResult)),
    (
        "delete",
        "/api/v1/memories",
        "Soft-delete memories (?purge=true erases them with history and access log)",
        [_q("purge", "boolean", "Erase instead of soft delete")],
        S.DeleteMemories,
        (200, None),
    ),
    (
        "post",
        "/api/v1/memories/state",
        "Change memories' state (pause, archive, resume, delete)",
        [],
        S.ChangeState,
        (200, S.StateChanged),
    ),
    (
        "get",
        "/api/v1/memories/{memory_id}",
        "One memory with its history and access log",
        [_ID, _USER],
        None,
        (200, S.MemoryDetailOut),
    ),
    (
        "put",
        "/api/v1/memories/{memory_id}",
        "Replace a memory's text (re-embedded)",
        [_ID],
        S.EditMemory,
        (200, UpdateResult),
    ),
    (
        "get",
        "/api/v1/memories/{memory_id}/access-log",
        "A memory's access log, newest first",
        [_ID, _USER, _q("page", "integer", "From 1"), _q("size", "integer", "1-500, default 50")],
        None,
        (200, S.AccessPage),
    ),
    (
        "get",
        "/api/v1/apps",
        "The user's apps with counts, last access and pause state",
        [_USER],
        None,
        (200, S.AppList),
    ),
    (
        "put",
        "/api/v1/apps/{client}",
        "Pause or resume an app for this user",
        [{"name": "client", "in": "path", "required": True, "schema": {"type": "string"}}, _USER],
        S.PauseApp,
        (200, S.AppOut),
    ),
    ("get", "/api/v1/stats", "Totals by state and app, memories added per day", [_USER], None, (200, None)),
    (
        "post",
        "/api/v1/backup/export",
        "The user's backup zip (OpenMemory format + vectors and history)",
        [],
        None,
        (200, None),
    ),
    (
        "post",
        "/api/v1/backup/import",
        "Import a backup: multipart file, user_id, mode=skip|overwrite",
        [],
        None,
        (200, None),
    ),
]


def _ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def document() -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    error = {"content": {"application/json": {"schema": _ref(S.ErrorOut, components)}}}
    for method, path, summary, parameters, body, (status, response) in OPERATIONS:
        operation: dict[str, Any] = {"summary": summary, "parameters": parameters}
        if body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(body, components)}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if response is not None:
            ok["content"] = {"application/json": {"schema": _ref(response, components)}}
        operation["responses"] = {
            str(status): ok,
            "400": {"description": "Bad input; the message says what to fix", **error},
            "401": {"description": "A bearer token is required", **error},
            "403": {"description": "A bound token named another user", **error},
            "404": {"description": "Not among this user's memories", **error},
            "503": {"description": "A dependency (store, embedder, LLM) is down", **error},
        }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "tablestore-openmemory-mcp REST API", "version": __version__},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }


def docs_page() -> str:
    rows = "".join(
        f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
        f"<td>{html.escape(summary)}</td></tr>"
        for method, path, summary, *_ in OPERATIONS
    )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>REST API</title>"
        "<style>body{font:15px system-ui;margin:2em;max-width:60em}"
        "td{padding:.3em .8em;border-bottom:1px solid #ddd}</style>"
        "<h1>tablestore-openmemory-mcp REST API</h1><p>Machine-readable: "
        "<a href='/api/v1/openapi.json'>/api/v1/openapi.json</a> (OpenAPI 3.1). Authenticate with "
        "<code>Authorization: Bearer &lt;token&gt;</code> when MCP_AUTH_TOKENS is set.</p>"
        f"<table>{rows}</table></html>"
    )
