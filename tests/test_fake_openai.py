"""Tests for the fake OpenAI server, driven through the real ``openai`` SDK (sync and async).

Why: every other offline test trusts this fake to behave like OpenAI/DashScope on the wire; if the SDK
cannot parse it, or a DashScope rule drifts, those tests would pass for the wrong reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.fakes.openai_server import (
    MSG_BATCH,
    MSG_JSON_WORD,
    MSG_STREAM_ONLY,
    MSG_THINKING_JSON,
    MSG_THINKING_NONSTREAM,
    FakeOpenAI,
    Fault,
    embed_text,
)

USER = [{"role": "user", "content": "hello there"}]
JSON_MODE = {"type": "json_object"}


def client(fake: FakeOpenAI, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0, timeout=5, **kw)


def aclient(fake: FakeOpenAI) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0, timeout=5)


def ask(c: openai.OpenAI, model: str = "gpt-4o-mini", **kw: object) -> str | None:
    return c.chat.completions.create(model=model, messages=USER, **kw).choices[0].message.content


def stream_deltas(c: openai.OpenAI, model: str, **kw: object) -> list[tuple[str, str]]:
    """(field, text) for every non-empty content/reasoning_content delta, in order."""
    out: list[tuple[str, str]] = []
    for chunk in c.chat.completions.create(model=model, messages=USER, stream=True, **kw):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if reasoning := getattr(delta, "reasoning_content", None):
            out.append(("reasoning", reasoning))
        if delta.content:
            out.append(("content", delta.content))
    return out


def cosine(a: list[float], b: list[float]) -> float:
    va, vb = np.asarray(a), np.asarray(b)
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


# ------------------------------------------------------------------------------------------- chat


def test_scripted_replies_in_order_then_handler_fallback(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    fake_openai.script_chat("first", '{"facts": []}', lambda req: f"echo {req['messages'][0]['content']}")
    assert ask(c) == "first"
    assert ask(c) == '{"facts": []}'
    assert ask(c) == "echo hello there"
    assert ask(c) == "{}"  # default handler
    fake_openai.chat_handler = lambda req: json.dumps({"model": req["model"]})
    assert ask(c, model="qwen-plus") == '{"model": "qwen-plus"}'


def test_async_handler_and_async_client(fake_openai: FakeOpenAI) -> None:
    async def handler(req: dict) -> str:
        await asyncio.sleep(0)
        return "async " + req["model"]

    fake_openai.chat_handler = handler

    async def go() -> str | None:
        async with aclient(fake_openai) as c:
            resp = await c.chat.completions.create(model="m1", messages=USER)
            return resp.choices[0].message.content

    assert asyncio.run(go()) == "async m1"


def test_response_shape_and_usage(fake_openai: FakeOpenAI) -> None:
    resp = client(fake_openai).chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert resp.object == "chat.completion" and resp.model == "gpt-4o-mini"
    assert resp.choices[0].finish_reason == "stop" and resp.choices[0].message.role == "assistant"
    assert resp.usage is not None and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_streaming_plain_model(fake_openai: FakeOpenAI) -> None:
    text = '{"facts": ["likes pizza", "lives in Hangzhou"]}'
    fake_openai.script_chat(text)
    deltas = stream_deltas(client(fake_openai), "gpt-4o-mini", stream_options={"include_usage": True})
    assert all(kind == "content" for kind, _ in deltas) and len(deltas) > 1
    assert "".join(t for _, t in deltas) == text


def test_streaming_thinking_sends_reasoning_before_content(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    for model, extra in (("qwq-plus", {}), ("qwen3-max", {"extra_body": {"enable_thinking": True}})):
        fake_openai.script_chat('{"ok": true}')
        deltas = stream_deltas(c, model, **extra)
        kinds = [k for k, _ in deltas]
        assert kinds.count("reasoning") >= 3, deltas
        assert kinds == sorted(kinds, key=lambda k: k != "reasoning")  # all reasoning first
        assert "".join(t for k, t in deltas if k == "reasoning").startswith("Let me think")
        assert "".join(t for k, t in deltas if k == "content") == '{"ok": true}'


def test_async_streaming(fake_openai: FakeOpenAI) -> None:
    fake_openai.script_chat("streamed over async")

    async def go() -> str:
        async with aclient(fake_openai) as c:
            stream = await c.chat.completions.create(model="qvq-max", messages=USER, stream=True)
            return "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])

    assert asyncio.run(go()) == "streamed over async"


def test_non_streamed_thinking_has_reasoning_content_when_lenient(fake_openai: FakeOpenAI) -> None:
    msg = client(fake_openai).chat.completions.create(model="qwq-plus", messages=USER).choices[0].message
    assert msg.content == "{}"
    assert getattr(msg, "reasoning_content", "").startswith("Let me think")


# ---------------------------------------------------------------------------------- DashScope rules


def bad_request(call: object) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as info:
        call()  # type: ignore[operator]
    err = info.value
    assert err.status_code == 400
    assert isinstance(err.body, dict)
    assert err.body["type"] == "invalid_request_error" and err.body["code"] == "invalid_parameter_error"
    return err


def test_dashscope_json_word_rule(fake_dashscope: FakeOpenAI) -> None:
    c = client(fake_dashscope)
    err = bad_request(lambda: ask(c, "qwen-plus", response_format=JSON_MODE))
    assert err.body["message"] == MSG_JSON_WORD  # type: ignore[index]
    assert MSG_JSON_WORD == (
        "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'."
    )
    ok = c.chat.completions.create(
        model="qwen-plus",
        response_format=JSON_MODE,
        messages=[{"role": "system", "content": "Reply in JSON."}, *USER],
    )
    assert ok.choices[0].message.content == "{}"
    parts = [{"role": "user", "content": [{"type": "text", "text": "give me Json"}]}]
    c.chat.completions.create(model="qwen-plus", response_format=JSON_MODE, messages=parts)
    assert ask(c, "qwen-plus") == "{}"  # no response_format: no rule


def test_dashscope_stream_only_models(fake_dashscope: FakeOpenAI) -> None:
    c = client(fake_dashscope)
    for model in ("qwq-plus", "qvq-max"):
        assert bad_request(lambda m=model: ask(c, m)).body["message"] == MSG_STREAM_ONLY  # type: ignore[index]
    assert stream_deltas(c, "qwq-plus")[0][0] == "reasoning"


def test_dashscope_thinking_rules(fake_dashscope: FakeOpenAI) -> None:
    c = client(fake_dashscope)
    json_msgs = [{"role": "user", "content": "answer in json"}]
    for model, extra in (("qwq-plus", {}), ("qwen-plus", {"extra_body": {"enable_thinking": True}})):
        err = bad_request(
            lambda m=model, e=extra: c.chat.completions.create(
                model=m, messages=json_msgs, stream=True, response_format=JSON_MODE, **e
            )
        )
        assert err.body["message"] == MSG_THINKING_JSON  # type: ignore[index]
    err = bad_request(lambda: ask(c, "qwen-plus", extra_body={"enable_thinking": True}))
    assert err.body["message"] == MSG_THINKING_NONSTREAM  # type: ignore[index]
    assert ask(c, "qwen-plus", extra_body={"enable_thinking": False}) == "{}"


def test_lenient_mode_allows_what_dashscope_rejects(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    assert ask(c, "qwen-plus", response_format=JSON_MODE) == "{}"
    r = c.embeddings.create(model="text-embedding-v4", input=[f"t{i}" for i in range(11)], dimensions=100)
    assert len(r.data) == 11 and len(r.data[0].embedding) == 100


def test_dashscope_embedding_rules(fake_dashscope: FakeOpenAI) -> None:
    c = client(fake_dashscope)
    emb = c.embeddings.create
    err = bad_request(
        lambda: emb(model="text-embedding-v4", input=[str(i) for i in range(11)], encoding_format="float")
    )
    assert err.body["message"] == MSG_BATCH  # type: ignore[index]
    ten = emb(model="text-embedding-v4", input=[str(i) for i in range(10)], encoding_format="float")
    assert len(ten.data) == 10 and len(ten.data[0].embedding) == 1024  # DashScope default dimension
    for model, dims in (("text-embedding-v4", 100), ("text-embedding-v4", 3072), ("text-embedding-v3", 2048)):
        err = bad_request(lambda m=model, d=dims: emb(model=m, input="x", dimensions=d, encoding_format="float"))
        assert "dimension" in err.body["message"]  # type: ignore[index]
    assert (
        len(emb(model="text-embedding-v4", input="x", dimensions=64, encoding_format="float").data[0].embedding) == 64
    )
    assert len(emb(model="text-embedding-v3", input="x", encoding_format="float").data[0].embedding) == 1024
    # the SDK sends encoding_format="base64" when not told otherwise: DashScope rejects that
    err = bad_request(lambda: emb(model="text-embedding-v4", input="x"))
    assert "encoding_format" in err.body["message"]  # type: ignore[index]


# ------------------------------------------------------------------------------------- embeddings


def test_embeddings_deterministic_and_meaningful(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    texts = [
        "The user likes pizza",
        "the user LIKES pizza!",
        "User really likes pizza a lot",
        "Quarterly tax filing deadline",
        "用户喜欢吃披萨",
        "用户喜欢披萨",
        "",
        "?!",
    ]
    vecs = [d.embedding for d in c.embeddings.create(model="text-embedding-3-small", input=texts).data]
    assert all(len(v) == 1536 for v in vecs)  # default dimension
    assert all(abs(np.linalg.norm(v) - 1) < 1e-5 for v in vecs)  # L2-normalised, never all-zero
    assert vecs[0] == vecs[1]  # case and punctuation do not matter
    assert cosine(vecs[0], vecs[2]) > 0.6
    assert abs(cosine(vecs[0], vecs[3])) < 0.3
    assert cosine(vecs[4], vecs[5]) > 0.5  # CJK characters and bigrams
    assert vecs[6] != vecs[7]  # empty-feature texts get distinct hashed biases
    again = (
        c.embeddings.create(model="text-embedding-3-small", input=texts[0], dimensions=256, encoding_format="float")
        .data[0]
        .embedding
    )
    assert len(again) == 256
    assert np.allclose(again, embed_text(texts[0], 256))  # same function, any process


def test_embeddings_float_and_base64_agree(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    as_b64 = c.embeddings.create(model="e", input="memory layer", dimensions=32)  # SDK default: base64
    as_float = c.embeddings.create(model="e", input="memory layer", dimensions=32, encoding_format="float")
    assert fake_openai.requests[0][1]["encoding_format"] == "base64"
    assert np.allclose(as_b64.data[0].embedding, as_float.data[0].embedding)


# ----------------------------------------------------------------------------------------- faults


def test_http_fault_surfaces_as_status_error(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    fake_openai.script_chat(Fault.http(500), Fault.http(429, message="slow down"), "after")
    with pytest.raises(openai.InternalServerError):
        ask(c)
    with pytest.raises(openai.RateLimitError) as info:
        ask(c)
    assert info.value.body["message"] == "slow down"  # type: ignore[index]
    assert ask(c) == "after"


def test_http_fault_is_retried_by_sdk(fake_openai: FakeOpenAI) -> None:
    fake_openai.script_chat(Fault.http(500), "recovered")
    c = openai.OpenAI(base_url=fake_openai.base_url, api_key="test-key", max_retries=2, timeout=5)
    c = c.with_options(max_retries=2)
    assert ask(c) == "recovered"
    assert fake_openai.counts["chat"] == 2


def test_timeout_fault(fake_openai: FakeOpenAI) -> None:
    fake_openai.script_chat(Fault.timeout(), "next")
    c = client(fake_openai).with_options(timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        ask(c)
    assert ask(c) == "next"


def test_drop_fault_is_a_real_drop(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    fake_openai.script_chat(Fault.drop())
    with pytest.raises(openai.APIConnectionError) as info:
        ask(c)
    assert not isinstance(info.value, openai.APITimeoutError)
    # raw socket: not a single byte comes back (no 500 from uvicorn)
    fake_openai.script_chat(Fault.drop())
    port = int(fake_openai.base_url.rsplit(":", 1)[1].split("/")[0])
    body = json.dumps({"model": "m", "messages": USER}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + body)
        try:
            received = sock.recv(4096)
        except ConnectionResetError:
            received = b""
    assert received == b""
    assert ask(c) == "{}"


def test_nonjson_fault_is_prose(fake_openai: FakeOpenAI) -> None:
    fake_openai.script_chat(Fault.nonjson())
    reply = ask(client(fake_openai))
    assert reply
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply)


def test_embedding_faults(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    fake_openai.script_embeddings(Fault.http(500), None, Fault.drop(), Fault.timeout())
    with pytest.raises(openai.InternalServerError):
        c.embeddings.create(model="e", input="x")
    assert len(c.embeddings.create(model="e", input="x").data) == 1
    with pytest.raises(openai.APIConnectionError):
        c.embeddings.create(model="e", input="x")
    with pytest.raises(openai.APITimeoutError):
        c.with_options(timeout=0.3).embeddings.create(model="e", input="x")
    assert len(c.embeddings.create(model="e", input="x").data) == 1
    assert fake_openai.counts["embeddings"] == 5


def test_fault_rate_is_seeded_and_does_not_consume_script(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)

    def failures() -> list[int]:
        out = []
        for i in range(20):
            try:
                ask(c)
            except openai.InternalServerError:
                out.append(i)
        return out

    fake_openai.fault_rate("chat", kinds=["http500"], rate=0.3, seed=7)
    first = failures()
    fake_openai.fault_rate("chat", kinds=["http500"], rate=0.3, seed=7)
    assert failures() == first and 0 < len(first) < 20
    fake_openai.fault_rate("chat", kinds=["http503"], rate=1.0)
    fake_openai.script_chat("kept")
    with pytest.raises(openai.InternalServerError):
        ask(c)
    fake_openai.fault_rate("chat", rate=0.0)
    assert ask(c) == "kept"
    fake_openai.fault_rate("embeddings", kinds=["nonjson"], rate=1.0)
    with pytest.raises(ValueError):  # 200 with a body that is not JSON
        c.embeddings.create(model="e", input="x", encoding_format="float")


# ------------------------------------------------------------------------------ errors and bookkeeping


def test_bad_api_key_is_401(fake_openai: FakeOpenAI) -> None:
    c = openai.OpenAI(base_url=fake_openai.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        ask(c)
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        c.embeddings.create(model="e", input="x")


def test_unknown_model_is_404(fake_openai: FakeOpenAI) -> None:
    fake_openai.known_models = {"qwen-plus", "text-embedding-v4"}
    c = client(fake_openai)
    with pytest.raises(openai.NotFoundError) as info:
        ask(c, "qwen-nope")
    assert info.value.code == "model_not_found"
    assert ask(c, "qwen-plus") == "{}"
    assert [m.id for m in c.models.list()] == ["qwen-plus", "text-embedding-v4"]


def test_malformed_requests_are_400(fake_openai: FakeOpenAI) -> None:
    auth = {"Authorization": "Bearer test-key", "Content-Type": "application/json"}
    url = fake_openai.base_url
    r = httpx.post(f"{url}/chat/completions", content=b"not json{", headers=auth)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{url}/chat/completions", json={"messages": USER}, headers=auth)
    assert r.status_code == 400 and "model" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/embeddings", json={"input": "x"}, headers=auth)
    assert r.status_code == 400
    assert fake_openai.counts == {"chat": 2, "embeddings": 1}
    assert fake_openai.requests[0] == ("chat", {"_raw": "not json{"})


def test_counts_requests_and_reset(fake_openai: FakeOpenAI) -> None:
    c = client(fake_openai)
    fake_openai.script_chat(Fault.http(500), "ok")
    with pytest.raises(openai.InternalServerError):
        ask(c, "m-a")
    ask(c, "m-b")
    c.embeddings.create(model="e", input=["x", "y"])
    assert fake_openai.counts == {"chat": 2, "embeddings": 1}
    assert [(ep, req["model"]) for ep, req in fake_openai.requests] == [
        ("chat", "m-a"),
        ("chat", "m-b"),
        ("embeddings", "e"),
    ]
    assert fake_openai.requests[2][1]["input"] == ["x", "y"]
    fake_openai.script_chat("left over")
    fake_openai.chat_latency = 5
    fake_openai.fault_rate("chat", rate=1.0)
    fake_openai.reset()
    assert fake_openai.counts == {} and fake_openai.requests == [] and fake_openai.chat_latency == 0
    assert ask(c) == "{}"


# ------------------------------------------------------------------------------ concurrency, lifecycle


@pytest.mark.parametrize("n", [16, 64])
def test_latency_does_not_serialise(fake_openai: FakeOpenAI, n: int) -> None:
    fake_openai.chat_latency = 0.3
    fake_openai.embed_latency = 0.3

    async def go() -> float:
        async with aclient(fake_openai) as c:
            t0 = time.perf_counter()
            chats = [c.chat.completions.create(model="m", messages=USER) for _ in range(n)]
            embeds = [c.embeddings.create(model="e", input="x") for _ in range(n // 4)]
            await asyncio.gather(*chats, *embeds)
            return time.perf_counter() - t0

    elapsed = asyncio.run(go())
    print(f"{n} chats + {n // 4} embeddings at 0.3 s latency took {elapsed:.2f} s")
    assert fake_openai.counts == {"chat": n, "embeddings": n // 4}


def test_start_stop_is_quick_and_leaves_no_thread() -> None:
    before = set(threading.enumerate())
    t0 = time.perf_counter()
    fake = FakeOpenAI().start()
    fake.script_chat(Fault.timeout(30))
    with pytest.raises(openai.APITimeoutError):
        ask(client(fake).with_options(timeout=0.2))
    fake.stop()
    elapsed = time.perf_counter() - t0
    print(f"start + timed-out call + stop: {elapsed:.2f} s")
    assert set(threading.enumerate()) <= before
    with pytest.raises(RuntimeError):
        _ = fake.base_url
    with FakeOpenAI() as again:  # restartable, usable as a context manager
        assert ask(client(again)) == "{}"


def test_standalone_cli(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "myhandler.py").write_text("def reply(req):\n    return 'from ' + req['model']\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(tmp_path)])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.openai_server",
            "--port",
            "0",
            "--latency",
            "0.01",
            "--handler",
            "myhandler:reply",
        ],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        c = openai.OpenAI(base_url=base_url, api_key="test-key", max_retries=0, timeout=5)
        assert ask(c, "cli-model") == "from cli-model"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
