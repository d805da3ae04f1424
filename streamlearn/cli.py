"""Command line: ``streamlearn VERB ...``. Every verb has ``--help``.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad configuration.

Start-up is light: ``--help``, every ``VERB --help``, ``produce`` and config errors answer before
torch is imported. Nothing here imports torch at module level or while the parser is built; a verb
imports what it needs when it runs, after its config has loaded. Choices therefore come from the
static lists below, pinned to the learner and stream registries by ``tests/test_cli.py``.

Environment defaults follow one rule, and ``--help`` names the variable of every flag that has one:

- a flag that mirrors a config key reads that key's variable, ``STREAMLEARN__SECTION__KEY`` (double
  underscores: a config path), the one ``load_config`` reads, so one variable sets both;
- any other flag reads ``STREAMLEARN_`` + its long name in capitals, dashes as underscores (single
  underscore: a flag), e.g. ``--log-level`` → ``STREAMLEARN_LOG_LEVEL``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from streamlearn import __version__, logs
from streamlearn.config import ENV_PREFIX
from streamlearn.errors import BrokerError, Deposed, StreamlearnError
from streamlearn.guard.admin_cli import add_admin

log = logging.getLogger("streamlearn")

#: ``sorted(streamlearn.learners.LEARNERS)`` and ``streamlearn.streams.STREAM_NAMES``, written out
#: so that building the parser imports neither torch nor the image libraries.
LEARNER_NAMES = ("cmaml", "er", "lamaml", "mer", "sgd")
STREAM_NAMES = ("rotated-mnist-10k", "permuted-mnist-10k")

FLAG_ENV_PREFIX = "STREAMLEARN_"
#: Variables earlier versions read, and what replaced them: ignored now, with a warning.
_RETIRED_ENV = {
    "STREAMLEARN_THREADS": "STREAMLEARN__RUNTIME__THREADS",
    "STREAMLEARN_CHECKPOINT_DIR": "STREAMLEARN__CHECKPOINT__DIR",
}


def env_var(flag: str, config_key: str | None = None) -> str:
    """The environment variable that gives ``flag`` its default (the rule in the module docstring).

    >>> env_var("--log-level"), env_var("--threads", "runtime.threads")
    ('STREAMLEARN_LOG_LEVEL', 'STREAMLEARN__RUNTIME__THREADS')
    """
    if config_key is not None:
        return ENV_PREFIX + config_key.upper().replace(".", "__")
    return FLAG_ENV_PREFIX + flag.removeprefix("--").upper().replace("-", "_")


def _env_flag(
    p: argparse.ArgumentParser,
    *flags: str,
    help: str,
    default: Any = None,
    shown_default: str | None = None,
    config_key: str | None = None,
    from_config: bool = False,
    **kwargs: Any,
) -> None:
    """Add an option whose default comes from its environment variable, named in ``--help``.

    ``shown_default`` describes the default in ``--help`` where ``default`` (None) says nothing.

    ``from_config``: the verb loads the config, and ``load_config`` reads the key's variable itself,
    so the file < environment < ``--set`` precedence holds. The flag's default then stays None and
    the verb passes a given flag on as the override ``config_key=value`` (:func:`_config_overrides`).
    """
    var = env_var(flags[-1], config_key)
    if from_config:
        assert config_key is not None
        value = None
        help = f"{help} (env {var}; default: the config's {config_key})"
        p.set_defaults(config_flags={**(p.get_default("config_flags") or {}), flags[-1]: config_key})
    else:
        # argparse applies ``type`` to a string default, so a bad value is a usage error (exit 2).
        value = os.environ.get(var, default)
        shown = shown_default or (None if default is None else str(default))
        help = f"{help} (env {var}" + ("" if shown is None else f"; default: {shown}") + ")"
    p.add_argument(*flags, default=value, help=help, **kwargs)


def _config_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` items, then the flags given that mirror config keys (a flag wins over ``--set``)."""
    out = list(args.overrides)
    for flag, key in getattr(args, "config_flags", {}).items():
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None:
            out.append(f"{key}={value}")
    return out


