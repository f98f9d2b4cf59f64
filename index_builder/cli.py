"""`dotcos-build`: build, list, inspect, verify, activate, restore, snapshot, reapply and gc.

Exit codes (for schedulers): 0 success, 2 bad input or unknown collection/version,
1 any other failure (including a version that does not verify). Errors are one line
on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import faiss
from pydantic import ValidationError

from index_builder import commands, rollout
from index_builder.artifact.errors import DotcosError, InputError, NotFoundError
from index_builder.artifact.faults import arm
from index_builder.artifact.layout import check_name
from index_builder.attributes import AttributeSpec
from index_builder.indexes import FILTER_INDEX_MIN_ROWS, FILTER_INDEX_MODES, HNSW_CODES, KINDS, IndexOptions
from index_builder.pipeline import MIPS_MODES, BuildRequest, Sharding
from index_builder.progress import Progress
from index_builder.publish import check_writable
from index_builder.readers import ParquetColumns, input_format, resolve_paths
from index_builder.retrieval.spaces import parse_metric_list
from index_builder.settings import BuilderSettings
from index_builder.staging import InputSpec
from index_builder.synthetic import TwoTowerSpec

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
ROOT_HELP = "index root (default: $DOTCOS_INDEX_ROOT or ./indexes)"
DEFAULT_METRICS = "dot,cosine"
DEFAULT_INDEX = IndexOptions()
DEFAULT_COLUMNS = ParquetColumns()
"""The defaults of a build from --input; --from-current takes the active version's instead."""
VERSION_HELP = {
    "inspect": "version name (default: the active one)",
    "verify": "version name (default: the active one)",
    "activate": "the version to make active",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{self.prog}: {message}")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _position(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a journal position (0 or more), got {value}")
    return value


def _span(text: str) -> tuple[int, int]:
    first, sep, last = text.partition("..")
    if not sep or not first.isdigit() or not last.isdigit() or int(first) > int(last):
        raise argparse.ArgumentTypeError(f"expected FIRST..LAST journal positions, got {text!r}")
    return int(first), int(last)


def _add_lifecycle(sub: argparse._SubParsersAction[_Parser]) -> None:
    """restore, snapshot and reapply: going back, backing up, and undoing a set-aside."""
    restore = sub.add_parser("restore", help="publish the collection as it stood at a position, or from a snapshot")
    restore.add_argument("--name", required=True, help="collection name")
    restore.add_argument("--root", type=Path, help=ROOT_HELP)
    source = restore.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--position", type=_position, help="journal position: later changes are set aside (see `inspect`)"
    )
    source.add_argument("--snapshot", type=Path, help="a file written by `dotcos-build snapshot`")
    snapshot = sub.add_parser("snapshot", help="write the active version and its pending changes to one file")
    snapshot.add_argument("--name", required=True, help="collection name")
    snapshot.add_argument("--root", type=Path, help=ROOT_HELP)
    snapshot.add_argument("--out", type=Path, required=True, help="the snapshot file to write")
    reapply = sub.add_parser("reapply", help="apply set-aside changes again, as new changes")
    reapply.add_argument("--name", required=True, help="collection name")
    reapply.add_argument("--root", type=Path, help=ROOT_HELP)
    reapply.add_argument("--positions", type=_span, help="only those in FIRST..LAST (default: every set-aside change)")


def _add_serving(sub: argparse._SubParsersAction[_Parser]) -> None:
    """alias and route: more versions served at once, and how requests are spread over them."""
    alias = sub.add_parser("alias", help="serve another version beside the active one, under a name")
    alias.add_argument("--name", required=True, help="collection name")
    alias.add_argument("--root", type=Path, help=ROOT_HELP)
    what = alias.add_mutually_exclusive_group(required=True)
    what.add_argument("--set", metavar="ALIAS=VERSION", help="name a published version (e.g. candidate=2026...Z)")
    what.add_argument("--remove", metavar="ALIAS", help="stop serving the version under this name")
    route = sub.add_parser("route", help="split requests with a route key over versions, and shadow one")
    route.add_argument("--name", required=True, help="collection name")
    route.add_argument("--root", type=Path, help=ROOT_HELP)
    route.add_argument("--split", help="arm weights, e.g. current=90,candidate=10 (arms: current or an alias)")
    route.add_argument("--shadow", metavar="ARM", help="run a sample of live requests also on this arm's version")
    route.add_argument("--sample", type=float, default=0.05, help="share of requests shadowed (default 0.05)")
    route.add_argument("--no-shadow", action="store_true", help="stop shadowing")
    route.add_argument("--clear", action="store_true", help="remove the route: every request goes to current")


