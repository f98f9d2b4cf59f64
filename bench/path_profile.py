"""Where one search's server CPU goes, split by stage, under load.

Run: python -m bench.path_profile  (after bench.peers' data exists; needs py-spy, and perf for the
native split; writes bench/results/path_profile.md, .json and .png)

A dotcos server over the peers' data (HNSW32, SQ8 codes, efSearch 48) is driven by 1 and by 8
client threads sending JSON or binary bodies. Two views of the same load, both sampled from
outside the process:
- `perf record -e cpu-clock` (on-CPU time only) split by shared object: FAISS, the Python
  interpreter, numpy, the kernel (system calls, wake-ups), libc, the rest;
- `py-spy --gil` (only the thread holding the GIL is sampled: the Python side of the request)
  split by stage, each sample going to the innermost stage its stack passes through.
Each view is turned into microseconds per query with the server's CPU per query of the run.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from bench.peer_data import load_peer_data
from bench.peer_engines import dotcos_collection, dotcos_engines
from bench.service_load import BIN

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

EF = 48
# Innermost first: a sample belongs to the first stage whose marker its stack holds.
STAGES = (
    ("socket write (wakes the client)", ("JoinedWrites.flush",)),
    ("FAISS call (Python side)", ("replacement_search", "IndexIDMap.search")),
    ("exact rescoring", ("rescored_topk",)),
    ("query checks + preparation", ("Version.query", "Version.prepare")),
    ("body parsing", ("parse_search", "binary_search")),
    ("answer to hits + JSON", ("to_hits", "_result", "Reply.", "Response.")),
    ("query log + live recall", ("QueryLog.", "RecallMonitor.")),
    ("part search + merge", ("search_part", "LocalParts.answer", "Answer.")),
    ("coalescer + hand-offs", ("Coalescer.", "Future", "futures.py", "Searcher.")),
    ("handlers + front", ("handlers.py", "front.py")),
    ("ASGI layers (metrics, admission, limits)", ("observability.py", "admission.py", "limits.py", "app.py")),
    ("HTTP server (uvicorn, event loop)", ("httptools_impl", "uvicorn", "base_events", "runners.py", "events.py")),
)
OTHER_NATIVE = "other native (libc, orjson, uvloop, ...)"
DSOS = (("FAISS", "libfaiss"), ("Python interpreter", "libpython"), ("numpy", "_multiarray"), ("kernel", "kernel"))


def drive(port_search: Any, clients: int, seconds: float, queries: np.ndarray) -> int:
    searches = [port_search() for _ in range(clients)]
    counts = [0] * clients
    stop = threading.Event()

    def worker(slot: int) -> None:
        i = slot
        while not stop.is_set():
            searches[slot](queries[i % len(queries)], EF)
            counts[slot] += 1
            i += clients

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts)


def stage_of(stack: str) -> str:
    for name, markers in STAGES:
        if any(marker in stack for marker in markers):
            return name
    return "other Python"


def gil_split(raw: Path) -> dict[str, float]:
    shares: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        shares[stage_of(stack)] += int(count)
    total = sum(shares.values()) or 1
    return {name: n / total for name, n in shares.most_common()}


def dso_split(data: Path) -> dict[str, float]:
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso", "--stdio", "-g", "none"],
        capture_output=True,
        text=True,
    ).stdout
    shares: collections.Counter[str] = collections.Counter()
    for line in report.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].endswith("%"):
            name = next(
                (label for label, marker in DSOS if marker in parts[1]), "other native (libc, orjson, uvloop, ...)"
            )
            shares[name] += float(parts[0].rstrip("%")) / 100
    return dict(shares.most_common())


def profile(engine: Any, server: Any, queries: np.ndarray, clients: int, seconds: float, work: Path) -> dict[str, Any]:
    pid = server.process.pid
    drive(engine.client, clients, 1.0, queries)
    cpu0, started = server.cpu_seconds(), time.perf_counter()
    done = [0]
    load = threading.Thread(target=lambda: done.__setitem__(0, drive(engine.client, clients, seconds, queries)))
    load.start()
    raw = work / f"gil-{clients}.txt"
    spy = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(int(seconds / 2))]
    subprocess.run(
        [*spy, "--rate", "2000", "--gil", "--nonblocking", "--format", "raw", "-o", str(raw)], capture_output=True
    )
    dsos: dict[str, float] = {}
    if shutil.which("perf"):
        data = work / f"perf-{clients}.data"
        perf = ["perf", "record", "-e", "cpu-clock", "-F", "2000", "-g", "-p", str(pid), "-o", str(data)]
        subprocess.run([*perf, "--", "sleep", str(max(1, int(seconds / 2) - 1))], capture_output=True)
        dsos = dso_split(data)
    load.join()
    cpu_us = (server.cpu_seconds() - cpu0) / max(done[0], 1) * 1e6
    return {
        "clients": clients,
        "qps": round(done[0] / (time.perf_counter() - started), 1),
        "cpu_us": round(cpu_us, 1),
        "native_us": {k: round(v * cpu_us, 1) for k, v in dsos.items()},
        "python_share": {k: round(v, 4) for k, v in gil_split(raw).items()},
    }


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Where a search's server CPU goes (dotcos, 50k x 384, HNSW32 SQ8, efSearch 48, cosine)",
        "",
        "`python -m bench.path_profile`. Native split: perf cpu-clock samples by shared object, as us per "
        "query. Python split: py-spy samples of the GIL-holding thread by stage (share of the Python side). "
        "Both profilers sample from outside but still cost the server time (perf's call graphs on this VM "
        "above all): CPU per query here runs 20-40 % above the unprofiled figures of peers.md, so read the "
        "shares, not the totals.",
        "",
    ]
    for r in rows:
        lines += [
            f"## {r['body']} body, {r['clients']} client(s): {r['qps']:,.0f} QPS, {r['cpu_us']:.0f} us CPU/query",
            "",
        ]
        if r["native_us"]:
            lines += ["| native | us/query |", "|---|---|"]
            lines += [f"| {k} | {v:.0f} |" for k, v in r["native_us"].items()]
            lines.append("")
        lines += ["| Python stage | share of GIL time |", "|---|---|"]
        lines += [f"| {k} | {v:.1%} |" for k, v in r["python_share"].items()]
        lines.append("")
    return "\n".join(lines)


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    fig, ax = plt.subplots(figsize=(10, 4))
    labels = [f"{r['body']}, {r['clients']} cl." for r in rows]
    bottom = np.zeros(len(rows))
    for name in dict.fromkeys(k for r in rows for k in r["native_us"]):
        values = np.array([r["native_us"].get(name, 0.0) for r in rows])
        ax.bar(labels, values, bottom=bottom, label=name)
        bottom += values
    ax.set(ylabel="server CPU us per query", title="native split of a search's CPU")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    data = load_peer_data()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        np.save(work / "docs.npy", data.docs)
        built = dotcos_collection(data, work / "root", work / "docs.npy", "sq8", ("--hnsw-codes", "sq8"))
        for body, binary in (("JSON", False), ("binary", True)):
            server, engines = dotcos_engines(work / "root", "sq8", body, built, {}, binary)
            try:
                for clients in (1, 8):
                    rows.append(
                        {"body": body, **profile(engines[1], server, data.queries, clients, args.seconds, work)}
                    )
                    print(json.dumps(rows[-1]), flush=True)
            finally:
                server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "path_profile.json").write_text(json.dumps({"rows": rows}, indent=1))
    (args.out / "path_profile.md").write_text(report(rows))
    plot(args.out / "path_profile.png", rows)
    print(report(rows))


if __name__ == "__main__":
    main()
