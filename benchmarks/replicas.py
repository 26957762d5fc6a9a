"""Scale-out check and benchmark of issue 14: replicas behind Debian's nginx on one Tablestore (the emulator).

``python -m benchmarks.replicas`` (root installs nginx when missing) runs, on 3 replicas started from the
installed console script with the same TABLESTORE_* settings, the emulator with an index delay, and nginx configured
with deploy/nginx.conf:

1. throughput: the same per-user add/search/update mix through nginx routed to 1 replica, then to all of them;
2. SSE through nginx (sticky: the stream and its POSTs reach one replica), to find which replica holds SSE;
3. failover: users work through nginx (round robin) while that replica is SIGKILLed mid-run; a failed call is
   retried once, by a new request;
4. races: one user's adds of the same text on two replicas at once, of different texts, and updates of one memory
   from two replicas (a conflict is retried, as the tool error says);
5. checks: every acknowledged memory is there exactly once with its last acknowledged text, listed through nginx
   and through each live replica; each memory's history reads the same on every live replica; update chains are
   linear (no update lost).

The clients speak stateless streamable HTTP as raw JSON-RPC POSTs (httpx), so client overhead stays small next to
the servers'. tests/test_replicas.py runs a short version in the default suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import Client
from mcp.client.sse import sse_client
from tests.fakes.openai_server import FakeOpenAI
from tests.nginx_process import Nginx, ensure_nginx
from tests.server_process import HttpServer, llm_env, server_env, tablestore_env
from tests.tablestore_emulator import TablestoreEmulator

from benchmarks.core import sentence

PROTOCOL_VERSION = "2025-06-18"
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": PROTOCOL_VERSION,
}
CALL_TIMEOUT = 60.0
CONFLICT_RETRIES = 30
CLIENT = "replicas"
#: Prefix of a problem that involves an add cut between its writes by the SIGKILL and then retried (a second copy, or
#: no ADD history). Fixed and pinned by tests/test_replicas.py (the cut tests): still a problem, labelled as such.
KNOWN_GAP = "known gap (add cut mid-write, retried): "
MIX = {"add": 50, "search": 30, "update": 20}


class CallFailed(Exception):
    """The call did not reach a result: connection error, HTTP error or JSON-RPC error (worth one retry)."""


class ToolFailed(Exception):
    """The tool answered with an error (isError); the message is the tool's."""


# --- a minimal stateless streamable-HTTP client ----------------------------------------------------------------


def _message(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC answer, whether sent as JSON or as one SSE ``data:`` line."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:"):
                payload = json.loads(line[5:])
                if "result" in payload or "error" in payload:
                    return dict(payload)
        raise CallFailed(f"no JSON-RPC answer in the event stream: {response.text[:200]!r}")
    return dict(response.json())