def _parse_hparams(items: Sequence[str]) -> dict[str, Any]:
    """``--hparam name=value`` pairs; values are read as YAML scalars (0.1, true, null, 5)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--hparam expects name=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def _add_bench(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
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
    _env_flag(
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
        batch_size=args.batch_size,
        hparams=_parse_hparams(args.hparams),
        progress=stderr_progress(),
    )
    print(format_result(result), flush=True)
    if args.report:
        from streamlearn.bench_report import write_report

        print(f"report: {write_report([result.to_json()], args.report)}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(result.to_json()), flush=True)
    return 0


def _add_config_args(p: argparse.ArgumentParser) -> None:
    _env_flag(p, "-c", "--config", shown_default="the built-in defaults", help="YAML config file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value, e.g. --set learner.name=lamaml --set kafka.topic=x "
        "(repeatable; outranks the file and the environment's STREAMLEARN__SECTION__KEY)",
    )


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the learning daemon (Kafka in, test-then-train, checkpoints)",
        description=(
            "Consume the examples topic, predict each example before learning it, learn in micro-batches, "
            "checkpoint every N examples / T seconds and on SIGTERM, and commit offsets only after the "
            "checkpoint that holds them is durable. Restarts resume from the newest good checkpoint. "
            "kafka.bootstrap_servers: embedded starts a local broker."
        ),
    )
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON line on stdout")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from streamlearn.config import load_config

    cfg = load_config(args.config, args.overrides)  # before the torch import: config errors answer at once
    from streamlearn.console import status_text, summary_text
    from streamlearn.daemon import Daemon
    from streamlearn.stopping import StopSignals

    status = args.status_line  # drawn on a terminal only
    daemon = Daemon(cfg, on_progress=lambda s: status.set(status_text(s, "[run]")))
    signals = StopSignals(daemon.request_stop)
    try:
        summary = daemon.run()
    finally:
        status.clear()
    log.info("stopped: %s", json.dumps(summary))
    if status.tty:  # a person is watching: the summary; the log line above is for machines
        latest = daemon.checkpointer.store.latest_info()
        summary_shown = {**summary, "checkpoint": str(latest.path) if latest else None}
        print(summary_text(summary_shown, verb="run", stopped_by=signals.stopped_by), flush=True)
    if args.json:
        print(json.dumps(summary), flush=True)
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="read-only prediction replica: serve the newest checkpoint of a directory, hot-reloaded",
        description=(
            "Serve predictions (POST /predict, Open Inference Protocol /v2/...) and /metrics from the newest "
            "good checkpoint in --checkpoint-dir, reloading when the learner writes a newer one. No Kafka, "
            "no learning: run as many replicas as the load needs, sharing the learner's checkpoint volume. "
            "The model shape comes from the config (-c), the same file the learner uses."
        ),
    )
    _add_config_args(p)
    _env_flag(
        p,
        "--checkpoint-dir",
        config_key="checkpoint.dir",
        from_config=True,
        help="directory the learner writes checkpoints to",
    )
    _env_flag(p, "--host", config_key="serve.host", from_config=True, help="listen address")
    _env_flag(p, "--port", type=int, config_key="serve.port", from_config=True, help="listen port")
    p.add_argument(
        "--poll-seconds", type=float, default=2.0, help="how often to look for a newer checkpoint (default 2)"
    )
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from streamlearn.config import load_config

    cfg = load_config(args.config, _config_overrides(args))
    from streamlearn.serving.replica import run_replica

    run_replica(cfg, cfg.checkpoint.dir, poll_seconds=args.poll_seconds)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole system in one command: embedded broker + producer + daemon",
        description=(
            "Starts the embedded Kafka-protocol broker, produces a benchmark stream into it, runs the daemon "
            "on it and prints a live summary line (examples/s, prequential accuracy, lag). Ctrl-C stops it "
            "cleanly. With --max-examples it stops by itself after that many learned examples. Predictions "
            "and Prometheus metrics are served while it learns (serve.port, default 8080: "
            "POST /predict, /v2/models/streamlearn/infer, GET /metrics)."
        ),
    )
    _add_config_args(p)
    _env_flag(
        p, "--learner", choices=LEARNER_NAMES, config_key="learner.name", from_config=True, help="learner"
    )
    p.add_argument("--stream", choices=STREAM_NAMES, default="rotated-mnist-10k", help="stream to produce")
    p.add_argument("--max-examples", type=int, default=None, help="stop after N learned examples")
    p.add_argument(
        "--rate", type=float, default=None, help="producer rate limit, messages/s (default: unlimited)"
    )
    p.add_argument(
        "--json", action="store_true", help="print the final summary as one JSON object, last line"
    )
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from streamlearn.config import load_config

    cfg = load_config(args.config, _config_overrides(args))
    from streamlearn.console import summary_text
    from streamlearn.demo import run_demo
    from streamlearn.stopping import StopSignals

    signals: list[StopSignals] = []  # installed once the daemon exists
    summary = run_demo(
        cfg,
        stream=args.stream,
        max_examples=args.max_examples,
        rate=args.rate,
        status=args.status_line,
        # Ctrl-C: clean stop
        on_start=lambda daemon: signals.append(StopSignals(daemon.request_stop)),  # Ctrl-C: clean stop
    )
    print(summary_text(summary, stopped_by=signals[0].stopped_by if signals else None), flush=True)
    if args.json:
        print(json.dumps(summary), flush=True)
    return 0


def _add_produce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "produce",
        help="send a built-in stream or a JSONL/CSV file of examples to a topic",
        description="Reference producer: one JSON message per example (schema: streamlearn/schemas/"
        "example.schema.json). Shows a progress line; --rate limits messages per second.",
    )
    p.add_argument("--bootstrap-servers", required=True, help="host:port[,host:port] of the Kafka cluster")
    p.add_argument("--topic", "--to-topic", dest="topic", default="examples", help="topic (default examples)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-topic", help="replay a topic's messages unchanged, e.g. examples.quarantine")
    src.add_argument("--stream", choices=STREAM_NAMES, help="a built-in benchmark stream")
    src.add_argument("--file", help="a .jsonl/.json/.ndjson or .csv file of examples")
    p.add_argument("--tasks", type=int, default=None, help="with --stream: only the first N tasks")
    p.add_argument(
        "--rate", type=float, default=None, help="messages per second (default: as fast as possible)"
    )
    p.add_argument("--limit", type=int, default=None, help="send at most N messages")
    p.set_defaults(func=_cmd_produce)


def _cmd_produce(args: argparse.Namespace) -> int:
    from streamlearn.produce import produce, stream_messages, topic_messages
    from streamlearn.streams import read_examples

    msgs: Iterable[dict[str, Any] | bytes]
    if args.stream:
        msgs = stream_messages(args.stream, args.tasks)
        total = 1000 * (args.tasks or 20)
    elif args.from_topic:  # replay (after review): the values as they were, from the beginning
        msgs, total = (v for v, _ in topic_messages(args.bootstrap_servers, args.from_topic)), None
    else:
        msgs, total = read_examples(args.file), None
    produce(msgs, args.bootstrap_servers, args.topic, rate=args.rate, limit=args.limit, total=total)
    return 0


def _add_checkpoint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "checkpoint",
        help="checkpoint tools (inspect)",
        description=(
            "Checkpoint tools. A checkpoint is one file (ckpt-<examples>-<seq>.slc) holding the model, "
            "optimizer state, learned learning rates, replay buffer, RNG states, label map, metric state "
            "and the next Kafka offset of every partition, with a SHA-256 checksum; it is loaded with "
            "torch.load(weights_only=True) and can never execute code."
        ),
    )
    csub = p.add_subparsers(dest="checkpoint_verb", metavar="VERB")
    csub.required = True
    i = csub.add_parser(
        "inspect",
        help="print what a checkpoint holds",
        description="Verify a checkpoint (checksum, safe load) and print its contents: learner, "
        "hyper-parameters, "
        "examples learned, replay buffer, label map, offsets, counters, metrics. PATH may be a "
        "checkpoint file or a directory (its newest good checkpoint), or the same in object storage: "
        "s3://BUCKET/PREFIX[/ckpt-….slc] (endpoint and credentials from the AWS_* variables).",
    )
    i.add_argument("path")
    i.add_argument("--json", action="store_true", help="one JSON object instead of indented text")
    i.set_defaults(func=_cmd_checkpoint_inspect)


def _cmd_checkpoint_inspect(args: argparse.Namespace) -> int:
    from streamlearn.checkpoint import describe, find
    from streamlearn.checkpoint.store import epoch_of

    path, state = find(args.path)
    out = {"path": str(path), "leadership_epoch": epoch_of(path.name), **describe(state)}
    print(json.dumps(out) if args.json else json.dumps(out, indent=2, default=str))
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
    _env_flag(parser, "--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    _add_run(sub)
    _add_serve(sub)
    _add_demo(sub)
    _add_produce(sub)
    _add_bench(sub)
    _add_checkpoint(sub)
    add_admin(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.status_line = logs.configure(args.log_level)
    for old, new in _RETIRED_ENV.items():
        if old in os.environ:
            log.warning("%s is no longer read: set %s instead", old, new)
    from streamlearn.metrics import disable_created_series  # no `_created` series on /metrics

    disable_created_series()
    try:
        return int(args.func(args))
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    except (BrokerError, Deposed) as exc:
        # The embedded broker would not start, or another process took over: runtime failures.
        print(f"streamlearn: error: {exc}", file=sys.stderr)
        return 1
    except StreamlearnError as exc:
        # Bad hyper-parameters and configs are the user's to fix: one clear line, exit 2.
        print(f"streamlearn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
