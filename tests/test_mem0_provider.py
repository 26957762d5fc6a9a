"""The mem0 vector-store providers, driven by mem0 2.x's own ``Memory`` (its OpenAI LLM and embedder pointed
at the fake OpenAI server) on the strict Tablestore emulator and on the embedded store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tablestore_openmemory_mcp.mem0 import register
from tests.fakes.openai_server import FakeOpenAI
from tests.tablestore_emulator import TablestoreEmulator

DIMS = 64


def extracted(*texts: str) -> str:
    return json.dumps({"memory": [{"id": str(i), "text": t} for i, t in enumerate(texts)]})


def config(tmp_path, fake: FakeOpenAI, store: dict[str, Any]) -> dict[str, Any]:
    keys = {"api_key": fake.api_key, "openai_base_url": fake.base_url}
    return {
        "vector_store": store,
        "llm": {
            "provider": "openai",
            "config": {"model": "m", "api_key": fake.api_key, "openai_base_url": fake.base_url},
        },
        "embedder": {
            "provider": "openai",
            "config": {"model": "e", **keys, "embedding_dims": DIMS},
        },
        "history_db_path": str(tmp_path / "history.db"),
    }


def tablestore(emu: TablestoreEmulator, table: str = "mem0") -> dict[str, Any]:
    return {
        "provider": "tablestore",
        "config": {
            "endpoint": emu.endpoint,
            "instance_name": emu.instance_name,
            "access_key_id": emu.access_key_id,
            "access_key_secret": emu.access_key_secret,
            "table_name": table,
            "vector_dimension": DIMS,
        },
    }


@pytest.fixture(params=["tablestore", "embedded"])
def memory_config(request, tmp_path, fake_openai) -> dict[str, Any]:
    register(tmp_path / "data")
    if request.param == "tablestore":
        emu = request.getfixturevalue("tablestore_emulator")
        return config(tmp_path, fake_openai, tablestore(emu))
    store = {"provider": "openmemory_embedded", "config": {"path": str(tmp_path / "data"), "vector_dimension": DIMS}}
    return config(tmp_path, fake_openai, store)


def memories(m: Any, **filters: Any) -> list[str]:
    return sorted(r["memory"] for r in m.get_all(filters=filters, top_k=100)["results"])


def test_mem0_memory_on_our_stores(memory_config, fake_openai):
    from mem0 import Memory

    m = Memory.from_config(memory_config)
    fake_openai.script_chat(extracted("Likes green tea", "Lives in Hangzhou"))
    added = m.add("I like green tea and live in Hangzhou", user_id="alice", agent_id="cline")["results"]
    assert [(r["event"], r["memory"]) for r in added] == [("ADD", "Likes green tea"), ("ADD", "Lives in Hangzhou")]
    m.add("Runs on Sundays", user_id="alice", run_id="r1", infer=False, metadata={"topic": "sport", "level": 3})
    m.add("Prefers dark mode", user_id="bob", infer=False)

    # search right after the adds (the Tablestore index lags a second): the store's recent writes answer
    hits = m.search("green tea", filters={"user_id": "alice"})["results"]
    assert hits[0]["memory"] == "Likes green tea" and 0 < hits[0]["score"] <= 1
    assert memories(m, user_id="alice") == ["Likes green tea", "Lives in Hangzhou", "Runs on Sundays"]
    assert memories(m, user_id="alice", agent_id="cline") == ["Likes green tea", "Lives in Hangzhou"]
    assert memories(m, user_id="alice", run_id="r1") == ["Runs on Sundays"]
    assert memories(m, user_id="alice", topic={"in": ["sport", "music"]}, level={"gte": 3}) == ["Runs on Sundays"]
    assert memories(m, user_id="alice", OR=[{"topic": "sport"}, {"agent_id": "cline"}]) == [
        "Likes green tea",
        "Lives in Hangzhou",
        "Runs on Sundays",
    ]
    assert memories(m, user_id="alice", NOT=[{"agent_id": "cline"}]) == ["Runs on Sundays"]
    assert memories(m, user_id="bob") == ["Prefers dark mode"]  # one user never sees another's
    assert {h["user_id"] for h in m.search("tea dark mode", filters={"user_id": "bob"})["results"]} == {"bob"}

    tea = added[0]["id"]
    got = m.get(tea)
    assert got["memory"] == "Likes green tea" and got["user_id"] == "alice" and got["agent_id"] == "cline"
    m.update(tea, text="Likes oolong tea")
    assert m.get(tea)["memory"] == "Likes oolong tea"
    events = [(h["event"], h["new_memory"]) for h in m.history(tea)]
    assert events == [("ADD", "Likes green tea"), ("UPDATE", "Likes oolong tea")]

    m.delete(tea)
    assert m.get(tea) is None
    assert memories(m, user_id="alice") == ["Lives in Hangzhou", "Runs on Sundays"]
    m.delete_all(user_id="alice")
    assert memories(m, user_id="alice") == [] and memories(m, user_id="bob") == ["Prefers dark mode"]

    # a second Memory (another process, say) finds ids it never saw, through the owner directory
    other = Memory.from_config(memory_config)
    bob = m.get_all(filters={"user_id": "bob"})["results"][0]["id"]
    assert other.get(bob)["memory"] == "Prefers dark mode"


def test_concurrent_adds_of_one_text_store_one_memory(memory_config):
    from mem0 import Memory

    m = Memory.from_config(memory_config)
    ids: list[str] = []

    def add() -> None:
        ids.append(m.add("Allergic to peanuts", user_id="alice", infer=False)["results"][0]["id"])

    threads = [threading.Thread(target=add) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert memories(m, user_id="alice") == ["Allergic to peanuts"]
    assert {m.get(i)["memory"] for i in ids} == {"Allergic to peanuts"}, "every id mem0 returned leads to the memory"


def test_bad_input_gets_one_line_errors(memory_config):
    from mem0 import Memory

    from tablestore_openmemory_mcp.errors import UserInputError

    m = Memory.from_config(memory_config)
    with pytest.raises(UserInputError, match="needs a user_id") as no_user:
        m.get_all(filters={"agent_id": "cline"})
    assert "\n" not in str(no_user.value)
    with pytest.raises(UserInputError, match=r"unsupported filter operator\(s\) \['regex'\]"):
        m.get_all(filters={"user_id": "alice", "topic": {"regex": "^s"}})
    with pytest.raises(ValueError, match="Unsupported metadata filter operator"):  # mem0's own check
        m.search("x", filters={"user_id": "alice", "topic": {"eq": "a", "regex": "b"}})
    with pytest.raises(UserInputError, match="needs a user_id"):
        m.add("no owner", agent_id="cline", infer=False)


def test_entities_collection_through_mem0(memory_config, fake_openai, monkeypatch):
    """mem0 links entities (with spaCy) in ``<collection>_entities``: a second collection through our provider."""
    import mem0.memory.main as main
    from mem0 import Memory

    def entities(text: str) -> list[tuple[str, str]]:
        return [("PROPER", "Hangzhou")] if "Hangzhou" in text else []

    monkeypatch.setattr(main, "extract_entities", entities)
    monkeypatch.setattr(main, "extract_entities_batch", lambda texts: [entities(t) for t in texts])
    m = Memory.from_config(memory_config)
    fake_openai.script_chat(extracted("Lives in Hangzhou", "Likes tea"))
    city = m.add("I live in Hangzhou and like tea", user_id="alice")["results"][0]["id"]
    store = m.entity_store
    assert store.collection_name.endswith("_entities")
    rows = store.list(filters={"user_id": "alice"})[0]
    assert [(r.payload["data"], r.payload["linked_memory_ids"]) for r in rows] == [("Hangzhou", [city])]
    hits = m.search("Where is Hangzhou", filters={"user_id": "alice"})["results"]
    assert hits[0]["id"] == city
    m.delete(city)  # the entity loses its only link and goes
    assert store.list(filters={"user_id": "alice"})[0] == []


def test_readme_mem0_snippet_runs(tmp_path, tablestore_emulator, fake_dashscope):
    """README's mem0 snippet, run as written (addresses and keys swapped for the emulator and a DashScope-strict
    fake), in a fresh interpreter whose HOME is empty: nothing is written outside the data directory."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## mem0: an engine option") :]
    snippet = re.search(r"^```python\n(.*?)^```", section, flags=re.M | re.S)
    assert snippet is not None
    emu = tablestore_emulator
    code = snippet.group(1)
    for old, new in {
        "https://my-instance.cn-hangzhou.ots.aliyuncs.com": emu.endpoint,
        '"my-instance"': repr(emu.instance_name),
        "my-access-key-id": emu.access_key_id,
        "my-access-key-secret": emu.access_key_secret,
        "sk-my-dashscope-key": fake_dashscope.api_key,
        "https://dashscope.aliyuncs.com/compatible-mode/v1": fake_dashscope.base_url,
    }.items():
        assert old in code, old
        code = code.replace(old, new)
    fake_dashscope.script_chat(extracted("Likes green tea"))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEM0_", "TABLESTORE_", "OPENAI_"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Likes green tea" in done.stdout
    assert not (home / ".mem0").exists(), "mem0's files stay in our data directory"