async def call_tool(http: httpx.AsyncClient, base: str, user: str, tool: str, arguments: dict[str, Any]) -> Any:
    """One tools/call on ``base`` (nginx or a replica) as ``user``; the structured result."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
    try:
        with anyio.fail_after(CALL_TIMEOUT):
            response = await http.post(f"{base}/mcp/{CLIENT}/http/{user}", json=body, headers=HEADERS)
    except (httpx.HTTPError, TimeoutError) as exc:
        raise CallFailed(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise CallFailed(f"HTTP {response.status_code}: {response.text[:200]}")
    message = _message(response)
    if "error" in message:
        raise CallFailed(f"JSON-RPC error {message['error']}")
    result = message["result"]
    if result.get("isError"):
        raise ToolFailed(result["content"][0]["text"] if result.get("content") else str(result))
    return result["structuredContent"]


# --- the record of what clients were told ------------------------------------------------------------------------


@dataclass
class Ledger:
    """What each user was told (acknowledged), and what went wrong, for the checks after the run."""

    acked: dict[str, dict[str, str]] = field(default_factory=dict)  # user -> memory id -> last acknowledged text
    attempted: dict[str, set[str]] = field(default_factory=dict)  # user -> every text sent (acked or not)
    ops: int = 0
    retries: int = 0
    conflicts: int = 0  # update conflicts answered "try again" (and retried)
    retried: set[str] = field(default_factory=set)  # texts whose add or update call was retried
    failed: list[str] = field(default_factory=list)  # calls that failed twice (not acknowledged)
    problems: list[str] = field(default_factory=list)  # wrong answers seen during the run
    updates: dict[str, tuple[str, str, list[str]]] = field(default_factory=dict)  # id -> (user, first text, acked)

    def memories(self, user: str) -> dict[str, str]:
        return self.acked.setdefault(user, {})


async def with_retry(ledger: Ledger, label: str, call: Callable[[], Awaitable[Any]], text: str = "") -> Any:
    """Call; on a failed call (not a tool error) retry once with a new request, as a client would."""
    try:
        return await call()
    except CallFailed:
        ledger.retries += 1
        ledger.retried.add(text)
    try:
        return await call()
    except CallFailed as exc:
        ledger.failed.append(f"{label}: {exc}")
        return None


def _acknowledge_add(ledger: Ledger, user: str, text: str, result: Any) -> None:
    events = result["events"]
    if len(events) != 1 or events[0]["memory"] != text or events[0]["event"] not in ("ADD", "NONE"):
        ledger.problems.append(f"{user}: add of {text!r} answered {events}")
        return
    ledger.memories(user)[events[0]["id"]] = text


async def user_session(
    http: httpx.AsyncClient, base: str, user: str, ops: int, seed: int, ledger: Ledger, progress: Callable[[], None]
) -> None:
    """One user's sequential add/search/update mix through ``base``, each call retried once on failure."""
    rng = random.Random(seed)
    mine = ledger.memories(user)
    attempted = ledger.attempted.setdefault(user, set())
    for step in range(ops):
        op = rng.choices(list(MIX), weights=list(MIX.values()))[0] if mine else "add"
        text = f"{user} #{step}: {sentence(rng)}"
        try:
            if op == "add":
                attempted.add(text)
                args = {"text": text, "infer": False}
                result = await with_retry(
                    ledger, f"{user} add", partial(call_tool, http, base, user, "add_memories", args), text
                )
                if result is not None:
                    _acknowledge_add(ledger, user, text, result)
            elif op == "search":
                args = {"query": text, "limit": 5}
                result = await with_retry(
                    ledger, f"{user} search", partial(call_tool, http, base, user, "search_memories", args)
                )
                foreign = [hit for hit in (result or {}).get("results", []) if hit["id"] not in mine]
                if foreign and not ledger.failed:
                    gap = KNOWN_GAP if all(hit["memory"] in ledger.retried for hit in foreign) else ""
                    ids = [hit["id"] for hit in foreign]
                    ledger.problems.append(f"{gap}{user}: search returned ids that are not the user's: {ids}")
            else:
                memory_id = rng.choice(sorted(mine))
                attempted.add(text)
                args = {"memory_id": memory_id, "text": text}
                result = await with_retry(
                    ledger, f"{user} update", partial(call_tool, http, base, user, "update_memory", args), text
                )
                if result is not None:
                    mine[memory_id] = text
        except ToolFailed as exc:
            ledger.problems.append(f"{user} {op}: tool error: {exc}")
        ledger.ops += 1
        progress()


async def run_users(
    http: httpx.AsyncClient,
    base: str,
    prefix: str,
    users: int,
    ops: int,
    ledger: Ledger,
    on_progress: Callable[[int], None] = lambda done: None,
) -> float:
    """``users`` concurrent sessions of ``ops`` calls each; the wall time in seconds."""
    start = time.perf_counter()

    def progress() -> None:
        on_progress(ledger.ops)

    async with anyio.create_task_group() as tg:
        for index in range(users):
            tg.start_soon(user_session, http, base, f"{prefix}{index}", ops, index, ledger, progress)
    return time.perf_counter() - start


# --- races on two replicas ---------------------------------------------------------------------------------------


async def race_same_text(
    http: httpx.AsyncClient, bases: list[str], user: str, texts: int, copies: int, ledger: Ledger
) -> None:
    """``copies`` adds of each text at once, alternating between replicas: one memory per text, one ADD."""
    outcomes: dict[str, list[Any]] = {f"{user} same text {t}": [] for t in range(texts)}
    ledger.attempted.setdefault(user, set()).update(outcomes)

    async def add(text: str, base: str) -> None:
        args = {"text": text, "infer": False}
        result = await with_retry(
            ledger, f"{user} race add", partial(call_tool, http, base, user, "add_memories", args)
        )
        if result is not None:
            outcomes[text].append(result["events"][0])

    async with anyio.create_task_group() as tg:
        for text in outcomes:
            for copy in range(copies):
                tg.start_soon(add, text, bases[copy % len(bases)])
    for text, events in outcomes.items():
        ids = {event["id"] for event in events}
        added = sum(event["event"] == "ADD" for event in events)
        if len(ids) != 1 or added != 1:
            ledger.problems.append(f"{user}: {copies} racing adds of {text!r} gave ids {ids} with {added} ADD")
        for event in events:
            ledger.memories(user)[event["id"]] = text


