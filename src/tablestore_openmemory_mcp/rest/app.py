"""Every non-MCP route the HTTP app serves: the REST API, its OpenAPI document and docs page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tablestore_openmemory_mcp.rest.openapi import docs_page, document
from tablestore_openmemory_mcp.rest.routes import RestApi
from tablestore_openmemory_mcp.settings import Settings


def api_routes(get_service: Callable[[], Awaitable[Any]], settings: Settings) -> list[BaseRoute]:
    """The ``/api`` routes; they sit behind the same Host/Origin and token middleware as MCP."""
    spec = document()

    async def openapi(request: Request) -> Response:
        return JSONResponse(spec)

    async def docs(request: Request) -> Response:
        return HTMLResponse(docs_page())

    routes: list[BaseRoute] = list(RestApi(get_service, settings).routes())
    routes += [
        Route("/api/v1/openapi.json", openapi, methods=["GET"]),
        Route("/api/docs", docs, methods=["GET"]),
    ]
    return routes
