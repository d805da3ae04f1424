"""Command line: ``streamlearn VERB ...``. Every verb has ``--help``.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from streamlearn import __version__
from streamlearn.errors import StreamlearnError

log = logging.getLogger("streamlearn")


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``--set key=value`` pairs; values are read as YAML scalars (0.1, true, null, 5)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from streamlearn.learners import LEARNERS
    from streamlearn.streams import STREAM_NAMES

    p = sub.add_parser(
        "bench",
        help="run a learner over a continual-learning benchmark stream and print RA/LA/BTI and examples/s",
        description=(
            "Single pass over the stream, task after task; each micro-batch is predicted before it is "
            "learned (prequential). After each task the model is evaluated on every task's held-out "
            "set. Prints RA (retained accuracy), LA (learning accuracy), BTI (LA - final accuracy), "
            "prequential accuracy, examples/s and wall seconds. Progress goes to stderr."
        ),
    )
    p.add_argument("--stream", default="rotated-mnist-10k", choices=STREAM_NAMES, help="benchmark stream")
    p.add_argument("--learner", required=True, choices=sorted(LEARNERS), help="learning algorithm")
    p.add_argument("--tasks", type=int, default=None, help="learn only the first N tasks (default: all 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of model init, replay and shuffles (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="micro-batch size (default: the learner's own, 1 for mer/er/sgd, 10 for lamaml/cmaml)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a learner hyper-parameter, e.g. --set lr=0.05 --set fast_path=false (repeatable)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("STREAMLEARN_THREADS", "1")),
        help="torch/BLAS threads (env STREAMLEARN_THREADS, default 1: faster for these small matrices)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from streamlearn.bench import format_result, run_bench, stderr_progress
    from streamlearn.runtime import pin_threads

    pin_threads(args.threads)
    result = run_bench(
        args.learner,
        args.stream,
        n_tasks=args.tasks,
        seed=args.seed,
        device=args.device,
        batch_size=args.batch_size,
        hparams=_parse_set(args.overrides),
        progress=stderr_progress(),
    )
    print(format_result(result), flush=True)
    if args.json:
        print(json.dumps(result.to_json()), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamlearn",
        description=(
            "Online continual learning from Kafka: MER / La-MAML / C-MAML / ER / SGD on a reservoir "
            "replay buffer, prequential evaluation, checkpoints, predictions and Prometheus metrics."
        ),
    )
    parser.add_argument("--version", action="version", version=f"streamlearn {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("STREAMLEARN_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING, ERROR (env STREAMLEARN_LOG_LEVEL, default INFO)",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    _add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    except StreamlearnError as exc:
        # Bad hyper-parameters and configs are the user's to fix: one clear line, exit 2.
        print(f"streamlearn: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
