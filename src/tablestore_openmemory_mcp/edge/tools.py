"""The MCP tools: argument checks, scope resolution, and errors a user can read.

Each tool returns structured content (its pydantic result model) together with a readable text
summary. Failures are raised as ``ToolError``, so the client gets ``isError`` with the message, and
never a traceback. The optional ``user_id`` argument of the reference server lets any caller act as
any user; it exists only when ``MEMORY_ALLOW_USER_ID_ARG`` is on.
"""

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from tablestore_openmemory_mcp.auth.gate import tool_refusal
from tablestore_openmemory_mcp.edge.identity import IdentityResolver
from tablestore_openmemory_mcp.edge.validation import (
    clean_cursor,
    clean_limit,
    clean_memory_id,
    clean_text,
)
from tablestore_openmemory_mcp.errors import ConflictError, DependencyError, NotFoundError, UserInputError
from tablestore_openmemory_mcp.memory.as_of import clean_as_of
from tablestore_openmemory_mcp.memory.ports import State
from tablestore_openmemory_mcp.memory.query_filters import add_fields, build_query
from tablestore_openmemory_mcp.memory.results import (
    AddResult,
    DeleteAllResult,
    DeleteResult,
    HistoryResult,
    ListResult,
    SearchResult,
    StateResult,
    UpdateResult,
)
from tablestore_openmemory_mcp.memory.service import MemoryService
from tablestore_openmemory_mcp.progress import ADD_STEPS, tool_reporter
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.settings import Settings

logger = logging.getLogger(__name__)


class _ToolResult(Protocol):
    """What every result model in ``memory.results`` offers: a summary for people and its structured form."""

    def text(self) -> str: ...

    def model_dump(self, *, mode: str = ...) -> dict[str, Any]: ...


def _result(model: _ToolResult) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=model.text())],
        structured_content=model.model_dump(mode="json"),
    )


async def _stored_ids(service: MemoryService, scope: Scope, values: object) -> list[str]:
    """Memory ids, and odd ids naming a memory stored under them in ``scope`` (so they stay erasable); any
    other id fails the call by name."""
    ids, refused = await service.resolve_ids(scope, values)
    if refused:
        raise UserInputError(refused[0][1])
    return ids


def _error(message: str) -> CallToolResult:
    """A tool error as the client should show it: the message alone (raising ToolError would make the SDK prefix
    "Error executing tool X: ")."""
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _guard(
    tool: str, fn: Callable[..., Awaitable[CallToolResult]], writes: bool
) -> Callable[..., Awaitable[CallToolResult]]:
    """Map each error category to a tool error a person can act on; log bugs with their traceback."""

    @functools.wraps(fn)
    async def guarded(*args: Any, **kwargs: Any) -> CallToolResult:
        refusal = tool_refusal(kwargs.get("ctx"), writes)  # OAuth: write tools need the write scope
        if refusal is not None:
            return _error(refusal)
        try:
            return await fn(*args, **kwargs)
        except ToolError as exc:
            return _error(str(exc))
        except (UserInputError, NotFoundError) as exc:
            return _error(str(exc))
        except ConflictError as exc:
            return _error(f"{exc}; another change to the same memory won, try again")
        except DependencyError as exc:
            return _error(f"{exc}." + (" Nothing was changed." if writes else ""))
        except Exception:
            logger.exception("%s failed with an internal error", tool)
            return _error(f"internal error in {tool}; the server log has the details")

    return guarded


