"""Settings in process: empty means unset, any-case log levels, partial Tablestore configurations, --help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tablestore_openmemory_mcp.app import helptext
from tablestore_openmemory_mcp.settings import Settings, SettingsError, env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
ENV_PREFIXES = ("OPENAI_", "TABLESTORE_", "ALIBABA_CLOUD_", "LLM_", "EMBEDDER_", "MEM0_", "MCP_", "TOOL_")
ENV_PREFIXES += ("SERVER_", "MEMORY_", "LOG_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No product variable from the developer's shell, and no ./.env from the working directory."""
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def uncommented_env_example(tmp_path: Path) -> Path:
    """.env.example with every ``# VAR=...`` line uncommented, as a user would do."""
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    lines = [re.sub(r"^# ([A-Z][A-Z0-9_]*=)", r"\1", line) for line in text.splitlines()]
    path = tmp_path / "uncommented.env"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_every_variable_is_in_env_example_and_empty_values_mean_unset(tmp_path, monkeypatch):
    path = uncommented_env_example(tmp_path)
    assigned = {line.split("=", 1)[0] for line in path.read_text().splitlines() if re.match(r"^[A-Z]", line)}
    assert {env_name(Settings, field) for field in Settings.model_fields} <= assigned
    settings = load_settings(path)
    defaults = Settings.model_construct()  # no environment, no validation: the declared defaults
    assert settings.tablestore_endpoint is None and not settings.uses_tablestore
    assert settings.vector_dimension is None and settings.search_min_score is None
    assert settings.data_dir is None and settings.resolved_data_dir != Path.cwd()
    assert settings.tool_black_list == ["delete_all_memories", "set_memory_state"]
    assert not settings.uses_llm and not settings.uses_remote_embedder
    assert (settings.port, settings.host, settings.log_level) == (defaults.port, defaults.host, defaults.log_level)


@pytest.mark.parametrize("value", ["", "   "])
def test_blank_data_dir_means_the_default_never_the_current_directory(monkeypatch, value):
    monkeypatch.setenv("MEMORY_DATA_DIR", value)
    settings = load_settings()
    assert settings.data_dir is None
    assert settings.resolved_data_dir != Path.cwd().resolve()


@pytest.mark.parametrize(
    "name", ["TABLESTORE_SEARCH_MEMORY_MIN_SCORE", "SERVER_PORT", "TABLESTORE_VECTOR_DIMENSION", "LLM_TIMEOUT"]
)
def test_an_empty_number_is_unset_not_an_error(monkeypatch, name):
    monkeypatch.setenv(name, "")
    load_settings()


@pytest.mark.parametrize(
    ("given", "level"), [("debug", "DEBUG"), ("Info", "INFO"), ("warn", "WARNING"), (" ERROR ", "ERROR")]
)
def test_log_level_in_any_case(monkeypatch, given, level):
    monkeypatch.setenv("LOG_LEVEL", given)
    assert load_settings().log_level == level


def test_bad_log_level_names_the_variable(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "loud")
    with pytest.raises(SettingsError, match="LOG_LEVEL"):
        load_settings()


TABLESTORE = {
    "TABLESTORE_ENDPOINT": "https://inst.cn-hangzhou.ots.aliyuncs.com",
    "TABLESTORE_INSTANCE_NAME": "inst",
    "TABLESTORE_ACCESS_KEY_ID": "ak",
    "TABLESTORE_ACCESS_KEY_SECRET": "sk",
}


@pytest.mark.parametrize("missing", list(TABLESTORE))
def test_a_partial_tablestore_configuration_names_the_missing_variable(monkeypatch, missing):
    for name, value in TABLESTORE.items():
        if name != missing:
            monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"Missing setting {missing}:") and "\n" not in message


def test_tablestore_complete_keys_alone_or_embedded_on_purpose(monkeypatch):
    for name, value in TABLESTORE.items():
        monkeypatch.setenv(name, value)
    assert load_settings().uses_tablestore
    monkeypatch.delenv("TABLESTORE_ENDPOINT")
    monkeypatch.setenv("MEMORY_STORE", "embedded")
    assert not load_settings().uses_tablestore  # an explicit choice: no error
    monkeypatch.delenv("TABLESTORE_INSTANCE_NAME")
    monkeypatch.delenv("MEMORY_STORE")
    assert not load_settings().uses_tablestore  # keys alone (e.g. for other tools) select nothing


def test_aliases_count_as_keys(monkeypatch):
    for name, value in TABLESTORE.items():
        monkeypatch.setenv(name.replace("TABLESTORE_ACCESS", "ALIBABA_CLOUD_ACCESS"), value)
    assert load_settings().uses_tablestore


def test_help_lists_every_variable_once_grouped_with_client_urls():
    text = helptext.epilog()
    for field in Settings.model_fields:
        name = env_name(Settings, field)
        assert len(re.findall(rf"^  {name}\b", text, flags=re.M)) == 1, name
    assert "/mcp/<client>/sse/<user>" in text and "/mcp/<client>/http/<user>" in text
    assert " other:" not in text, "every setting belongs to a group in helptext.GROUPS"


def test_the_tablestore_connection_is_read_once_and_fits_every_client_and_store(monkeypatch):
    """One spelling of the connection settings: what ``Settings.tablestore`` reads is what the SDK client, the
    store and the mem0 provider's config are built with (a renamed constructor argument fails here)."""
    import inspect
    from dataclasses import fields
    from typing import get_type_hints

    from tablestore_openmemory_mcp.mem0.configs import TablestoreConfig
    from tablestore_openmemory_mcp.settings import ClientArgs, TablestoreConnection
    from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore
    from tablestore_openmemory_mcp.stores.tablestore.client import make_client

    assert set(get_type_hints(ClientArgs)) == {f.name for f in fields(TablestoreConnection)}
    monkeypatch.setenv("TABLESTORE_ENDPOINT", "https://i.cn-hangzhou.ots.aliyuncs.com")
    monkeypatch.setenv("TABLESTORE_INSTANCE_NAME", "i")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "id")  # the aliases count too
    monkeypatch.setenv("TABLESTORE_ACCESS_KEY_SECRET", "the-secret")
    monkeypatch.setenv("ALIBABA_CLOUD_SECURITY_TOKEN", "the-sts-token")
    monkeypatch.setenv("TABLESTORE_REGION", "cn-hangzhou")
    monkeypatch.setenv("TABLESTORE_TIMEOUT", "7.5")
    connection = load_settings().tablestore
    assert connection == TablestoreConnection(
        "https://i.cn-hangzhou.ots.aliyuncs.com", "i", "id", "the-secret", "the-sts-token", "cn-hangzhou", 7.5
    )
    assert "the-secret" not in repr(connection) and "the-sts-token" not in repr(connection)
    args = connection.client_args()
    inspect.signature(make_client).bind(**args)
    inspect.signature(TablestoreStore).bind(collection_name="memories", **args)
    mem0_config = TablestoreConfig(endpoint="https://x", instance_name="x", access_key_id="k", access_key_secret="s")
    assert mem0_config.connection() == TablestoreConnection("https://x", "x", "k", "s", None, None, 10.0)
