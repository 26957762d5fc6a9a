"""The startup probe against a tiny local HTTP server: each problem is one line naming the setting."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tablestore_openmemory_mcp.app import probe
from tablestore_openmemory_mcp.settings import Settings
from tests.server_process import free_port


class Stub:
    """An HTTP server answering GET /v1/models with a fixed status; it records what it was asked."""

    def __init__(self, status: int = 200, body: bytes = b'{"object": "list", "data": []}') -> None:
        self.status, self.body, self.requests = status, body, []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests.append((self.path, self.headers.get("Authorization")))
                self.send_response(stub.status if self.path == "/v1/models" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(stub.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def stub(request) -> Iterator[Stub]:
    server = Stub(*getattr(request, "param", ()))
    try:
        yield server
    finally:
        server.close()


def settings(**values: object) -> Settings:
    """Defaults plus ``values``, without reading the environment."""
    return Settings.model_construct(**values)


def test_nothing_remote_nothing_probed():
    assert probe.endpoints(settings()) == []
    assert probe.start(settings()) is None


def test_shared_endpoint_is_probed_once_with_the_key(stub):
    lines = probe.probe(settings(openai_api_key="sk-good", openai_base_url=stub.url))
    assert lines == []
    assert stub.requests == [("/v1/models", "Bearer sk-good")]


@pytest.mark.parametrize("stub", [(401,)], indirect=True)
def test_rejected_key_names_the_key_setting(stub):
    [line] = probe.probe(settings(openai_api_key="sk-bad", openai_base_url=stub.url))
    assert "rejected the API key (HTTP 401)" in line and "check OPENAI_API_KEY" in line and stub.url in line
    assert "the server runs" not in line  # it may be about to stop (e.g. a store written by another embedder)


def test_a_key_can_keep_the_offline_embedder():
    """README: setting OPENAI_API_KEY later switches the embedder unless EMBEDDER_PROVIDER=offline keeps it."""
    kept = settings(openai_api_key="sk", embedder_provider="offline")
    assert kept.uses_llm and not kept.uses_remote_embedder
    assert [endpoint.role for endpoint in probe.endpoints(kept)] == ["LLM"]
    assert settings(openai_api_key="sk").uses_remote_embedder


@pytest.mark.parametrize("stub", [(401,)], indirect=True)
def test_separate_embedder_endpoint_names_its_own_settings(stub):
    good = Stub()
    try:
        lines = probe.probe(
            settings(
                openai_api_key="sk", openai_base_url=good.url, embedder_api_key="sk-bad", embedder_base_url=stub.url
            )
        )
    finally:
        good.close()
    assert len(lines) == 1 and "embedder endpoint" in lines[0] and "check EMBEDDER_API_KEY" in lines[0]


def test_unreachable_url_names_the_url_setting():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    [line] = probe.probe(settings(openai_api_key="sk", llm_base_url=url, embedder_provider="offline"))
    assert "the LLM endpoint" in line and "unreachable" in line and "check LLM_BASE_URL" in line


def test_wrong_path_and_non_api_answers(stub):
    [line] = probe.probe(settings(openai_api_key="sk", openai_base_url=stub.url.removesuffix("/v1")))
    assert "HTTP 404" in line and "check OPENAI_BASE_URL" in line and "/v1" in line
    stub.body = b"<html>hello</html>"
    [line] = probe.probe(settings(openai_api_key="sk", openai_base_url=stub.url))
    assert "does not answer like an OpenAI-compatible API" in line


def test_problem_wording_for_other_statuses():
    endpoint = probe.Endpoint("LLM", "https://x/v1", "k", "OPENAI_BASE_URL", "OPENAI_API_KEY")
    assert "HTTP 503" in (probe.problem(endpoint, probe.Answer(503)) or "")
    assert probe.problem(endpoint, probe.Answer(200)) is None
    assert json.dumps(probe.base_url(settings(), "LLM")) == '"https://api.openai.com/v1"'
