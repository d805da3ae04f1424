"""Memory over a long stream, and prediction latency under 10 minutes of sustained load while learning.

    python benchmarks/memory_soak.py [--sgd-examples 500000] [--mer-examples 50000] [--load-seconds 600]
                                     [--rate 200] [--max-lag 20000] [--json]

Runs ``streamlearn run`` as a subprocess (learner + its prediction-server process, CPU, as deployed)
against an embedded broker (tansu, memory storage) that this process starts, one broker per learner.
A producer process cycles the rotated-mnist-10k stream (20 tasks = 20,000 examples, repeated)
into the topic, topping it up every 0.1 s so that the learner never runs dry and the consumer lag
stays under ``--max-lag`` (checked against ``streamlearn_consumer_lag_messages``).

1. Memory. ``sgd`` over ``--sgd-examples`` and ``mer`` over ``--mer-examples``: the resident set
   (``/proc/PID/status`` VmRSS) of the daemon, of its prediction-server child and their sum, at
   start and at every 10% of the examples; the growth from 10% (after warm-up) to 100% tells
   whether memory is flat. For ``mer``, ``streamlearn_replay_buffer_bytes`` against the expected
   capacity × (n_inputs float32 + int64 label + int64 task id). (tansu's memory storage keeps every
   record it was sent, consumed or not: its RSS grows with the examples produced; it is reported,
   but it is the test broker's, not the daemon's.)
2. Sustained load. Right after ``mer`` reaches its examples, the same daemon keeps learning (the
   producer keeps feeding it) while POST /predict (one 784-float row) runs open loop at ``--rate``
   requests/s over 4 keep-alive connections for ``--load-seconds``; as in
   ``benchmarks/serving_load.py`` a request's latency is measured from when it was *due*, so a
   stalled server cannot hide its stall. Reports requests, errors (non-200 or failed connection),
   p50/p99/p99.9/max latency overall and per minute, the learner's examples/s during the load (and
   the slowest 10 s window; lag must stay > 0, i.e. it never ran dry), and the RSS at start and end.

Progress goes to stderr, a summary to stdout; with ``--json`` the last stdout line is one JSON object.
Takes about sgd-examples/2000 + mer-examples/400 + load-seconds seconds on a 2-core machine.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from serving_load import N_CONN, load  # benchmarks/ is on sys.path when this runs as a script

from streamlearn.ingest.broker import EmbeddedBroker, create_topic, find_free_port
from streamlearn.produce import encode, make_producer, stream_messages

STREAM = "rotated-mnist-10k"
N_INPUTS = 784
MIB = 1024 * 1024
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.eE+-]+|NaN|[+-]Inf)$")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- process memory ---------------------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of ``pid`` in MiB (empty if it is gone)."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(rest.split()[0]) / 1024  # kB
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def descendants(pid: int) -> list[int]:
    """All descendant pids of ``pid`` (via /proc/PID/task/*/children)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


def short_name(cmd: str) -> str:
    """'streamlearn.serving.server_process' for 'python -m streamlearn...', else a short hint."""
    argv = cmd.split()
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1]
    if "resource_tracker" in cmd:
        return "resource_tracker"
    return Path(argv[0]).name if argv else "?"


def daemon_memory(pid: int) -> dict[str, Any]:
    """RSS of the daemon, its prediction-server child and every descendant, in MiB.

    The model snapshot in shared memory (~0.4 MiB) is counted in both processes' RSS.
    """
    d = proc_status(pid)
    kids = descendants(pid)
    server = [k for k in kids if "server_process" in cmdline(k)]
    server_rss = sum(proc_status(k).get("VmRSS", 0.0) for k in server)
    kids_rss = sum(proc_status(k).get("VmRSS", 0.0) for k in kids)
    others = sorted(short_name(cmdline(k)) for k in kids if k not in server)
    return {
        "daemon_rss_mib": d.get("VmRSS", float("nan")),
        "daemon_hwm_mib": d.get("VmHWM", float("nan")),
        "daemon_anon_mib": d.get("RssAnon", float("nan")),
        "server_rss_mib": server_rss,
        "other_children_rss_mib": kids_rss - server_rss,
        "other_children": ",".join(others),
        "total_rss_mib": d.get("VmRSS", float("nan")) + kids_rss,
    }


# -- metrics ----------------------------------------------------------------------------------------
def scrape(port: int, timeout: float = 10.0) -> dict[str, float]:
    """/metrics as {sample name: value summed over label sets} plus {"name{labels}": value}."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        name, labels, value = m.group(1), m.group(2), float(m.group(3))
        out[name] = out.get(name, 0.0) + value
        if labels:
            out[name + labels] = value
    return out


class Monitor(threading.Thread):
    """Scrapes /metrics every ``every`` s; keeps the latest learned count and lag, and a history."""

    def __init__(self, port: int, every: float = 0.5, learned_out: Any = None) -> None:
        super().__init__(daemon=True, name="monitor")
        self.port = port
        self.learned_out = learned_out  # a shared double the producer process reads
        self.every = every
        self.learned = 0.0
        self.lag = float("nan")
        self.latest: dict[str, float] = {}
        self.history: list[tuple[float, float, float]] = []  # (monotonic, learned, lag)
        self.errors = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                m = scrape(self.port, timeout=5)
            except OSError:
                self.errors += 1
            else:
                self.latest = m
                self.learned = m.get("streamlearn_examples_learned_total", self.learned)
                if self.learned_out is not None:
                    self.learned_out.value = self.learned
                self.lag = m.get("streamlearn_consumer_lag_messages", float("nan"))
                self.history.append((time.monotonic(), self.learned, self.lag))
            self.stop_event.wait(self.every)


# -- producer ---------------------------------------------------------------------------------------
def _produce_loop(bootstrap: str, topic: str, max_lag: int, learned: Any, sent: Any, stop: Any) -> None:
    """Producer process: cycle the stream, every 0.1 s topping up to ``learned + max_lag`` sent."""
    messages = [encode(m) for m in stream_messages(STREAM)]
    producer = make_producer(bootstrap)
    cycle = itertools.cycle(messages)
    n = 0
    try:
        while not stop.is_set():
            want = int(learned.value) + max_lag - n
            if want > 0:
                for msg in itertools.islice(cycle, min(want, 5000)):
                    producer.send(topic, value=msg)
                    n += 1
                producer.flush()
                sent.value = n
            stop.wait(0.1)
    finally:
        producer.close(timeout=10)


class Producer:
    """The producer in its own process (spawned), so that its work never holds this process's GIL
    while the load threads here time their requests. Small steady top-ups, not bursts."""

    def __init__(self, bootstrap: str, topic: str, max_lag: int) -> None:
        ctx = mp.get_context("spawn")
        self.learned = ctx.Value("d", 0.0, lock=False)
        self._sent = ctx.Value("q", 0, lock=False)
        self._stop = ctx.Event()
        self.process = ctx.Process(
            target=_produce_loop,
            args=(bootstrap, topic, max_lag, self.learned, self._sent, self._stop),
            name="producer",
            daemon=True,
        )

    @property
    def sent(self) -> int:
        return int(self._sent.value)

    def start(self) -> None:
        self.process.start()

    def check(self) -> None:
        if not self.process.is_alive():
            raise RuntimeError(f"the producer process exited with code {self.process.exitcode}")

    def stop(self) -> None:
        self._stop.set()
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


# -- the daemon -------------------------------------------------------------------------------------
class DaemonProc:
    def __init__(self, learner: str, bootstrap: str, topic: str, tmp: Path) -> None:
        self.port = find_free_port()
        cfg = {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topic": topic,
                "dead_letter_topic": topic + ".dead-letter",
                "group_id": f"soak-{learner}",
            },
            "learner": {"name": learner, "device": "cpu"},
            "checkpoint": {"dir": str(tmp / f"ckpt-{learner}")},
            "serve": {"port": self.port},
            "runtime": {"log_every_seconds": 30},
        }
        path = tmp / f"{learner}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlearn.cli", "--log-level", "WARNING", "run", "-c", str(path)]
        )
        self.pid = self.proc.pid

    def wait_serving(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with code {self.proc.returncode} during startup")
            try:
                scrape(self.port, timeout=2)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the daemon did not serve /metrics on port {self.port} within {timeout:.0f} s")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                log(f"daemon pid {self.pid} ignored SIGTERM for 60 s; killing it")
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_learned(daemon: DaemonProc, monitor: Monitor, target: float, stall_s: float = 180.0) -> None:
    last, since = monitor.learned, time.monotonic()
    while monitor.learned < target:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with code {daemon.proc.returncode}")
        if monitor.learned != last:
            last, since = monitor.learned, time.monotonic()
        elif time.monotonic() - since > stall_s:
            raise RuntimeError(f"no learning progress for {stall_s:.0f} s at {last:.0f} learned")
        time.sleep(0.1)


# -- load -------------------------------------------------------------------------------------------
# -- phases -----------------------------------------------------------------------------------------
def memory_row(
    label: str, daemon: DaemonProc, monitor: Monitor, broker: EmbeddedBroker, t0: float
) -> dict[str, Any]:
    row: dict[str, Any] = {"at": label, "learned": int(monitor.learned), "t_s": time.monotonic() - t0}
    row.update(daemon_memory(daemon.pid))
    row["lag"] = monitor.lag
    row["broker_rss_mib"] = proc_status(broker.pid or 0).get("VmRSS", float("nan"))
    return row


def run_learner(
    learner: str, n_examples: int, body: bytes, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    """One broker + one daemon: memory at every 10% of ``n_examples``, then (if asked) the load."""
    res: dict[str, Any] = {"learner": learner, "examples": n_examples}
    with EmbeddedBroker() as broker:
        topic = f"soak-{learner}"
        create_topic(broker.bootstrap_servers, topic)
        create_topic(broker.bootstrap_servers, topic + ".dead-letter")
        daemon = DaemonProc(learner, broker.bootstrap_servers, topic, tmp)
        monitor = producer = None
        try:
            daemon.wait_serving()
            producer = Producer(broker.bootstrap_servers, topic, args.max_lag)
            monitor = Monitor(daemon.port, learned_out=producer.learned)
            monitor.start()
            producer.start()
            wait_learned(daemon, monitor, 1)
            t0 = time.monotonic()
            rows = [memory_row("start", daemon, monitor, broker, t0)]
            log(f"{learner}: learning {n_examples} examples; {json.dumps(rows[-1])}")
            for pct in range(10, 101, 10):
                wait_learned(daemon, monitor, n_examples * pct / 100)
                rows.append(memory_row(f"{pct}%", daemon, monitor, broker, t0))
                prev = rows[-2]
                rows[-1]["examples_per_s"] = (rows[-1]["learned"] - prev["learned"]) / max(
                    rows[-1]["t_s"] - prev["t_s"], 1e-9
                )
                log(f"{learner}: {json.dumps(rows[-1])}")
                producer.check()
            res["rss"] = rows
            r10, r100 = rows[1], rows[-1]
            for key in ("daemon_rss_mib", "daemon_hwm_mib", "server_rss_mib", "total_rss_mib"):
                res[f"{key}_growth_10_to_100"] = r100[key] - r10[key]
                res[f"{key}_growth_10_to_100_pct"] = 100 * (r100[key] - r10[key]) / r10[key]
            res["examples_per_s"] = (r100["learned"] - rows[0]["learned"]) / max(r100["t_s"], 1e-9)
            lags = [lag for t, _, lag in monitor.history if t >= t0 and lag == lag]
            res["max_lag"] = max(lags, default=float("nan"))
            m = monitor.latest
            res["buffer"] = {
                "bytes": m.get("streamlearn_replay_buffer_bytes"),
                "examples": m.get("streamlearn_replay_buffer_examples"),
                "capacity": m.get("streamlearn_replay_buffer_capacity_examples"),
            }
            cap = res["buffer"]["capacity"]
            if cap is not None:
                res["buffer"]["expected_bytes"] = int(cap) * (N_INPUTS * 4 + 8 + 8)
            if args.load_seconds > 0 and learner == "mer":
                res["load"] = sustained_load(daemon, monitor, broker, body, args, t0)
            res["produced"] = producer.sent
            res["monitor_scrape_errors"] = monitor.errors
        finally:
            if producer is not None:
                producer.stop()
            if monitor is not None:
                monitor.stop_event.set()
                monitor.join(timeout=10)
            res["daemon_exit_code"] = daemon.stop()
    return res


def sustained_load(
    daemon: DaemonProc,
    monitor: Monitor,
    broker: EmbeddedBroker,
    body: bytes,
    args: argparse.Namespace,
    t_phase: float,
) -> dict[str, Any]:
    log(f"load: POST /predict at {args.rate:.0f} req/s for {args.load_seconds:.0f} s while learning ...")
    before = scrape(daemon.port)
    start_row = memory_row("load start", daemon, monitor, broker, t_phase)
    rss_during: list[dict[str, Any]] = []
    done = threading.Event()

    def sampler() -> None:
        while not done.wait(30):
            row = memory_row("load", daemon, monitor, broker, t_phase)
            rss_during.append(row)
            log(
                f"load: +{row['t_s'] - start_row['t_s']:.0f} s learned {row['learned']} lag {row['lag']:.0f} "
                f"daemon {row['daemon_rss_mib']:.1f} MiB server {row['server_rss_mib']:.1f} MiB"
            )

    th = threading.Thread(target=sampler, daemon=True, name="rss-sampler")
    th.start()
    t = time.monotonic()
    res = load(daemon.port, body, args.rate, args.load_seconds)
    t_end = time.monotonic()
    done.set()
    th.join()
    after = scrape(daemon.port)
    end_row = memory_row("load end", daemon, monitor, broker, t_phase)
    learned = after["streamlearn_examples_learned_total"] - before["streamlearn_examples_learned_total"]
    res["learn_examples"] = int(learned)
    res["learn_examples_per_s"] = learned / (t_end - t)
    hist = [(ts, n, lag) for ts, n, lag in monitor.history if t <= ts <= t_end]
    lags = [lag for _, _, lag in hist if lag == lag]
    res["lag_min"] = min(lags, default=float("nan"))
    res["lag_max"] = max(lags, default=float("nan"))
    windows = []  # learned examples/s over consecutive ~10 s windows
    i = 0
    for j in range(1, len(hist)):
        if hist[j][0] - hist[i][0] >= 10:
            windows.append((hist[j][1] - hist[i][1]) / (hist[j][0] - hist[i][0]))
            i = j
    res["learn_examples_per_s_min_10s"] = min(windows, default=float("nan"))
    res["learn_examples_per_s_max_10s"] = max(windows, default=float("nan"))
    res["never_dry"] = bool(lags) and res["lag_min"] > 0 and bool(windows) and min(windows) > 0
    code_key = 'streamlearn_prediction_requests_total{code="200",endpoint="predict"}'
    alt_key = 'streamlearn_prediction_requests_total{endpoint="predict",code="200"}'
    key = code_key if code_key in after else alt_key
    if key in after:
        res["server_counted_200"] = int(after[key] - before.get(key, 0.0))
    res["rss_start"] = start_row
    res["rss_end"] = end_row
    res["rss_during"] = rss_during
    for k in ("daemon_rss_mib", "server_rss_mib", "total_rss_mib"):
        res[f"{k}_growth"] = end_row[k] - start_row[k]
    log(f"load: done; {json.dumps({k: v for k, v in res.items() if not k.startswith(('rss', 'per_'))})}")
    return res


# -- report -----------------------------------------------------------------------------------------
def print_summary(out: dict[str, Any]) -> None:
    nan = float("nan")
    print(
        f"\nmemory_soak: {out['stream']} cycled, CPU, 2-core load average at start "
        f"{out['loadavg_start']} / end {out['loadavg_end']}"
    )
    for res in out["learners"]:
        print(
            f"\n{res['learner']}: {res['examples']} examples at {res['examples_per_s']:.0f} ex/s; "
            f"max lag {res['max_lag']:.0f}; produced {res['produced']}"
        )
        print(
            f"{'at':>6} {'learned':>8} {'t s':>7} {'ex/s':>6} {'daemon MiB':>10} {'(peak)':>7} "
            f"{'server MiB':>10} {'sum MiB':>8} {'lag':>6} {'broker MiB':>10}"
        )
        for r in res["rss"]:
            print(
                f"{r['at']:>6} {r['learned']:8d} {r['t_s']:7.1f} {r.get('examples_per_s', nan):6.0f} "
                f"{r['daemon_rss_mib']:10.1f} {r['daemon_hwm_mib']:7.1f} {r['server_rss_mib']:10.1f} "
                f"{r['total_rss_mib']:8.1f} {r['lag']:6.0f} {r['broker_rss_mib']:10.1f}"
            )
        print(
            "growth 10% -> 100%: "
            + ", ".join(
                f"{name} {res[f'{key}_growth_10_to_100']:+.1f} MiB "
                f"({res[f'{key}_growth_10_to_100_pct']:+.1f}%)"
                for name, key in (
                    ("daemon", "daemon_rss_mib"),
                    ("daemon peak", "daemon_hwm_mib"),
                    ("server", "server_rss_mib"),
                    ("sum", "total_rss_mib"),
                )
            )
        )
        buf = res["buffer"]
        if buf.get("capacity"):
            print(
                f"replay buffer: {buf['bytes']:.0f} bytes for {buf['examples']:.0f}/{buf['capacity']:.0f} "
                f"examples; expected capacity x ({N_INPUTS} x 4 + 8 + 8) = {buf['expected_bytes']} bytes"
            )
        else:
            print("replay buffer: none (this learner keeps no buffer)")
        if "load" in res:
            ld = res["load"]
            print(
                f"\nsustained load while {res['learner']} learns: POST /predict at {out['rate']:.0f} req/s, "
                f"{out['load_seconds']:.0f} s, {N_CONN} keep-alive connections, open loop"
            )
            print(
                f"requests {ld['requests']} ({ld['requests_per_s']:.1f}/s), errors {ld['errors']}, "
                f"p50 {ld['p50_ms']:.2f} ms, p99 {ld['p99_ms']:.2f} ms, p99.9 {ld['p999_ms']:.2f} ms, "
                f"max {ld['max_ms']:.1f} ms, >100 ms: {ld['over_100ms']}"
            )
            print(
                f"learning during the load: {ld['learn_examples']} examples, "
                f"{ld['learn_examples_per_s']:.0f} ex/s (10 s windows "
                f"{ld['learn_examples_per_s_min_10s']:.0f}..{ld['learn_examples_per_s_max_10s']:.0f}), "
                f"lag {ld['lag_min']:.0f}..{ld['lag_max']:.0f}, never dry: {ld['never_dry']}"
            )
            s, e = ld["rss_start"], ld["rss_end"]
            print(
                f"RSS load start -> end: daemon {s['daemon_rss_mib']:.1f} -> {e['daemon_rss_mib']:.1f} MiB "
                f"({ld['daemon_rss_mib_growth']:+.1f}), server {s['server_rss_mib']:.1f} -> "
                f"{e['server_rss_mib']:.1f} MiB ({ld['server_rss_mib_growth']:+.1f}), sum "
                f"{s['total_rss_mib']:.1f} -> {e['total_rss_mib']:.1f} MiB "
                f"({ld['total_rss_mib_growth']:+.1f})"
            )
            print(
                "per minute: "
                + "; ".join(
                    f"{m['p50_ms']:.2f}/{m['p99_ms']:.2f}/{m['max_ms']:.0f}" for m in ld["per_minute"]
                )
                + " (p50/p99/max ms)"
            )
        print(f"daemon exit code {res['daemon_exit_code']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sgd-examples", type=int, default=500_000, help="sgd memory run length (0: skip)")
    ap.add_argument("--mer-examples", type=int, default=50_000, help="mer memory run length, then the load")
    ap.add_argument("--load-seconds", type=float, default=600.0, help="sustained load (0: skip)")
    ap.add_argument("--rate", type=float, default=200.0, help="POST /predict requests/s during the load")
    ap.add_argument("--max-lag", type=int, default=20_000, help="keep produced - learned under this")
    ap.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")
    args = ap.parse_args()
    if args.mer_examples <= 0 and args.load_seconds > 0:
        ap.error("the load runs on the mer daemon: --mer-examples must be > 0")

    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    log(f"load average {load_start}")
    body = json.dumps({"x": next(stream_messages(STREAM, 1))["x"]}).encode()  # one 784-float row
    out: dict[str, Any] = {
        "stream": STREAM,
        "rate": args.rate,
        "load_seconds": args.load_seconds,
        "max_lag_target": args.max_lag,
        "loadavg_start": load_start,
        "learners": [],
    }
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="memory-soak-") as tmp:
        for learner, n in (("sgd", args.sgd_examples), ("mer", args.mer_examples)):
            if n > 0:
                out["learners"].append(run_learner(learner, n, body, args, Path(tmp)))
    out["wall_s"] = time.monotonic() - t0
    out["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print_summary(out)
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
