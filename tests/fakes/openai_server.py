"""A fake OpenAI-compatible server (chat + embeddings) for offline tests and benchmarks.

Why: the production LLM/embedder is DashScope's OpenAI-compatible endpoint and there is no network in
tests. This fake speaks the wire protocol the real ``openai`` SDK expects (JSON and SSE streaming), lets a
test script replies, latency and faults (HTTP errors, timeouts, dropped connections, prose instead of
JSON), and in ``dashscope=True`` mode rejects requests exactly the way DashScope does (see
/work/shared/notes/dashscope.md), so client code that only works against lenient providers fails here.

It is a Starlette app served by uvicorn on 127.0.0.1 in a background thread; handlers are async, so
latency never serialises concurrent requests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import importlib
import inspect
import itertools
import json
import random
import re
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

JsonDict = dict[str, Any]
ChatReply = str | Callable[[JsonDict], Any]
"""A scripted chat reply: the assistant content, or a callable(request_json) -> content (may be async)."""

# --------------------------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    """A scripted failure; build with the classmethods. ``kind`` says what the server does instead."""

    kind: Literal["http", "timeout", "drop", "nonjson"]
    status: int = 500
    message: str = "The server had an error while processing your request. Sorry about that!"
    seconds: float = 30.0

    @classmethod
    def http(cls, status: int = 500, message: str | None = None) -> Fault:
        """Answer with ``status`` and an OpenAI-style error JSON body."""
        return cls("http", status=status, message=message or cls.message)

    @classmethod
    def timeout(cls, seconds: float = 30.0) -> Fault:
        """Sleep ``seconds`` (longer than the client's timeout), then answer 504; ``stop()`` cuts it short."""
        return cls("timeout", seconds=seconds)

    @classmethod
    def drop(cls) -> Fault:
        """Close the TCP connection without sending any response bytes."""
        return cls("drop")

    @classmethod
    def nonjson(cls, text: str = "Sure! Here is what I found: the user likes pizza.") -> Fault:
        """Chat: a normal 200 reply whose content is prose, not JSON.

        Embeddings: a 200 "application/json" response whose body is that prose (the SDK raises a
        ``json.JSONDecodeError``, a ``ValueError``), i.e. a gateway answering garbage.
        """
        return cls("nonjson", message=text)


def _fault_from_kind(kind: str, timeout_seconds: float) -> Fault:
    """Map a ``fault_rate`` kind name ("http500", "http429", "timeout", "drop", "nonjson") to a Fault."""
    if kind.startswith("http") and kind[4:].isdigit():
        return Fault.http(int(kind[4:]))
    if kind == "timeout":
        return Fault.timeout(timeout_seconds)
    if kind == "drop":
        return Fault.drop()
    if kind == "nonjson":
        return Fault.nonjson()
    raise ValueError(f"unknown fault kind {kind!r}")


@dataclass
class _FaultRate:
    rate: float
    kinds: list[Fault]
    rng: random.Random

    def roll(self) -> Fault | None:
        if self.rate <= 0 or self.rng.random() >= self.rate:
            return None
        return self.rng.choice(self.kinds)


# --------------------------------------------------------------------------------------------- errors

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


def error_response(status: int, message: str, code: str | None = None) -> JSONResponse:
    """An OpenAI/DashScope-style error body: ``{"error": {message, type, param, code}}``."""
    etype = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def _bad_request(message: str) -> JSONResponse:
    return error_response(400, message, "invalid_parameter_error")


# DashScope's exact wording where it matters (the json_object rule is quoted verbatim from its docs).
MSG_JSON_WORD = "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'."
MSG_STREAM_ONLY = "This model only support stream mode, please enable the stream parameter to access the model."
MSG_THINKING_NONSTREAM = "parameter.enable_thinking must be set to false for non-streaming calls"
MSG_THINKING_JSON = "The response_format 'json_object' is not supported in thinking mode."
MSG_BATCH = "batch size is invalid, it should not be larger than 10."
MSG_ENCODING = "encoding_format is invalid, only 'float' is supported."
DASHSCOPE_EMBED_DIMS: dict[str, tuple[int, ...]] = {
    "text-embedding-v4": (2048, 1536, 1024, 768, 512, 256, 128, 64),
    "text-embedding-v3": (1024, 768, 512),
}
DASHSCOPE_MAX_BATCH = 10

# ----------------------------------------------------------------------------------------- embeddings

_WORD = re.compile(r"[a-z0-9]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+")
_STOPWORD_TEXT = (
    "a an the is am are was were be been being to of and or in on at for with by it its this that "
    "these those i me my you your he him his she her they them their we us our as from not do does "
    "did has have had will would can could should so but if then than there here what which who whom "
    "how when where why"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def _features(text: str) -> list[str]:
    """Lowercased ASCII words (stopwords dropped unless that leaves none), CJK characters and CJK bigrams."""
    words = _WORD.findall(text.lower())
    feats = [w for w in words if w not in _STOPWORDS] or words
    for run in _CJK.findall(text):
        feats.extend(run)
        feats.extend(run[i : i + 2] for i in range(len(run) - 1))
    return feats


def _hash64(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


def embed_text(text: str, dim: int) -> np.ndarray:
    """Deterministic signed feature-hash embedding, L2-normalised float32, never all-zero.

    Why: tests need vectors where shared words mean high cosine and identical text means identical vector,
    without a model. Same function in every process (blake2b, not ``hash()``).
    """
    vec = np.zeros(dim, dtype=np.float64)
    for feat in _features(text):
        h = _hash64(feat)
        vec[h % dim] += -1.0 if (h >> 63) & 1 else 1.0
    norm = float(np.linalg.norm(vec))
    if norm < 1e-12:  # no features (or colliding signs cancelled): a hashed bias keeps it non-zero
        h = _hash64("\x00bias\x00" + text)
        vec[h % dim] = 1.0
        norm = 1.0
    return (vec / norm).astype(np.float32)


# ------------------------------------------------------------------------------------------ chat bits

_THINKING_MARKERS = ("qwq", "qvq", "thinking")


def _stream_only(model: str) -> bool:
    name = model.lower()
    return "qwq" in name or "qvq" in name


def is_thinking(body: JsonDict) -> bool:
    """Thinking model: name contains qwq/qvq/thinking, or enable_thinking=true (top level or extra_body)."""
    name = str(body.get("model", "")).lower()
    extra = body.get("extra_body") if isinstance(body.get("extra_body"), dict) else {}
    return (
        any(m in name for m in _THINKING_MARKERS)
        or body.get("enable_thinking") is True
        or (extra.get("enable_thinking") is True)
    )


def _message_text(messages: Iterable[Any]) -> str:
    """All text in the messages, whether content is a string or a list of {"type": "text"} parts."""
    parts: list[str] = []
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


def _count_tokens(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))


def _split(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def dashscope_chat_error(body: JsonDict) -> str | None:
    """The 400 message DashScope would give this chat request, or None if it would accept it."""
    model = str(body["model"])
    stream = body.get("stream") is True
    thinking = is_thinking(body)
    if _stream_only(model) and not stream:
        return MSG_STREAM_ONLY
    if thinking and not stream:
        return MSG_THINKING_NONSTREAM
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_object":
        if thinking:
            return MSG_THINKING_JSON
        if "json" not in _message_text(body.get("messages", [])).lower():
            return MSG_JSON_WORD
    return None


# ------------------------------------------------------------------------- connection drop machinery

# (server addr, client addr) -> transport, so a handler can abort its own TCP connection (a real drop;
# uvicorn would otherwise turn an exception before the response into a 500).
_TRANSPORTS: dict[tuple[Any, Any], asyncio.Transport] = {}


class _TrackingH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a registry entry for its transport while the connection lives."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _TRANSPORTS[(self.server, self.client)] = transport

    def connection_lost(self, exc: Exception | None) -> None:
        _TRANSPORTS.pop((self.server, self.client), None)
        super().connection_lost(exc)


class _DropResponse(Response):
    """Sends nothing: aborts the TCP connection, then waits for uvicorn to notice the disconnect."""

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = _TRANSPORTS.get((scope.get("server"), scope.get("client")))
        if transport is None:  # client already gone; (or not our protocol: uvicorn then sends a 500)
            return
        transport.abort()
        while (await receive())["type"] != "http.disconnect":
            pass


# ----------------------------------------------------------------------------------------- the fake


class _Server(uvicorn.Server):
    """uvicorn.Server whose main loop waits for our stop event instead of polling every 0.1 s."""

    stopping: asyncio.Event | None = None

    async def main_loop(self) -> None:
        assert self.stopping is not None
        await self.stopping.wait()


def _default_chat_handler(_body: JsonDict) -> str:
    return "{}"


class FakeOpenAI:
    """Fake OpenAI-compatible server: ``start()``, point a client at ``base_url``/``api_key``, ``stop()``.

    Scripted chat replies are consumed FIFO in arrival order; a random fault from ``fault_rate`` is rolled
    first and does not consume the script (a transient failure, so a retry gets the scripted reply).
    """

    api_key = "test-key"

    def __init__(self, dashscope: bool = False, *, port: int = 0) -> None:
        self.dashscope = dashscope
        self.chat_handler: Callable[[JsonDict], Any] = _default_chat_handler
        self.known_models: set[str] | None = None
        self.chat_latency = 0.0
        self.embed_latency = 0.0
        self.reasoning_text = "Let me think about this step by step. The user wants an answer; here it is."
        self.stream_chunk_chars = 8
        self._port = port
        self._lock = threading.Lock()
        self._chat_script: deque[ChatReply | Fault] = deque()
        self._embed_script: deque[Fault | None] = deque()
        self._counts: Counter[str] = Counter()
        self._requests: list[tuple[str, JsonDict]] = []
        self._rates: dict[str, _FaultRate] = {}
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._base_url: str | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    # ----------------------------------------------------------------------------------- public API

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeOpenAI is not started")
        return self._base_url

    @property
    def counts(self) -> Counter[str]:
        """Requests received per endpoint ("chat", "embeddings"), including rejected and faulted ones."""
        with self._lock:
            return Counter(self._counts)

    @property
    def requests(self) -> list[tuple[str, JsonDict]]:
        """Snapshot of (endpoint, request_json) in arrival order; a non-JSON body is ``{"_raw": text}``."""
        with self._lock:
            return list(self._requests)

    def script_chat(self, *replies: ChatReply | Fault) -> None:
        """Queue chat replies (str content, callable(request_json) -> str, or Fault), consumed FIFO."""
        with self._lock:
            self._chat_script.extend(replies)

    def script_embeddings(self, *faults: Fault | None) -> None:
        """Queue embedding outcomes FIFO: a Fault, or None for one normal answer. Empty queue -> normal."""
        with self._lock:
            self._embed_script.extend(faults)

    def fault_rate(
        self,
        endpoint: Literal["chat", "embeddings"] = "chat",
        kinds: Iterable[str] = ("http500",),
        rate: float = 0.1,
        seed: int = 1,
        *,
        timeout_seconds: float = 30.0,
    ) -> None:
        """Random faults at ``rate`` (0 disables), drawn from ``kinds`` with a seeded RNG."""
        if endpoint not in ("chat", "embeddings"):
            raise ValueError(f"unknown endpoint {endpoint!r}")
        faults = [_fault_from_kind(k, timeout_seconds) for k in kinds]
        with self._lock:
            self._rates[endpoint] = _FaultRate(rate, faults, random.Random(seed))

    def reset(self) -> None:
        """Clear scripts, counts, recorded requests, latencies and fault rates (keeps handler and models)."""
        with self._lock:
            self._chat_script.clear()
            self._embed_script.clear()
            self._counts.clear()
            self._requests.clear()
            self._rates.clear()
            self.chat_latency = 0.0
            self.embed_latency = 0.0

    def start(self) -> FakeOpenAI:
        """Serve on 127.0.0.1 (ephemeral port unless given) in a daemon thread; returns when listening."""
        if self._thread is not None:
            raise RuntimeError("FakeOpenAI already started")
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self._port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            log_config=None,
            http=_TrackingH11Protocol,
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._error = None
        self._thread = threading.Thread(target=self._run, name="fake-openai", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._signal_stop()
                self._thread.join(timeout=5)
                self._thread = None
                raise RuntimeError(f"FakeOpenAI failed to start: {self._error!r}")
            time.sleep(0.002)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self._base_url = f"http://127.0.0.1:{port}/v1"
        return self

    def stop(self) -> None:
        """Stop serving: wake sleeping handlers (they drop their connections), join the thread."""
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        self._signal_stop()
        thread.join(timeout=10)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        self._thread = None
        self._base_url = None
        self._loop = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------ internals

    def _signal_stop(self) -> None:
        """Thread-safe: end uvicorn's main loop and wake every handler sleeping in ``_pause``."""
        if self._server is not None:
            self._server.should_exit = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # uvicorn calls sys.exit on bind errors
            self._error = exc

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        assert self._server is not None
        self._server.stopping = self._stopping
        await self._server.serve()

    async def _pause(self, seconds: float) -> bool:
        """Sleep without blocking other requests; False if the server began stopping meanwhile."""
        if seconds <= 0:
            return True
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False

    async def _receive(self, request: Request, endpoint: str) -> JsonDict | Response:
        """Count, record, authenticate and parse; a Response means "answer with this"."""
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        with self._lock:
            self._counts[endpoint] += 1
            recorded = body if isinstance(body, dict) else {"_raw": raw.decode("utf-8", "replace")}
            self._requests.append((endpoint, recorded))
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error_response(
                401,
                "Incorrect API key provided. You can find your API key in your account settings.",
                "invalid_api_key",
            )
        if not isinstance(body, dict):
            return _bad_request("The request body is not valid JSON.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _bad_request("you must provide a model parameter")
        if self.known_models is not None and model not in self.known_models:
            return error_response(
                404, f"The model `{model}` does not exist or you do not have access to it.", "model_not_found"
            )
        return body

    def _next(self, endpoint: str, script: deque[Any]) -> Any:
        """Random fault first (does not consume the script), else the next scripted item, else None."""
        with self._lock:
            rate = self._rates.get(endpoint)
            fault = rate.roll() if rate else None
            if fault is not None:
                return fault
            return script.popleft() if script else None

    async def _fault_response(self, fault: Fault) -> Response | None:
        """Response for an http/timeout/drop fault; None for nonjson (the caller handles it per endpoint)."""
        if fault.kind == "http":
            return error_response(fault.status, fault.message)
        if fault.kind == "timeout":
            if not await self._pause(fault.seconds):
                return _DropResponse()
            return error_response(504, "fake timeout elapsed")
        if fault.kind == "drop":
            return _DropResponse()
        return None

    # ------------------------------------------------------------------------------------- chat

    async def _chat(self, request: Request) -> Response:
        body = await self._receive(request, "chat")
        if isinstance(body, Response):
            return body
        if not isinstance(body.get("messages"), list):
            return _bad_request("'messages' is a required property and must be a list.")
        if self.dashscope and (msg := dashscope_chat_error(body)):
            return _bad_request(msg)
        item = self._next("chat", self._chat_script)
        if not await self._pause(self.chat_latency):
            return _DropResponse()
        if isinstance(item, Fault):
            if (resp := await self._fault_response(item)) is not None:
                return resp
            content = item.message
        else:
            try:
                source = self.chat_handler if item is None else item
                produced = source(body) if callable(source) else source
                if inspect.isawaitable(produced):
                    produced = await produced
            except Exception as exc:  # surface handler bugs as a 500 the test will see
                return error_response(500, f"fake chat handler raised {exc!r}")
            content = str(produced)
        if body.get("stream") is True:
            return StreamingResponse(self._sse(body, content), media_type="text/event-stream")
        return JSONResponse(self._completion(body, content))

    def _completion(self, body: JsonDict, content: str) -> JsonDict:
        message: JsonDict = {"role": "assistant", "content": content}
        if is_thinking(body):
            message["reasoning_content"] = self.reasoning_text
        prompt = _count_tokens(_message_text(body["messages"]))
        completion = _count_tokens(content)
        return {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }

    async def _sse(self, body: JsonDict, content: str) -> AsyncIterator[str]:
        """SSE chunks: role, reasoning_content pieces (thinking models), content pieces, stop, [DONE]."""
        base = {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
        }

        def chunk(delta: JsonDict, finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return f"data: {json.dumps({**base, 'choices': [choice]}, ensure_ascii=False)}\n\n"

        size = max(1, self.stream_chunk_chars)
        yield chunk({"role": "assistant", "content": ""})
        if is_thinking(body):
            for piece in _split(self.reasoning_text, size):
                yield chunk({"content": None, "reasoning_content": piece})
        for piece in _split(content, size):
            yield chunk({"content": piece})
        yield chunk({}, "stop")
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage = self._completion(body, content)["usage"]
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    # ------------------------------------------------------------------------------- embeddings

    def _embed_dim(self, body: JsonDict) -> int | str:
        """The output dimension, or an error message."""
        model, dims = str(body["model"]), body.get("dimensions")
        allowed = DASHSCOPE_EMBED_DIMS.get(model) if self.dashscope else None
        if dims is None:
            return 1024 if allowed else 1536
        if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 16384:
            return f"dimensions is invalid: {dims!r}"
        if allowed and dims not in allowed:
            return f"The dimension {dims} is invalid for model {model}, it should be one of {list(allowed)}."
        return dims

    async def _embeddings(self, request: Request) -> Response:
        body = await self._receive(request, "embeddings")
        if isinstance(body, Response):
            return body
        raw_input = body.get("input")
        texts = [raw_input] if isinstance(raw_input, str) else raw_input
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return _bad_request("input must be a non-empty string or a non-empty list of strings.")
        fmt = body.get("encoding_format") or "float"
        if self.dashscope and len(texts) > DASHSCOPE_MAX_BATCH:
            return _bad_request(MSG_BATCH)
        if fmt not in ("float", "base64") or (self.dashscope and fmt != "float"):
            return _bad_request(MSG_ENCODING if self.dashscope else f"encoding_format is invalid: {fmt!r}")
        dim = self._embed_dim(body)
        if isinstance(dim, str):
            return _bad_request(dim)
        fault = self._next("embeddings", self._embed_script)
        if not await self._pause(self.embed_latency):
            return _DropResponse()
        if fault is not None:
            resp = await self._fault_response(fault)
            return resp if resp is not None else Response(fault.message, media_type="application/json")
        data = []
        for i, text in enumerate(texts):
            vec = embed_text(text, dim)
            emb: Any = vec.tolist()
            if fmt == "base64":  # what the SDK sends by default: little-endian float32 bytes
                emb = base64.b64encode(vec.astype("<f4").tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(_count_tokens(t) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _models(self, request: Request) -> Response:
        names = sorted(self.known_models or [])
        return JSONResponse(
            {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "fake"} for n in names]}
        )


# ----------------------------------------------------------------------------------------- standalone


def _load_handler(spec: str) -> Callable[[JsonDict], Any]:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise SystemExit(f"--handler must be module:function, got {spec!r}")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.openai_server``: print the base URL, serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server (chat + embeddings).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every chat call")
    parser.add_argument("--embed-latency", type=float, default=0.0)
    parser.add_argument("--dashscope", action="store_true", help="enforce DashScope's request rules")
    parser.add_argument("--handler", help="module:function returning chat content for a request dict")
    args = parser.parse_args(argv)
    fake = FakeOpenAI(dashscope=args.dashscope, port=args.port)
    if args.handler:
        fake.chat_handler = _load_handler(args.handler)
    fake.chat_latency, fake.embed_latency = args.latency, args.embed_latency
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    fake.start()
    print(fake.base_url, flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
