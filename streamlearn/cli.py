"""Command line: ``streamlearn VERB ...``. Every verb has ``--help``.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad configuration.

Start-up is light: ``--help``, every ``VERB --help``, ``produce`` and config errors answer before
torch is imported. Nothing here imports torch at module level or while the parser is built; a verb
imports what it needs when it runs, after its config has loaded. Choices therefore come from the
static lists in ``cli_flags``, where the rule for flags' environment variables is written too.
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
from streamlearn.bench_cli import add_bench
from streamlearn.cli_flags import LEARNER_NAMES, STREAM_NAMES, add_config_args, config_overrides, env_flag
from streamlearn.errors import BrokerError, StreamlearnError
from streamlearn.guard.admin_cli import add_admin

log = logging.getLogger("streamlearn")

#: Variables earlier versions read, and what replaced them: ignored now, with a warning.
_RETIRED_ENV = {
    "STREAMLEARN_THREADS": "STREAMLEARN__RUNTIME__THREADS",
    "STREAMLEARN_CHECKPOINT_DIR": "STREAMLEARN__CHECKPOINT__DIR",
}


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
    add_config_args(p)
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
    add_config_args(p)
    env_flag(
        p,
        "--checkpoint-dir",
        config_key="checkpoint.dir",
        from_config=True,
        help="directory the learner writes checkpoints to",
    )
    env_flag(p, "--host", config_key="serve.host", from_config=True, help="listen address")
    env_flag(p, "--port", type=int, config_key="serve.port", from_config=True, help="listen port")
    p.add_argument(
        "--poll-seconds", type=float, default=2.0, help="how often to look for a newer checkpoint (default 2)"
    )
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from streamlearn.config import load_config

    cfg = load_config(args.config, config_overrides(args))
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
    add_config_args(p)
    env_flag(
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

    cfg = load_config(args.config, config_overrides(args))
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
    env_flag(parser, "--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    _add_run(sub)
    _add_serve(sub)
    _add_demo(sub)
    _add_produce(sub)
    add_bench(sub)
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
    except BrokerError as exc:
        # The embedded broker would not start: a runtime failure.
        print(f"streamlearn: error: {exc}", file=sys.stderr)
        return 1
    except StreamlearnError as exc:
        # Bad hyper-parameters and configs are the user's to fix: one clear line, exit 2.
        print(f"streamlearn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