def _without(fn: Callable[..., Any], parameter: str) -> Callable[..., Any]:
    """Hide ``parameter`` from the published schema (used for ``user_id`` unless it is allowed)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    signature = inspect.signature(fn)
    # inspect.signature() reads ``__signature__`` from the function's attributes (PEP 362); the stubs of
    # function objects do not declare it, so it goes into their attribute dict by name
    vars(wrapper)["__signature__"] = signature.replace(
        parameters=[p for p in signature.parameters.values() if p.name != parameter]
    )
    return wrapper


def register_tools(
    server: MCPServer,
    get_service: Callable[[], Awaitable[MemoryService]],
    settings: Settings,
    identity: IdentityResolver,
) -> None:
    """Add every tool not in ``TOOL_BLACK_LIST`` to ``server``.

    (No ``from __future__ import annotations`` here: the tools' annotations use local values.)
    """
    limit_default = settings.search_limit
    max_limit = settings.max_search_limit
    max_chars = settings.max_text_chars
    max_list = settings.max_list_page_size
    UserIdArg = Annotated[str | None, Field(description=settings.tool_user_id_field_description)]
    ClientArg = Annotated[str | None, Field(description="Only memories recorded by this app")]
    CategoryArg = Annotated[str | None, Field(description="Only memories in this category")]
    SinceArg = Annotated[str | None, Field(description="ISO 8601; only memories that happened at or after this")]
    UntilArg = Annotated[str | None, Field(description="ISO 8601; only memories that happened before this")]
    MetadataArg = Annotated[
        dict[str, str | int | float | bool] | None, Field(description="Only memories with these tags (all must match)")
    ]
    MatchAnyArg = Annotated[bool, Field(description="true: a memory matching any one tag is enough")]
    AsOfArg = Annotated[str | None, Field(description="ISO 8601: answer as your memories were at that time")]

    async def add_memories(
        text: Annotated[str, Field(description="What to remember, in the user's own words and language")],
        ctx: Context,
        infer: Annotated[
            bool, Field(description="true: extract facts and reconcile with existing memories; false: store as given")
        ] = True,
        metadata: Annotated[
            dict[str, str | int | float | bool] | None, Field(description='Tags to keep with it, e.g. {"project": "x"}')
        ] = None,
        event_time: Annotated[str | None, Field(description="ISO 8601: when it happened (default: now)")] = None,
        user_id: UserIdArg = None,
    ) -> Annotated[CallToolResult, AddResult]:
        scope = identity.resolve(ctx, user_id)
        text = clean_text(text, "text", max_chars)
        extra = add_fields(metadata, event_time)
        result = await (await get_service()).add(scope, text, infer, extra=extra, progress=tool_reporter(ctx))
        if result.inferred:
            await ctx.report_progress(ADD_STEPS, ADD_STEPS, "done")  # a no-op unless the client sent a token
        return _result(result)

    async def search_memories(
        query: Annotated[str, Field(description="What to look for")],
        ctx: Context,
        limit: Annotated[int, Field(description=f"How many memories to return, 1 to {max_limit}")] = limit_default,
        client: ClientArg = None,
        category: CategoryArg = None,
        since: SinceArg = None,
        until: UntilArg = None,
        metadata: MetadataArg = None,
        match_any: MatchAnyArg = False,
        as_of: AsOfArg = None,
        user_id: UserIdArg = None,
    ) -> Annotated[CallToolResult, SearchResult]:
        scope = identity.resolve(ctx, user_id)
        query = clean_text(query, "query", max_chars)
        where = build_query(
            client=client, category=category, since=since, until=until, metadata=metadata, match_any=match_any
        )
        service, at = await get_service(), clean_as_of(as_of)
        return _result(await service.search(scope, query, clean_limit(limit, max_limit), where, at))

    async def list_memories(
        ctx: Context,
        limit: Annotated[
            int, Field(description=f"How many memories per page, 1 to {max_list}")
        ] = settings.list_page_size,
        cursor: Annotated[
            str | None, Field(description="next_cursor of the previous page; omit for the first page")
        ] = None,
        client: ClientArg = None,
        category: CategoryArg = None,
        since: SinceArg = None,
        until: UntilArg = None,
        metadata: MetadataArg = None,
        match_any: MatchAnyArg = False,
        as_of: AsOfArg = None,
        user_id: UserIdArg = None,
    ) -> Annotated[CallToolResult, ListResult]:
        scope = identity.resolve(ctx, user_id)
        where = build_query(
            client=client, category=category, since=since, until=until, metadata=metadata, match_any=match_any
        )
        service = await get_service()
        at = clean_as_of(as_of)
        page = await service.list_memories(scope, clean_limit(limit, max_list), clean_cursor(cursor), where, at)
        return _result(page)

    async def delete_all_memories(
        ctx: Context, user_id: UserIdArg = None
    ) -> Annotated[CallToolResult, DeleteAllResult]:
        return _result(await (await get_service()).delete_all(identity.resolve(ctx, user_id)))

    async def delete_memories(
        memory_ids: Annotated[list[str], Field(description="Ids of the memories to delete")],
        ctx: Context,
        user_id: UserIdArg = None,
    ) -> Annotated[CallToolResult, DeleteResult]:
        scope = identity.resolve(ctx, user_id)
        service = await get_service()
        return _result(await service.delete(scope, await _stored_ids(service, scope, memory_ids)))

    async def update_memory(
        memory_id: Annotated[str, Field(description="Id of the memory to change")],
        text: Annotated[str, Field(description="The new text of the memory")],
        ctx: Context,
        user_id: UserIdArg = None,
    ) -> Annotated[CallToolResult, UpdateResult]:
        scope = identity.resolve(ctx, user_id)
        memory_id = clean_memory_id(memory_id)
        return _result(await (await get_service()).update(scope, memory_id, clean_text(text, "text", max_chars)))

    async def memory_history(
        memory_id: Annotated[str, Field(description="Id of the memory")],
        ctx: Context,
        user_id: UserIdArg = None,
    ) -> Annotated[CallToolResult, HistoryResult]:
        scope = identity.resolve(ctx, user_id)
        return _result(await (await get_service()).history(scope, clean_memory_id(memory_id)))

    async def set_memory_state(
        memory_ids: Annotated[list[str], Field(description="Ids of the memories to change")],
        state: Annotated[
            State,
            Field(description="active resumes a paused or archived memory; deleted removes it from your memories"),
        ],
        ctx: Context,
        user_id: UserIdArg = None,
    ) -> Annotated[CallToolResult, StateResult]:
        scope = identity.resolve(ctx, user_id)
        service = await get_service()
        ids = await _stored_ids(service, scope, memory_ids)
        changed = await service.set_scope_state(scope, ids, state)
        return _result(StateResult(state=state, changed=changed, unchanged=[i for i in ids if i not in set(changed)]))

    read_only = ToolAnnotations(
        read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
    )
    tools: dict[str, tuple[Callable[..., Any], ToolAnnotations, str]] = {
        "add_memories": (
            add_memories,
            ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False),
            "Add memory",
        ),
        "search_memories": (search_memories, read_only, "Search memories"),
        "list_memories": (list_memories, read_only, "List all memories"),
        "delete_all_memories": (
            delete_all_memories,
            ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False),
            "Delete all memories",
        ),
        "delete_memories": (
            delete_memories,
            ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False),
            "Delete memories",
        ),
        "update_memory": (
            update_memory,
            ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False),
            "Update a memory",
        ),
        "memory_history": (memory_history, read_only, "Memory history"),
        "set_memory_state": (
            set_memory_state,
            ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False),
            "Change memory state",
        ),
    }
    for name in settings.enabled_tools():
        fn, annotations, title = tools[name]
        fn = _guard(name, fn, writes=not annotations.read_only_hint)
        if not settings.allow_user_id_override:
            fn = _without(fn, "user_id")
        server.add_tool(
            fn,
            name=name,
            title=title,
            description=settings.tool_description(name),
            annotations=annotations,
            structured_output=True,
        )