async def race_distinct_texts(http: httpx.AsyncClient, bases: list[str], user: str, count: int, ledger: Ledger) -> None:
    """Different texts added at once on two replicas by one user: every one stored."""
    attempted = ledger.attempted.setdefault(user, set())

    async def add(index: int) -> None:
        text = f"{user} distinct {index}"
        attempted.add(text)
        base = bases[index % len(bases)]
        args = {"text": text, "infer": False}
        result = await with_retry(
            ledger, f"{user} race add", partial(call_tool, http, base, user, "add_memories", args)
        )
        if result is not None:
            _acknowledge_add(ledger, user, text, result)

    async with anyio.create_task_group() as tg:
        for index in range(count):
            tg.start_soon(add, index)


async def race_updates(http: httpx.AsyncClient, bases: list[str], user: str, rounds: int, ledger: Ledger) -> None:
    """Two writers on two replicas update one memory ``rounds`` times each; a conflict is retried."""
    first = f"{user} shared memory"
    ledger.attempted.setdefault(user, set()).add(first)
    added = await with_retry(
        ledger, f"{user} add", lambda: call_tool(http, bases[0], user, "add_memories", {"text": first, "infer": False})
    )
    if added is None:
        return
    memory_id = added["events"][0]["id"]
    acked: list[str] = []
    ledger.updates[memory_id] = (user, first, acked)

    async def writer(tag: str, base: str) -> None:
        for index in range(rounds):
            text = f"{user} shared memory, {tag} v{index}"
            ledger.attempted[user].add(text)
            args = {"memory_id": memory_id, "text": text}
            for _ in range(CONFLICT_RETRIES):
                try:
                    done = await with_retry(
                        ledger, f"{user} update", partial(call_tool, http, base, user, "update_memory", args)
                    )
                except ToolFailed as exc:
                    if "try again" not in str(exc):
                        ledger.problems.append(f"{user}: update failed: {exc}")
                        return
                    ledger.conflicts += 1
                    continue
                if done is not None:
                    acked.append(text)
                break

    async with anyio.create_task_group() as tg:
        for index, base in enumerate(bases[:2]):
            tg.start_soon(writer, "ab"[index], base)
    if acked:
        ledger.memories(user)[memory_id] = acked[-1]  # provisional: the true last one is the chain's end
    ledger.updates[memory_id] = (user, first, acked)


# --- checks ------------------------------------------------------------------------------------------------------


async def list_all(http: httpx.AsyncClient, base: str, user: str) -> dict[str, str]:
    """Every memory in the user's scope (all pages), id -> text."""
    found: dict[str, str] = {}
    cursor: str | None = None
    while True:
        args: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = await call_tool(http, base, user, "list_memories", args)
        for item in page["memories"]:
            if item["id"] in found:
                raise AssertionError(f"{user}: {item['id']} listed twice on {base}")
            found[item["id"]] = item["memory"]
        cursor = page.get("next_cursor")
        if not cursor:
            return found


def _check_listing(ledger: Ledger, user: str, label: str, listed: dict[str, str]) -> list[str]:
    problems: list[str] = []
    texts = Counter(listed.values())
    problems += [
        f"{KNOWN_GAP if text in ledger.retried else ''}{user} via {label}: {text!r} stored {n} times"
        for text, n in texts.items()
        if n > 1
    ]
    for memory_id, text in ledger.acked.get(user, {}).items():
        if memory_id in ledger.updates:
            continue  # racing updates: checked against its history
        if listed.get(memory_id) != text:
            problems.append(
                f"{user} via {label}: acknowledged {memory_id} {text!r} listed as {listed.get(memory_id)!r}"
            )
    sent = ledger.attempted.get(user, set())
    unexpected = [t for i, t in listed.items() if i not in ledger.acked.get(user, {}) and t not in sent]
    if unexpected:
        problems.append(f"{user} via {label}: memories nobody added: {unexpected[:3]}")
    return problems


