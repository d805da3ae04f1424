"""A normal client's latency while thousands of connections idle or trickle at the prediction server.

    python benchmarks/slowloris.py [--connections 2000] [--seconds 8] [--rate 50] [--json]

Starts the daemon's real prediction-server process (``Publisher``, as ``streamlearn run`` does;
this process plays the learner and publishes a default 784-input MLP), then three phases on
127.0.0.1, each ``--seconds`` long:

- ``baseline``: the normal client alone;
- ``idle``: ``--connections`` connections opened at once that never send a byte;
- ``trickle``: as many connections sending one header byte per connection every second and never
  ending their headers (slowloris), each reconnecting as soon as the server closes it, so the
  server is pressed to hold all of them the whole phase.

The normal client sends ``POST /predict`` (one row) over a keep-alive connection at ``--rate``
requests/s, open loop: request i is due at t0 + i/rate and its latency counts from then (a stall
cannot hide). Like any HTTP client it reconnects once when the server has closed its idle
keep-alive connection (counted as ``reconnects``). The server's threads and RSS are sampled from
``/proc`` every 100 ms; the maxima are reported with the server's connection counters. The
hostile connections come from a child process (this script with ``--attack``), so their loop does
not take the measuring client's GIL. Stops by itself after about 3·seconds + 15 s.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import json
import re
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from streamlearn.config import Config, ServeConfig
from streamlearn.learners import build_model
from streamlearn.serving.publisher import Publisher

HOST = "127.0.0.1"


def proc_status(pid: int) -> tuple[int, float]:
    """(threads, RSS in MiB) of a process."""
    text = Path(f"/proc/{pid}/status").read_text()
    threads = int(re.search(r"^Threads:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    rss_kib = int(re.search(r"^VmRSS:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    return threads, rss_kib / 1024


def counters(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out = {}
    for m in re.finditer(r"^streamlearn_http_(\w+?)(?:\{reason=\"(\w+)\"\})? ([0-9.e+-]+)$", text, re.M):
        name = m.group(1) + (f"[{m.group(2)}]" if m.group(2) else "")
        out[name] = float(m.group(3))
    return out


class Attackers:
    """``n`` hostile connections from one thread: idle, or trickling header bytes and reconnecting."""

    def __init__(self, port: int, n: int, trickle: bool) -> None:
        self.port, self.n, self.trickle = port, n, trickle
        self.stop = threading.Event()
        self.reconnects = 0
        self.sel = selectors.DefaultSelector()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> None:
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect((HOST, self.port))
        self.sel.register(s, selectors.EVENT_READ, b"")
        if self.trickle:
            with contextlib.suppress(OSError):
                s.send(b"POST /predict HTTP/1.1\r\n")

    def _close(self, s: socket.socket) -> None:
        self.sel.unregister(s)
        s.close()

    def _run(self) -> None:
        for _ in range(self.n):
            self._open()
        next_byte = time.monotonic() + 1.0
        while not self.stop.is_set():
            for key, _ in self.sel.select(timeout=0.05):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    data = s.recv(4096)
                except OSError as exc:
                    data = b"" if exc.errno != errno.EAGAIN else b"x"
                if not data:  # closed by the server
                    self._close(s)
                    if self.trickle:  # a slowloris comes back at once
                        self.reconnects += 1
                        self._open()
            if self.trickle and time.monotonic() >= next_byte:
                next_byte += 1.0
                for key in list(self.sel.get_map().values()):
                    with contextlib.suppress(OSError):
                        key.fileobj.send(b"x")  # type: ignore[union-attr]
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]

    def open_count(self) -> int:
        return len(self.sel.get_map())


def client(port: int, body: bytes, rate: float, seconds: float) -> dict[str, Any]:
    """Open loop at ``rate``: latency from each request's due time, one reconnect allowed."""
    lat, errors, reconnects = [], 0, 0
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    t0 = time.perf_counter()
    i = 0
    end = t0 + seconds
    # due times within the phase; and a stalled server ends it too (requests late by 5 s: bounded)
    while (due := t0 + i / rate) < end and time.perf_counter() < end + 5:
        i += 1
        time.sleep(max(0.0, due - time.perf_counter()))
        for attempt in (0, 1):
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()  # the server closed our idle connection: a new one, as clients do
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
                reconnects += attempt == 0
                ok = False
        lat.append(time.perf_counter() - due)
        errors += not ok
    conn.close()
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else lat * 99
    return {
        "requests": len(lat),
        "errors": errors,
        "reconnects": reconnects,
        "p50_ms": round(q[49] * 1e3, 2),
        "p99_ms": round(q[98] * 1e3, 2),
        "max_ms": round(lat[-1] * 1e3, 2),
    }


