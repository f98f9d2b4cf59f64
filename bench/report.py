"""Benchmark output: a Markdown table, the raw JSON and PNG plots, all from one run's numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TARGET_RECALL = 0.95


def _best_at_target(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    good = [r for r in rows if r["recall"] >= TARGET_RECALL]
    return max(good, key=lambda r: r["qps_single"]) if good else None


def _inprocess_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| impl | config | metric | knob at recall ≥ 0.95 | recall@10 | QPS 1 query/call, 1 thread | "
        "QPS batched | build s | bytes/vector |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["impl"], row["config"], row["metric"]), []).append(row)
    for (impl, config, metric), group in groups.items():
        best = _best_at_target(group) or max(group, key=lambda r: r["recall"])
        knob = f"{best['param']}={best['value']}" if best["param"] else "exact"
        mark = "" if best["recall"] >= TARGET_RECALL else " (target not reached)"
        lines.append(
            f"| {impl} | {config} | {metric} | {knob}{mark} | {best['recall']:.3f} | {best['qps_single']:.0f} "
            f"| {best['qps_batch']:.0f} | {best.get('build_s', '')} | {best.get('bytes_per_vector', '')} |"
        )
    return lines


def _service_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| server | target | metric | clients | QPS | p50 ms | p95 ms | p99 ms | errors | client CPU share "
        "| × FAISS 1/call | × FAISS batched |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['target']} | {r.get('metric', '')} | {r['connections']} | {r['qps']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} "
            f"| {r['client_cpu_share']:.0%} | {r.get('x_faiss_single', '')} | {r.get('x_faiss_batch', '')} |"
        )
    return lines


def _plots(out: Path, name: str, inprocess: list[dict[str, Any]], service: list[dict[str, Any]]) -> None:
    metrics = sorted({r["metric"] for r in inprocess})
    fig, axes = plt.subplots(1, len(metrics) + 1, figsize=(6 * (len(metrics) + 1), 5))
    for ax, metric in zip(axes, metrics, strict=False):
        curves: dict[str, list[dict[str, Any]]] = {}
        for r in inprocess:
            if r["metric"] == metric:
                curves.setdefault(f"{r['impl']} {r['config']}", []).append(r)
        for label, pts in sorted(curves.items()):
            pts = sorted(pts, key=lambda r: r["recall"])
            ax.plot([p["recall"] for p in pts], [p["qps_single"] for p in pts], marker="o", label=label)
        ax.set(
            title=f"{name}: {metric}, recall@10 vs QPS (1 query/call, 1 thread)",
            xlabel="recall@10",
            ylabel="QPS",
            yscale="log",
        )
        ax.axvline(TARGET_RECALL, color="grey", linestyle=":")
        ax.legend(fontsize=7)
    ax = axes[-1]
    series: dict[str, list[dict[str, Any]]] = {}
    for r in service:
        series.setdefault(f"{r['server']} {r['target']} {r.get('metric', '')}", []).append(r)
    for label, pts in sorted(series.items()):
        ax.plot([p["connections"] for p in pts], [p["p99_ms"] for p in pts], marker="o", label=label)
    ax.set(title="p99 latency vs concurrent clients", xlabel="clients", ylabel="p99 ms", xscale="log", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=110)
    plt.close(fig)


def write(out: Path, name: str, payload: dict[str, Any]) -> None:
    """bench/results/<name>.md, .json and .png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    meta = payload["meta"]
    lines = [
        f"# dotcos benchmark: {name}",
        "",
        f"{meta['docs']} documents × {meta['dim']} dims, {meta['queries']} queries (one-query-per-call QPS "
        f"timed on the first {meta.get('single_queries', meta['queries'])}; every QPS figure repeats its pass "
        f"for at least {meta.get('min_seconds_per_qps', 0)} s); {meta['machine']}; "
        f"faiss {meta['faiss']}, run {meta['started']}. All ratios are measured in this run.",
        "",
        "## In-process: recall@10 against QPS",
        "",
        *_inprocess_table(payload["inprocess"]),
        "",
        "## Service under load (wrk)",
        "",
        *_service_table(payload["service"]),
        "",
    ]
    lines += ["## Notes", ""] + [f"- {note}" for note in payload.get("notes", [])]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    _plots(out, name, payload["inprocess"], payload["service"])