def _check_chain(
    memory_id: str, first: str, acked: list[str], history: list[dict[str, Any]], current: str
) -> list[str]:
    """Each acknowledged update recorded once, each one replacing the text before it: a single chain."""
    updates = [entry for entry in history if entry["event"] == "UPDATE"]
    following = {entry["old_memory"]: entry["new_memory"] for entry in updates}
    problems: list[str] = []
    if len(following) != len(updates):
        problems.append(f"{memory_id}: two updates replaced the same text (an update was lost): {updates}")
    if sorted(entry["new_memory"] for entry in updates) != sorted(acked):
        problems.append(f"{memory_id}: {len(acked)} updates acknowledged, history has {len(updates)}")
    text, seen = first, 0
    while text in following and seen <= len(updates):
        text, seen = following[text], seen + 1
    if seen != len(updates) or text != current:
        problems.append(f"{memory_id}: history chain ends at {text!r} after {seen} updates; current text {current!r}")
    return problems


async def verify(
    http: httpx.AsyncClient, ledger: Ledger, via: dict[str, str], replicas: dict[str, str], parallel: int = 8
) -> list[str]:
    """Problems found (empty: all good). ``via``: label -> base URL to list through; ``replicas``: live replicas."""
    problems: list[str] = []
    limiter = anyio.Semaphore(parallel)

    async def listing(user: str, label: str, base: str, into: dict[str, dict[str, str]]) -> None:
        async with limiter:
            into[label] = await list_all(http, base, user)

    async def history(user: str, memory_id: str, label: str, base: str, into: dict[str, Any]) -> None:
        async with limiter:
            try:
                answer = await call_tool(http, base, user, "memory_history", {"memory_id": memory_id})
            except ToolFailed as exc:  # a listed memory without history: reported below, never a crash
                into[label] = f"tool error: {exc}"
                return
            into[label] = answer["history"]

    for user in sorted(ledger.acked):
        listings: dict[str, dict[str, str]] = {}
        async with anyio.create_task_group() as tg:
            for label, base in via.items():
                tg.start_soon(listing, user, label, base, listings)
        for label, listed in listings.items():
            problems += _check_listing(ledger, user, label, listed)
        reference = next(iter(listings.values()))
        problems += [f"{user}: listing via {label} differs" for label, other in listings.items() if other != reference]
        histories: dict[str, dict[str, Any]] = {memory_id: {} for memory_id in reference}
        async with anyio.create_task_group() as tg:
            for memory_id, per_replica in histories.items():
                for label, base in replicas.items():
                    tg.start_soon(history, user, memory_id, label, base, per_replica)
        for memory_id, per_replica in histories.items():
            first = next(iter(per_replica.values()))
            if any(other != first for other in per_replica.values()):
                problems.append(f"{user}: history of {memory_id} differs between replicas: {per_replica}")
            if not isinstance(first, list) or not first or first[0]["event"] != "ADD":
                gap = KNOWN_GAP if reference[memory_id] in ledger.retried else ""
                problems.append(f"{gap}{user}: history of {memory_id} does not start with ADD: {first}")
                continue
            if memory_id in ledger.updates:
                _, start, acked = ledger.updates[memory_id]
                problems += _check_chain(memory_id, start, acked, first, reference[memory_id])
    return problems


# --- the cluster -------------------------------------------------------------------------------------------------


@dataclass
class Cluster:
    emulator: TablestoreEmulator
    replicas: list[HttpServer]
    nginx: Nginx  # routes to every replica
    nginx_single: Nginx  # routes to replicas[0] only (the 1-replica throughput run)

    def live(self) -> list[HttpServer]:
        return [server for server in self.replicas if server.process.poll() is None]