def _add_build(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("build", help="build and publish a new version of a collection")
    p.add_argument("--input", help=".npy/.parquet/.fvecs file, directory or glob")
    p.add_argument(
        "--from-current",
        action="store_true",
        help="instead of --input: the active version's documents with the change journal applied "
        "(metrics and index kind default to the active version's)",
    )
    pending = p.add_mutually_exclusive_group()
    pending.add_argument(
        "--changes-included-through",
        type=_position,
        metavar="POSITION",
        help="the input already holds the changes accepted through this journal position: they are folded, "
        "later ones stay pending (default: every pending change stays pending on the new version)",
    )
    pending.add_argument(
        "--discard-changes",
        action="store_true",
        help="set the pending changes aside instead of keeping them (`reapply` brings them back)",
    )
    p.add_argument("--ids", help="ids file(s), one id per line (default: parquet id column or row numbers)")
    p.add_argument("--name", required=True, help="collection name")
    p.add_argument("--root", type=Path, help=ROOT_HELP)
    p.add_argument(
        "--metrics",
        help=f"comma-separated: dot, cosine, norm_pow:ALPHA, norm_sigmoid, covariance (default {DEFAULT_METRICS})",
    )
    p.add_argument("--index", help=f"{'|'.join(KINDS)} or a FAISS index_factory string (default {DEFAULT_INDEX.kind})")
    p.add_argument(
        "--mips",
        choices=MIPS_MODES,
        default="none",
        help="l2: serve dot through an L2 index over the MIPS augmentation; ranged: one augmented "
        "index per norm range (--mips-ranges); auto: build raw inner product and both, keep the one "
        "reaching --target-recall cheapest",
    )
    p.add_argument("--mips-ranges", type=_positive, default=8, help="norm ranges of --mips ranged")
    p.add_argument("--hnsw-m", type=_positive, default=DEFAULT_INDEX.hnsw_m, help="HNSW links per node")
    p.add_argument(
        "--hnsw-codes",
        choices=sorted(HNSW_CODES),
        help=f"how the HNSW graph stores vectors (default {DEFAULT_INDEX.hnsw_codes}): sq8 and fp16 codes are "
        "scalar-quantized and rescored exactly from the float vectors (sq8 took 0.6-0.9x the CPU in bench.search_core)",
    )
    p.add_argument(
        "--ef-construction",
        type=_positive,
        default=DEFAULT_INDEX.ef_construction,
        help="HNSW candidate list while building",
    )
    p.add_argument("--nlist", type=_positive, help="IVF lists (default ~4*sqrt(n))")
    p.add_argument("--pq-m", type=_positive, help="PQ sub-quantizers (must divide the dimension)")
    p.add_argument("--pq-bits", type=_positive, default=DEFAULT_INDEX.pq_bits, help="bits per PQ code")
    p.add_argument("--refine-factor", type=_positive, help="candidates per result rescored exactly")
    p.add_argument(
        "--filter-index",
        choices=FILTER_INDEX_MODES,
        help=f"auto (default): each part of a graph index (hnsw) of at least {FILTER_INDEX_MIN_ROWS:,} rows gets, "
        "per metric, IVF lists over int8 codes that filtered searches take where the build measured them cheaper "
        "at the recall target, and an index of the documents of each keyword value carried by 5-50 %% of them, "
        "which filters requiring the value search; always: every part of a graph index; none: no part",
    )
    p.add_argument(
        "--train-size",
        type=_positive,
        default=DEFAULT_INDEX.train_size,
        help="vectors sampled to train IVF/PQ (raised to 39 x nlist, FAISS's minimum per list)",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_INDEX.seed, help="the same inputs and seed give the same index")
    p.add_argument(
        "--queries",
        help="user vectors for the recall self-check (default: the query log when it holds 100 vectors, "
        "else Gaussian proxies fitted to the documents)",
    )
    p.add_argument("--users", help="user vectors for the covariance metric (.npy or .fvecs)")
    p.add_argument("--selfcheck-queries", type=_positive, default=1000, help="queries of the recall self-check")
    p.add_argument(
        "--target-recall",
        type=float,
        default=0.95,
        help="recall@10 the default efSearch or nprobe must reach (the smallest that does is kept)",
    )
    p.add_argument("--id-column", default=None, help=f"parquet id column (default: {DEFAULT_COLUMNS.id_column})")
    p.add_argument(
        "--vector-column",
        default=DEFAULT_COLUMNS.vector_column,
        help="parquet vector column (a fixed-size list of floats)",
    )
    p.add_argument(
        "--attributes",
        help="filterable attributes: comma-separated columns of the parquet input, or of --attributes-file",
    )
    p.add_argument(
        "--attributes-file",
        help="attributes from a side file (.parquet or .jsonl) keyed by the id column; all its columns "
        "unless --attributes names some",
    )
    p.add_argument("--version", help="version name (default: UTC timestamp)")
    p.add_argument(
        "--model",
        help="the embedding model the documents come from, e.g. two-tower@2026-12-01 (requests can pin it; "
        "--from-current keeps the active version's unless given)",
    )
    p.add_argument("--threads", type=_positive, help="FAISS threads (default: all cores)")
    _add_sharding(p)
    p.add_argument("--task-retries", type=int, default=3, help="retries of a Ray task whose worker died")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def _add_sharding(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shards", type=_positive, help="split the version into S shards by a hash of the id")
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="build the shards as Ray tasks on the cluster at ADDRESS ('local' starts one on this machine; "
        "input and root must be on a filesystem every node mounts at the same path); needs --shards",
    )


def _sharding(args: argparse.Namespace) -> Sharding:
    if args.ray is not None and args.shards is None:
        raise InputError("--ray builds shards: add --shards S")
    return Sharding(args.shards, args.ray)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dotcos-build", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_build(sub)
    _add_lifecycle(sub)
    _add_serving(sub)
    demo = sub.add_parser("demo", help="build a demo collection unless the root has collections")
    demo.add_argument("--root", type=Path, help=ROOT_HELP)
    demo.add_argument("--docs", type=_positive, default=20_000, help="documents of the demo collection")
    demo.add_argument("--dim", type=_positive, default=32, help="their dimension")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic two-tower vectors")
    _add_sharding(demo)
    demo.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    for name, help_text in (
        ("list", "collections and versions, active marked"),
        ("inspect", "a version's manifest, human-readable"),
        ("verify", "checksums and a load of every index"),
        ("activate", "point CURRENT at a version"),
        ("gc", "delete old versions, never the active one"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--root", type=Path, help=ROOT_HELP)
        if name != "list":
            every = " (default: every collection)" if name == "verify" else ""
            p.add_argument("--name", required=name != "verify", help=f"collection name{every}")
        if name in ("inspect", "verify", "activate"):
            p.add_argument("--version", required=name == "activate", help=VERSION_HELP[name])
        if name == "inspect":
            p.add_argument("--json", action="store_true", help="print the raw manifest")
        if name == "gc":
            p.add_argument("--keep", type=_positive, default=3, help="newest versions kept (the active one always)")
    return parser


def _input_spec(spec: str | None, args: argparse.Namespace, what: str, ids: str | None = None) -> InputSpec | None:
    if spec is None:
        return None
    paths = resolve_paths(spec, what)
    columns = ParquetColumns(
        args.id_column or DEFAULT_COLUMNS.id_column, args.vector_column, args.id_column is not None
    )
    id_paths = resolve_paths(ids, "ids") if ids else None
    return InputSpec(paths, input_format(paths), columns, id_paths)


def _build_request(args: argparse.Namespace, root: Path, settings: BuilderSettings) -> BuildRequest:
    check_name("collection", args.name)
    if not 0.0 < args.target_recall <= 1.0:
        raise InputError(f"--target-recall must be in (0, 1], got {args.target_recall}")
    options = IndexOptions(
        kind=args.index or DEFAULT_INDEX.kind,
        hnsw_m=args.hnsw_m,
        hnsw_codes=args.hnsw_codes or DEFAULT_INDEX.hnsw_codes,
        ef_construction=args.ef_construction,
        nlist=args.nlist,
        pq_m=args.pq_m,
        pq_bits=args.pq_bits,
        train_size=args.train_size,
        seed=args.seed,
        refine_factor=args.refine_factor,
        filter_index=args.filter_index or DEFAULT_INDEX.filter_index,
    )
    if args.input is None:
        raise InputError("build: give --input (embeddings to build from) or --from-current")
    inputs = _input_spec(args.input, args, "input", args.ids)
    assert inputs is not None
    sharding = _sharding(args)
    if args.task_retries < 0:
        raise InputError(f"--task-retries must be 0 or more, got {args.task_retries}")
    return BuildRequest(
        inputs=inputs,
        collection=args.name,
        root=root,
        metrics=parse_metric_list(args.metrics or DEFAULT_METRICS),
        index=options,
        mips=args.mips,
        mips_ranges=args.mips_ranges,
        queries=_input_spec(args.queries, args, "--queries"),
        users=_input_spec(args.users, args, "--users"),
        target_recall=args.target_recall,
        selfcheck_queries=args.selfcheck_queries,
        version=args.version,
        block_bytes=settings.block_mb << 20,
        shards=sharding.shards,
        ray=sharding.ray,
        task_retries=args.task_retries,
        attributes=_attribute_spec(args),
        changes_through=args.changes_included_through,
        discard_changes=args.discard_changes,
        model=args.model,
    )


def _attribute_spec(args: argparse.Namespace) -> AttributeSpec | None:
    """--attributes and --attributes-file as one spec (None when neither is given)."""
    columns = [c.strip() for c in args.attributes.split(",")] if args.attributes else None
    if columns is not None and not all(columns):
        raise InputError(f"--attributes: empty column name in {args.attributes!r}")
    if args.attributes_file is None:
        return None if columns is None else AttributeSpec(columns, None)
    side = resolve_paths(args.attributes_file, "--attributes-file")
    if len(side) != 1:
        raise InputError(f"--attributes-file names {len(side)} files; give one")
    return AttributeSpec(columns, side[0])


READ_ONLY_COMMANDS = ("list", "inspect", "verify")


def _build(args: argparse.Namespace, root: Path, settings: BuilderSettings) -> int:
    threads = args.threads or settings.build_threads
    if threads:
        faiss.omp_set_num_threads(threads)
    progress = Progress(quiet=args.quiet)
    if args.from_current:
        return commands.build_from_current(args, root, lambda: _build_request(args, root, settings), progress)
    return commands.build(_build_request(args, root, settings), progress)


Command = Callable[[argparse.Namespace, Path, BuilderSettings], int]
COMMANDS: dict[str, Command] = {
    "build": _build,
    "demo": lambda a, root, _: commands.demo(
        root, TwoTowerSpec(docs=a.docs, dim=a.dim, seed=a.seed), _sharding(a), Progress(quiet=a.quiet)
    ),
    "list": lambda a, root, _: commands.list_all(root),
    "inspect": lambda a, root, _: commands.inspect(root, a.name, a.version, a.json),
    "verify": lambda a, root, _: commands.verify(root, a.name, a.version),
    "activate": lambda a, root, _: commands.activate_version(root, a.name, a.version),
    "gc": lambda a, root, _: commands.collect(root, a.name, a.keep),
    "restore": lambda a, root, _: commands.restore(root, a.name, a.position, a.snapshot),
    "snapshot": lambda a, root, _: commands.snapshot(root, a.name, a.out),
    "reapply": lambda a, root, _: commands.reapply(root, a.name, a.positions),
    "alias": lambda a, root, _: rollout.alias(root, a.name, a.set, a.remove),
    "route": lambda a, root, _: rollout.route(root, a.name, a),
}
"""What each subcommand runs (with its arguments, the index root and the settings)."""


def _run(args: argparse.Namespace, settings: BuilderSettings) -> int:
    root = args.root or settings.index_root
    if args.command not in READ_ONLY_COMMANDS:
        check_writable(root)
    return COMMANDS[args.command](args, root, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn every failure into one line and an exit code."""
    try:
        settings = BuilderSettings()
        args = build_parser().parse_args(argv)
        level = logging.DEBUG if args.verbose else getattr(logging, settings.log_level.upper(), logging.INFO)
        if getattr(args, "quiet", False):
            level = logging.WARNING
        logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
        arm(settings.crash_at)
        return _run(args, settings)
    except (InputError, NotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"error: setting DOTCOS_{str(first['loc'][0]).upper()}: {first['msg']}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DotcosError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("error: interrupted; nothing was published", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; lower DOTCOS_BLOCK_MB or use a compressed --index", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"error: {exc.strerror or exc} ({exc.filename or 'I/O'})", file=sys.stderr)
        return EXIT_FAILURE