# --- mem0's filter dialect, answered by the provider over the typed store port (no LLM, no mem0 Memory) ---


def unit_vec(i: int, of: int = 200) -> list[float]:
    """Row ``i``'s vector: the further ``i``, the further from :data:`QUERY` (cosine falls with ``i``)."""
    return [1.0 - i / of, i / of] + [0.0] * (DIMS - 2)


QUERY = unit_vec(0)


@pytest.fixture(params=["tablestore", "embedded"])
def provider(request, tmp_path) -> Any:
    from tablestore_openmemory_mcp.mem0.providers import EmbeddedVectorStore, TablestoreVectorStore

    if request.param == "tablestore":
        emu = request.getfixturevalue("tablestore_emulator")
        store: Any = TablestoreVectorStore(**tablestore(emu, "dialect")["config"])
        store.flush = emu.flush_index
    else:
        store = EmbeddedVectorStore(path=str(tmp_path / "data"), vector_dimension=DIMS)
        store.flush = lambda: None
    try:
        yield store
    finally:
        store.close()


def fill(provider: Any) -> None:
    rows = {
        "m1": ({"data": "I like oolong tea", "user_id": "u1", "agent_id": "a1", "n": 1}, 1),
        "m2": ({"data": "Hiking in the Alps", "user_id": "u1", "agent_id": "a2", "n": 2}, 2),
        "m3": ({"data": "Sleeps eight hours", "user_id": "u2", "categories": ["health"], "n": 3}, 3),
        "m4": ({"data": "hiking with friends", "user_id": "u1", "agent_id": "a2", "run_id": "r1", "n": 4}, 4),
        "m5": ({"data": "paused note", "user_id": "u1", "agent_id": "a1", "state": "paused"}, 5),
        "m6": ({"data": "archived note", "user_id": "u1", "agent_id": "a1", "state": "archived"}, 6),
        "m7": ({"data": "deleted note", "user_id": "u1", "agent_id": "a1", "state": "deleted"}, 7),
        "m8": ({"data": "odd client", "user_id": "u3", "agent_id": "my agent"}, 8),  # no server client name
    }
    provider.insert([unit_vec(i) for _, i in rows.values()], [p for p, _ in rows.values()], list(rows))
    provider.flush()