@contextlib.contextmanager
def cluster(
    tmp: Path, nginx_binary: str, replicas: int = 3, index_delay: float = 1.0, **extra_env: Any
) -> Iterator[Cluster]:
    """The emulator (index delay), the fake embedder, ``replicas`` servers started at once, and two nginx.

    Everything started here is stopped on exit, also when starting something else failed.
    """
    with contextlib.ExitStack() as stack:
        emulator = TablestoreEmulator(access_key_id="replicas", access_key_secret="secret", instance_name="replicas")
        emulator.index_delay = index_delay
        emulator.start()
        stack.callback(emulator.stop)
        fake = FakeOpenAI().start()
        stack.callback(fake.stop)
        servers: list[HttpServer] = []
        for index in range(replicas):  # all start at once: they race to create the table and index
            home = tmp / f"replica{index}"
            home.mkdir(parents=True, exist_ok=True)
            env = server_env(
                home,
                **llm_env(fake, LLM_PROVIDER="none", EMBEDDER_PROVIDER="openai"),
                **tablestore_env(emulator),
                MEMORY_STORE="tablestore",
                TABLESTORE_VECTOR_DIMENSION=64,
                **extra_env,
            )
            server = HttpServer(env, home, transport="streamable-http")
            stack.callback(server.stop)
            servers.append(server)
        for server in servers:
            server.wait_ready()
        ports = [server.port for server in servers]
        nginx = stack.enter_context(Nginx(nginx_binary, tmp, ports, "nginx-all"))
        single = stack.enter_context(Nginx(nginx_binary, tmp, ports[:1], "nginx-one"))
        yield Cluster(emulator, servers, nginx, single)
        if emulator.last_internal_error is not None:
            raise AssertionError(f"tablestore emulator bug: {emulator.last_internal_error!r}")


async def sse_replica(cluster: Cluster, user: str, ledger: Ledger) -> HttpServer | None:
    """An SSE session through nginx (several calls: its POSTs must reach the stream's replica); the replica."""
    holders: list[HttpServer] = []
    async with Client(sse_client(f"{cluster.nginx.url}/mcp/{CLIENT}/sse/{user}")) as session:
        for index in range(3):
            text = f"{user} over sse {index}"
            ledger.attempted.setdefault(user, set()).add(text)
            result = await session.call_tool("add_memories", {"text": text, "infer": False})
            if result.is_error:
                ledger.problems.append(f"{user}: SSE add through nginx failed: {result.content}")
                return None
            _acknowledge_add(ledger, user, text, result.structured_content)
        async with httpx.AsyncClient(timeout=10.0) as http:
            for server in cluster.live():  # the stream is a connection in progress on exactly one replica
                if (await http.get(f"{server.url}/health")).json().get("connections", 0) >= 1:
                    holders.append(server)
    if len(holders) != 1:
        ledger.problems.append(f"{user}: the SSE stream was open on {len(holders)} replicas, expected exactly 1")
    return holders[0] if len(holders) == 1 else None


# --- the benchmark -----------------------------------------------------------------------------------------------


def cpu_seconds(cluster: Cluster) -> tuple[float, float]:
    """CPU time of this process (clients, emulator, fake embedder) and of the live replicas, from /proc."""
    here = sum(os.times()[:2])
    there = 0.0
    for server in cluster.live():
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            there += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return here, there


@dataclass
class Outcome:
    throughput: list[tuple[str, int, int, float, float, float]]  # (label, users, ops, wall, cpu here, cpu replicas)
    ledger: Ledger
    killed_at: int
    killed: str
    sse_sticky: bool  # the SSE session's replica was found (and it was the one killed)
    problems: list[str]
    gaps: list[str]  # the problems labelled KNOWN_GAP (cut-and-retried adds; counted in problems too)


