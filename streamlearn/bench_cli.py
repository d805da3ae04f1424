"""``streamlearn bench``: a learner over a continual-learning benchmark stream, scores printed."""

from __future__ import annotations

import argparse
import json
import sys

from streamlearn.cli_flags import LEARNER_NAMES, STREAM_NAMES, env_flag, parse_hparams


def add_bench(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--learner", required=True, choices=LEARNER_NAMES, help="learning algorithm")
    p.add_argument("--tasks", type=int, default=None, help="learn only the first N tasks (default: all 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of model init, replay and shuffles (default 0)")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda[:N] (default cpu); on cuda mer/lamaml/cmaml take the device-resident path",
    )
    p.add_argument(
        "--model", default="mlp", choices=("mlp", "cnn"), help="the network (default mlp 784-100-100-10)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="micro-batch size (default: the learner's own, 1 for mer/er/sgd, 10 for lamaml/cmaml)",
    )
    p.add_argument(
        "--hparam",
        dest="hparams",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a learner hyper-parameter, e.g. --hparam lr=0.05 --hparam fast_path=false (repeatable)",
    )
    env_flag(
        p,
        "--threads",
        type=int,
        default=1,
        config_key="runtime.threads",
        help="torch/BLAS threads; 1 is fastest for these small matrices",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="also write DIR/index.html: accuracy heatmap, per-task curves, scores (PNGs embedded)",
    )
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
        model=args.model,
        batch_size=args.batch_size,
        hparams=parse_hparams(args.hparams),
        progress=stderr_progress(),
    )
    print(format_result(result), flush=True)
    if args.report:
        from streamlearn.bench_report import write_report

        print(f"report: {write_report([result.to_json()], args.report)}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(result.to_json()), flush=True)
    return 0