def listed(provider: Any, **filters: Any) -> list[str]:
    return sorted(r.id for r in provider.list(filters=filters, top_k=100)[0])


def test_filter_dialect_on_list_search_and_keyword(provider, monkeypatch):
    from tablestore_openmemory_mcp.stores import row_format

    fill(provider)
    lemmatized: list[str] = []
    monkeypatch.setattr(row_format, "lemmatize", lambda text: lemmatized.append(text) or text)
    assert listed(provider, user_id="u1") == ["m1", "m2", "m4"]  # paused, archived and deleted stay hidden
    assert listed(provider, user_id="u1", n={"gt": 1, "lte": 3}) == ["m2"]
    assert listed(provider, user_id="u1", AND=[{"user_id": "u2"}]) == []  # never outside the scope
    assert listed(provider, user_id="u1", agent_id={"ne": "a1"}) == ["m2", "m4"]
    assert listed(provider, user_id="u1", agent_id="a2") == ["m2", "m4"]
    assert listed(provider, user_id="u1", agent_id="") == []  # an empty client narrows to nothing
    assert listed(provider, user_id="u3", agent_id="my agent") == ["m8"]
    assert listed(provider, user_id="u3", agent_id="a1") == []
    assert listed(provider, user_id="u1", run_id="*") == ["m4"]
    assert listed(provider, user_id="u1", run_id="r1") == ["m4"]
    assert listed(provider, user_id="u1", OR=[{"agent_id": "a1"}, {"run_id": "r1"}]) == ["m1", "m4"]
    assert listed(provider, user_id="u1", NOT=[{"agent_id": "a1"}]) == ["m2", "m4"]
    assert listed(provider, user_id="u1", data={"icontains": "ALPS"}) == ["m2"]
    assert listed(provider, user_id="u2", categories={"contains": "health"}) == ["m3"]
    assert listed(provider, user_id="u1", categories={"contains": "health"}) == []
    # states: a filter naming state sees them (rows without a stored state are active)
    assert listed(provider, user_id="u1", state="paused") == ["m5"]
    assert listed(provider, user_id="u1", state={"in": ["archived", "deleted"]}) == ["m6", "m7"]
    assert listed(provider, user_id="u1", state={"ne": "deleted"}) == ["m1", "m2", "m4", "m5", "m6"]
    assert listed(provider, user_id="u1", state={"eq": "active"}) == ["m1", "m2", "m4"]
    assert listed(provider, user_id="u1", state="*") == ["m1", "m2", "m4", "m5", "m6", "m7"]
    assert listed(provider, user_id="u1", state={"in": []}) == []
    assert listed(provider, user_id="u1", OR=[{"state": "paused"}, {"n": 1}], state="*") == ["m1", "m5"]

    def found(filters: dict[str, Any]) -> list[str]:
        return sorted(r.id for r in provider.search("q", QUERY, 10, filters))

    assert found({"user_id": "u1", "n": {"in": [1, 4]}}) == ["m1", "m4"]
    assert found({"user_id": "u1", "agent_id": "a2"}) == ["m2", "m4"]
    assert found({"user_id": "u1", "state": "archived"}) == ["m6"]
    assert found({"user_id": "nobody"}) == []
    hits = provider.search("q", QUERY, 10, {"user_id": "u1"})
    assert [r.id for r in hits] == ["m1", "m2", "m4"] and all(0 < r.score <= 1 for r in hits)
    assert hits[0].payload["data"] == "I like oolong tea" and hits[0].payload["agent_id"] == "a1"
    # BM25: alone (the residual checked on the rows read), and over the preceding search's candidates
    assert [h.id for h in provider.keyword_search("hiking", 10, {"user_id": "u1", "n": {"gte": 3}})] == ["m4"]
    provider.search("q", QUERY, 10, {"user_id": "u1", "agent_id": "a2"})
    scored = provider.keyword_search("hiking", 10, {"user_id": "u1", "agent_id": "a2"})
    assert sorted(h.id for h in scored) == ["m2", "m4"] and all(h.score > 0 for h in scored)
    assert "text_lemmatized" not in hits[0].payload and not any(lemmatized), "rows read are not lemmatized again"