async def scenario(cluster: Cluster, users: int, ops: int, race_rounds: int = 5, throughput: bool = True) -> Outcome:
    """Throughput (optional), SSE, failover with a SIGKILL, races, then the checks."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(timeout=CALL_TIMEOUT, limits=limits) as http:
        rows: list[tuple[str, int, int, float, float, float]] = []
        if throughput:
            one, many = ("1 replica", cluster.nginx_single), (f"{len(cluster.replicas)} replicas", cluster.nginx)
            # 1, N, N, 1: the table grows between runs (search reads more rows), and this order favours neither
            for label, front in (one, many, many, one):
                measured = Ledger()
                here, there = cpu_seconds(cluster)
                wall = await run_users(http, front.url, f"tp{len(rows)}-u", users, ops, measured)
                after_here, after_there = cpu_seconds(cluster)
                rows.append((label, users, measured.ops, wall, after_here - here, after_there - there))
                if measured.failed or measured.problems:
                    raise AssertionError(f"throughput run {label}: {measured.failed[:3]} {measured.problems[:3]}")

        ledger = Ledger()
        sticky = await sse_replica(cluster, "sse-user", ledger)
        victim = sticky or cluster.replicas[1]
        kill_after = max(1, users * ops * 2 // 5)
        reached = anyio.Event()
        killed_at = -1

        def on_progress(done: int) -> None:
            if done >= kill_after:
                reached.set()

        async def killer() -> None:
            nonlocal killed_at
            await reached.wait()
            victim.process.kill()  # SIGKILL: no drain, calls in flight are cut
            killed_at = ledger.ops

        async with anyio.create_task_group() as tg:
            tg.start_soon(killer)
            await run_users(http, cluster.nginx.url, "u", users, ops, ledger, on_progress)
            reached.set()  # a short run that never reached the mark still ends
        victim.process.wait(30)

        # A new SSE session after the failover lands on a live replica and keeps its POSTs there.
        await sse_replica(cluster, "sse-after-kill", ledger)

        live = cluster.live()
        bases = [server.url for server in live]
        await race_same_text(http, bases, "racer", texts=4, copies=6, ledger=ledger)
        await race_distinct_texts(http, bases, "racer", count=8, ledger=ledger)
        await race_updates(http, bases, "updater", rounds=race_rounds, ledger=ledger)

        via = {"nginx": cluster.nginx.url} | {f"replica:{server.port}": server.url for server in live}
        replicas = {f"replica:{server.port}": server.url for server in live}
        found = ledger.problems + await verify(http, ledger, via, replicas)
    problems = list(found)  # a cut-and-retried add must be stored once with its history, like any other
    gaps = [problem for problem in found if problem.startswith(KNOWN_GAP)]
    return Outcome(rows, ledger, killed_at, f"replica:{victim.port}", sticky is not None, problems, gaps)


def report(outcome: Outcome, index_delay: float) -> str:
    lines = [f"Tablestore emulator, index delay {index_delay:g} s; streamable HTTP through nginx; infer=false", ""]
    if outcome.throughput:
        lines += [
            "| behind nginx | users | ops | wall s | ops/s | CPU s: clients + emulator | CPU s: replicas |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        totals: dict[str, list[float]] = {}
        for label, u, n, wall, here, there in outcome.throughput:
            lines.append(f"| {label} | {u} | {n} | {wall:.1f} | {n / wall:.0f} | {here:.1f} | {there:.1f} |")
            totals.setdefault(label, [0.0, 0.0])
            totals[label][0] += n
            totals[label][1] += wall
        lines += [
            f"| **{label}, all runs** | | {n:.0f} | {wall:.1f} | {n / wall:.0f} | | |"
            for label, (n, wall) in totals.items()
        ]
        lines.append("")
    ledger = outcome.ledger
    memories = sum(len(m) for m in ledger.acked.values())
    lines.append(
        f"failover: {outcome.killed} SIGKILLed after {outcome.killed_at} of {ledger.ops} calls; "
        f"{ledger.retries} retried, {len(ledger.failed)} failed twice; {memories} acknowledged memories checked"
    )
    sse = "the SSE session's replica" if outcome.sse_sticky else "SSE replica not identified, replica 1"
    lines.append(f"killed: {sse}; racing updates: {ledger.conflicts} conflicts retried")
    lines.append(f"problems: {len(outcome.problems)}")
    lines += [f"- {problem}" for problem in outcome.problems[:20]]
    lines.append(f"known gaps hit (adds cut between their writes, then retried): {len(outcome.gaps)}")
    lines += [f"- {gap.removeprefix(KNOWN_GAP)}" for gap in outcome.gaps[:10]]
    lines += [f"- failed: {failure}" for failure in ledger.failed[:10]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--users", type=int, default=24)
    parser.add_argument("--ops", type=int, default=40, help="calls per user")
    parser.add_argument("--index-delay", type=float, default=1.0)
    options = parser.parse_args()
    binary, why = ensure_nginx()
    if binary is None:
        print(f"nginx unavailable: {why}", file=sys.stderr)
        return 2
    with (
        tempfile.TemporaryDirectory(prefix="replicas-bench-") as tmpdir,
        cluster(Path(tmpdir), binary, options.replicas, options.index_delay) as running,
    ):
        outcome = anyio.run(scenario, running, options.users, options.ops)
    print(report(outcome, options.index_delay))
    return 1 if outcome.problems or outcome.ledger.failed else 0


if __name__ == "__main__":
    sys.exit(main())
