"""--help names the maintenance commands and the URLs a new user needs (the memory browser, /mcp, Inspector)."""

from __future__ import annotations

import pytest

from tablestore_openmemory_mcp.app import cli
from tablestore_openmemory_mcp.settings import Settings


def test_help_lists_the_subcommands_and_the_browser(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    text = capsys.readouterr().out
    for command in ("export", "import", "migrate", "reembed"):
        assert f"tablestore-openmemory-mcp {command}" in text
    assert "memory browser" in text and "http://127.0.0.1:8765/" in text
    assert "/mcp/<client>/<user>/mcp" in text  # the Inspector's URL form


@pytest.mark.parametrize(
    ("values", "url"),
    [
        ({"SERVER_HOST": "127.0.0.1", "SERVER_PORT": 8765}, "http://127.0.0.1:8765/"),
        ({"SERVER_HOST": "0.0.0.0", "SERVER_PORT": 9000}, "http://127.0.0.1:9000/"),
        ({"SERVER_HOST": "::1", "SERVER_PORT": 9000}, "http://[::1]:9000/"),
        ({"MCP_PUBLIC_URL": "https://memory.example.com/"}, "https://memory.example.com/"),
    ],
)
def test_startup_line_browser_url(values, url):
    settings = Settings.model_construct(**{"host": "127.0.0.1", "port": 8765, "public_url": None} | _fields(values))
    assert cli.browser_url(settings) == url


def _fields(values: dict[str, object]) -> dict[str, object]:
    names = {"SERVER_HOST": "host", "SERVER_PORT": "port", "MCP_PUBLIC_URL": "public_url"}
    return {names[key]: value for key, value in values.items()}
