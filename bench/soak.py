"""Soak: steady mixed load while the builder republishes, a corrupt version now and then.

Run: python -m bench.soak [--swaps 20 --interval 10 --rate 40]  (minutes; not in CI)
Writes bench/results/soak.md and .json: failed requests (503 shedding counted apart),
versions served, refused versions, and the server's resident memory after 1 and N swaps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from bench.service_load import Server, start_dotcos
from index_builder.artifact.layout import read_current, write_atomic
from index_builder.synthetic import TwoTowerSpec, two_tower


def rss_mb(server: Server) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Load:
    """Requests at a steady rate from a few threads: search, batch search and similar, in turn."""

    def __init__(self, url: str, queries: np.ndarray, rate: float, threads: int = 4) -> None:
        self.url, self.queries, self.interval = url, queries, threads / rate
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self.versions: Counter[str] = Counter()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _request(self, client: httpx.Client, i: int) -> httpx.Response:
        q = self.queries[i % len(self.queries)].tolist()
        kind = i % 3
        if kind == 0:
            return client.post("/v1/collections/soak/search", json={"vector": q, "k": 10, "metric": "cosine"})
        if kind == 1:
            return client.post("/v1/collections/soak/search/batch", json={"vectors": [q] * 4, "k": 10})
        return client.post("/v1/collections/soak/similar", json={"id": str(i % 1000), "k": 10})

    def _run(self, slot: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = slot
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    response = self._request(client, i)
                    with self.lock:
                        self.statuses[response.status_code] += 1
                        if response.status_code == 200:
                            self.versions[response.json()["version"]] += 1
                        elif response.status_code != 503:
                            self.failures.append(response.text[:200])
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.failures.append(repr(exc))
                i += len(self.threads)
                time.sleep(max(0.0, self.interval - (time.monotonic() - started)))


def build(root: Path, docs: Path, seed: int) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "index_builder",
            "build",
            "--input",
            str(docs),
            "--name",
            "soak",
            "--root",
            str(root),
            "--index",
            "hnsw",
            "--seed",
            str(seed),
            "--quiet",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def publish_corrupt(root: Path, name: str) -> None:
    """A complete version whose index bytes no longer match the manifest, made active."""
    current = root / "soak" / "versions" / read_current(root, "soak")
    target = current.parent / name
    shutil.copytree(current, target)
    index = target / "dot.faiss"
    index.chmod(0o644)
    data = bytearray(index.read_bytes())
    data[100:164] = bytes(64)
    index.write_bytes(bytes(data))
    (target / "manifest.json").chmod(0o644)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = name
    (target / "manifest.json").write_text(json.dumps(manifest))
    write_atomic(root / "soak" / "CURRENT", name)


def wait_version(client: httpx.Client, wanted: str | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/v1/collections/soak").json().get("version") != wanted and time.monotonic() < deadline:
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--corrupt-every", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("bench/.work/soak"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    docs, queries = two_tower(TwoTowerSpec(docs=50_000, queries=200, dim=64, seed=5))
    np.save(args.workdir / "docs.npy", docs)
    root = args.workdir / "indexes"
    build(root, args.workdir / "docs.npy", 0)
    server = start_dotcos(root, args.workdir / "server.log", {"DOTCOS_RELOAD_INTERVAL": "0.5"})
    load = Load(server.url, queries, args.rate)
    memory: dict[int, float] = {}
    refused = 0
    for thread in load.threads:
        thread.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for swap in range(1, args.swaps + 1):
                time.sleep(args.interval)
                if swap % args.corrupt_every == 0:
                    publish_corrupt(root, f"corrupt-{swap}")
                    refused += 1
                    time.sleep(2)
                build(root, args.workdir / "docs.npy", swap)
                wait_version(client, read_current(root, "soak"))
                subprocess.run(
                    [sys.executable, "-m", "index_builder", "gc", "--root", str(root), "--name", "soak", "--keep", "2"],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                memory[swap] = round(rss_mb(server), 1)
                print(f"swap {swap}: {read_current(root, 'soak')}, rss {memory[swap]} MB", flush=True)
            metrics = client.get("/metrics").text
    finally:
        load.stop.set()
        for thread in load.threads:
            thread.join()
        server.stop()
    refused_seen = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("dotcos_reloads_total") and 'outcome="refused"' in line
    )
    version_bytes = sum(p.stat().st_size for p in (root / "soak" / "versions" / read_current(root, "soak")).iterdir())
    result = {
        "swaps": args.swaps,
        "interval_s": args.interval,
        "rate_per_s": args.rate,
        "requests": dict(load.statuses),
        "failed": len(load.failures),
        "failures": load.failures[:10],
        "versions_served": len(load.versions),
        "corrupt_published": refused,
        "refused_by_service": refused_seen,
        "rss_mb_after_swap": memory,
        "version_size_mb": round(version_bytes / 2**20, 1),
    }
    write(args.out, result)


def write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    memory = result["rss_mb_after_swap"]
    first, last = memory[min(memory)], memory[max(memory)]
    lines = [
        "# Soak: mixed load across rebuilds",
        "",
        f"{result['swaps']} republishes every {result['interval_s']} s under {result['rate_per_s']} requests/s "
        "(search, batch search, similar in turn); a corrupt version pushed every few swaps; `gc --keep 2` after "
        "each build.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requests by status | {result['requests']} |",
        f"| failed requests (not 200, not 503) | {result['failed']} |",
        f"| versions that answered | {result['versions_served']} |",
        f"| corrupt versions pushed / refused by the service | {result['corrupt_published']} / "
        f"{result['refused_by_service']:.0f} |",
        f"| server RSS after swap 1 | {first} MB |",
        f"| server RSS after swap {max(memory)} | {last} MB |",
        f"| size of one version on disk | {result['version_size_mb']} MB |",
    ]
    (out / "soak.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