def test_filters_the_store_cannot_answer_still_return_top_k(provider):
    """Only 3 of 120 rows match, and they are the furthest: the provider reads on until it has ``top_k``."""
    payloads = [{"data": f"note {i}", "user_id": "w", "keep": i >= 117} for i in range(120)]
    provider.insert([unit_vec(i) for i in range(120)], payloads, [f"w{i:03d}" for i in range(120)])
    provider.flush()
    assert [r.id for r in provider.search("q", QUERY, 2, {"user_id": "w", "keep": True})] == ["w117", "w118"]
    assert [r.id for r in provider.list({"user_id": "w", "keep": True}, top_k=2)[0]] == ["w117", "w118"]
    assert len(provider.list({"user_id": "w"}, top_k=7)[0]) == 7


def test_bad_dialect_gets_one_line_errors(provider):
    from tablestore_openmemory_mcp.errors import UserInputError

    fill(provider)
    with pytest.raises(UserInputError, match="needs a user_id"):
        provider.list({"user_id": {"in": ["u1", "u2"]}})  # the user must be named, not matched
    with pytest.raises(UserInputError, match="user_id 'alice smith' may contain only letters"):
        provider.search("q", QUERY, 5, {"user_id": "alice smith"})  # a user id is a key: checked as the server's
    with pytest.raises(UserInputError, match=r"unsupported filter operator\(s\) \['regex'\]"):
        provider.search("q", QUERY, 5, {"user_id": "u1", "OR": [{"data": {"regex": "x"}}]})
    with pytest.raises(ValueError, match="list"):
        provider.list({"user_id": "u1", "n": {"in": 3}})