def attack(port: int, n: int, mode: str, seconds: float) -> None:
    """The hostile side, in its own process (its loop must not steal the measuring client's GIL)."""
    attackers = Attackers(port, n, mode == "trickle")
    attackers.thread.start()
    time.sleep(seconds)
    open_now = attackers.open_count()
    attackers.stop.set()
    attackers.thread.join()
    print(json.dumps({"hostile_open_client_side": open_now, "hostile_reconnects": attackers.reconnects}))


def phase(pid: int, port: int, body: bytes, args: argparse.Namespace, mode: str) -> dict[str, Any]:
    attackers = None
    if mode != "baseline":
        cmd = [sys.executable, __file__, "--attack", mode, "--port", str(port)]
        cmd += ["--connections", str(args.connections), "--seconds", str(args.seconds + 1.5)]
        attackers = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)  # let the flood arrive before measuring
    peak = [0, 0.0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.1):
            threads, rss = proc_status(pid)
            peak[0], peak[1] = max(peak[0], threads), max(peak[1], rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = client(port, body, args.rate, args.seconds)
    sampling.set()
    sampler.join()
    if attackers is not None:
        stdout, _ = attackers.communicate(timeout=60)
        out.update(json.loads(stdout.strip().splitlines()[-1]))
    out["server_threads_max"], out["server_rss_mib_max"] = peak[0], round(peak[1], 1)
    out["server_counters"] = counters(port)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rate", type=float, default=50.0, help="normal client requests/s")
    ap.add_argument("--max-connections", type=int, default=ServeConfig.max_connections)
    ap.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")
    ap.add_argument("--attack", choices=["idle", "trickle"], help=argparse.SUPPRESS)  # the child
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.connections + 512)), hard))
    if args.attack:
        attack(args.port, args.connections, args.attack, args.seconds)
        return 0

    cfg = Config(serve=ServeConfig(port=0, max_connections=args.max_connections))
    model = build_model(
        cfg.model.kind, cfg.model.n_inputs, cfg.model.n_classes, tuple(cfg.model.hidden), seed=0
    )
    pub = Publisher(cfg, model, cfg.learner.name)
    port = pub.start()
    try:
        pub.publish_model(1)
        pub.publish_text({"labels": [str(i) for i in range(cfg.model.n_classes)]}, b"")
        pub.set_ready(True)
        assert pub.process is not None
        pid = pub.process.pid
        body = json.dumps({"x": [0.5] * cfg.model.n_inputs}).encode()
        threads0, rss0 = proc_status(pid)
        result: dict[str, Any] = {
            "connections": args.connections,
            "max_connections": args.max_connections,
            "server_threads_idle": threads0,
            "server_rss_mib_idle": round(rss0, 1),
        }
        for mode in ("baseline", "idle", "trickle"):
            result[mode] = phase(pid, port, body, args, mode)
            r = result[mode]
            latency = f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  max {r['max_ms']:7.2f} ms"
            server = f"server threads {r['server_threads_max']} (idle {threads0})"
            memory = f"RSS {r['server_rss_mib_max']} MiB (idle {rss0:.1f})"
            errors = f"errors {r['errors']}  reconnects {r['reconnects']}"
            print(f"{mode:8s} {latency}  {errors}  {server}  {memory}")
        print("server counters:", result["trickle"]["server_counters"])
        if args.json:
            print(json.dumps(result))
    finally:
        pub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
