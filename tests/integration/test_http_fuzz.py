"""Arbitrary HTTP at a learning daemon: never a 5xx, and the model it learns is bit-identical.

Raw sockets, so malformed request lines, lying Content-Length headers and binary bodies reach the
server exactly as sent. The same stream is learned once without traffic and once under fuzzing;
the final parameters must be equal to the bit (CPU, one partition, same seed).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlearn.checkpoint import CheckpointStore
from streamlearn.ingest.broker import create_topic, find_free_port
from streamlearn.produce import produce, stream_messages
from tests.integration.daemon_process import scrape
from tests.integration.test_daemon import make_config
from tests.integration.test_replica import wait_for

pytestmark = pytest.mark.integration

N = 1500
TAIL = 100  # produced only after the fuzzing, so learning cannot finish before it
PATHS = [
    "/predict",
    "/v2/models/streamlearn/infer",
    "/v2/models/streamlearn",
    "/v2/models/streamlearn/ready",
    "/v2/health/ready",
    "/v2/health/live",
    "/v2",
    "/metrics",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
rows = st.lists(st.floats(width=32) | st.integers(-3, 3), min_size=0, max_size=800)
bodies = st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v).encode()),
    rows.map(lambda r: json.dumps({"x": r}).encode()),
    st.lists(rows, max_size=3).map(lambda r: json.dumps({"instances": r}).encode()),
    st.builds(
        lambda shape, dtype, data: json.dumps(
            {"inputs": [{"name": "input-0", "shape": shape, "datatype": dtype, "data": data}]}
        ).encode(),
        st.lists(st.integers(-2, 1000), max_size=3),
        st.sampled_from(["FP32", "FP64", "INT8", "BYTES", "", "fp32"]),
        json_values,
    ),
)
paths = st.one_of(
    st.sampled_from(PATHS),
    st.sampled_from(PATHS).map(lambda p: p + "/..%2f?x=1"),
    st.sampled_from(PATHS).map(lambda p: p.upper()),
    st.text(max_size=60),
)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "BREW", ""])
lengths = st.sampled_from(["exact", "missing", "short", "long", "negative", "garbage", "huge"])


def request_target(path: str) -> str:
    """What the request line carries for ``path``: no CR/LF (they would end the line), spaces escaped."""
    return path.replace("\r", "").replace("\n", "").replace(" ", "%20") or "/"


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: an HTTP method
_TARGET = re.compile(r"[\x21-\x7e]+")  # visible ASCII, no whitespace: a request-target


def request_line_parses(method: str, path: str) -> bool:
    """Whether ``METHOD TARGET HTTP/1.1`` is a well-formed request line (RFC 9112 section 3). Only for
    one that is not may the server close the connection without an answer."""
    return bool(_TOKEN.fullmatch(method) and _TARGET.fullmatch(request_target(path)))


def test_request_line_parses() -> None:
    assert request_line_parses("GET", "/v2/health/ready") and request_line_parses("BREW", "/a b")
    assert not request_line_parses("", "/") and not request_line_parses("GET", "/\x0b")
    assert not request_line_parses("GET", "/é")


def raw_request(
    port: int, method: str, path: str, body: bytes, length: str, headers: dict[str, str]
) -> bytes:
    value = {
        "exact": str(len(body)),
        "short": str(max(0, len(body) - 3)),
        "long": str(len(body) + 10),
        "negative": "-5",
        "garbage": "12abc",
        "huge": str(10**12),
    }.get(length)
    target = request_target(path)
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if value is not None:
        lines.append(f"Content-Length: {value}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace") + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(wire)
            s.shutdown(socket.SHUT_WR)  # a "long" Content-Length must not leave the server waiting
        except OSError:
            pass  # the server may answer (413) and close before reading everything
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int | None:
    if not response:
        return None  # closed without an answer (only allowed for a request line it cannot parse)
    first = response.split(b"\r\n", 1)[0].split()
    assert len(first) >= 2 and first[0].startswith(b"HTTP/"), response[:200]
    return int(first[1])


def final_params(ckpt_dir: str) -> dict[str, torch.Tensor]:
    found = CheckpointStore(ckpt_dir).latest()
    assert found is not None
    return found[1]["learner"]["model"]


# The feeder thread's kafka-python producer draws from the global `random` while hypothesis
# generates requests; harmless here (the learner runs in its own process), so not worth a warning.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_fuzzed_http_never_gets_a_5xx_and_does_not_change_what_is_learned(broker, tmp_path: Path) -> None:
    stream = list(stream_messages("rotated-mnist-10k", 2))[:N]

    def start(name: str) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
        """The daemon in its own process: hypothesis reseeds the global RNGs of the test process."""
        topic = f"fuzz-{name}-{uuid.uuid4().hex[:8]}"
        create_topic(broker.bootstrap_servers, topic)
        cfg = make_config(
            broker,
            topic,
            tmp_path / name,
            runtime={"max_examples": N},
            learner={"name": "er", "seed": 3},
            serve={"port": find_free_port()},
        )
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "streamlearn.cli", "run", "-c", str(path)]
        return cfg, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    quiet, proc = start("quiet")
    produce(stream, broker.bootstrap_servers, quiet["kafka"]["topic"], progress=None)
    assert proc.wait(timeout=180) == 0

    loud, proc = start("loud")
    port = loud["serve"]["port"]
    feeder = threading.Thread(
        target=produce,
        args=(stream[:-TAIL], broker.bootstrap_servers, loud["kafka"]["topic"]),
        kwargs={"rate": 250, "progress": None},
    )
    codes: dict[int | None, int] = {}
    learned = ("streamlearn_examples_learned_total", ())
    try:
        wait_for(lambda: _answers(port), 60)
        feeder.start()
        before = scrape(port)[learned]

        @settings(
            max_examples=400,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            method=methods,
            path=paths,
            body=bodies,
            length=lengths,
            headers=st.dictionaries(
                st.sampled_from(["Content-Type", "Authorization", "Transfer-Encoding", "Expect", "X-A"]),
                st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
                max_size=3,
            ),
        )
        def hit(method: str, path: str, body: bytes, length: str, headers: dict[str, str]) -> None:
            code = status_of(raw_request(port, method, path, body, length, headers))
            codes[code] = codes.get(code, 0) + 1
            what = f"{method} {path!r} ({length}): {body[:80]!r}"
            assert code is not None or not request_line_parses(method, path), f"no answer to {what}"
            assert code is None or code < 500, f"{code} for {what}"

        hit()
        # Learning went on while the requests arrived: counted by the daemon, not timed by us.
        after = scrape(port)[learned]
        assert before < after <= N - TAIL, (before, after)
        feeder.join(timeout=60)
        produce(stream[-TAIL:], broker.bootstrap_servers, loud["kafka"]["topic"], progress=None)
        assert proc.wait(timeout=180) == 0
    finally:
        feeder.join(timeout=60)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"HTTP fuzz: {sum(codes.values())} requests, status codes {sorted(codes.items(), key=str)}")
    assert sum(v for k, v in codes.items() if k is not None and k < 300) > 0, codes  # some were valid
    a, b = final_params(quiet["checkpoint"]["dir"]), final_params(loud["checkpoint"]["dir"])
    learned = CheckpointStore(loud["checkpoint"]["dir"]).latest()
    assert learned is not None and learned[1]["learner"]["examples"] == N
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs: HTTP traffic changed what was learned"


def _answers(port: int) -> bool:
    try:
        return status_of(raw_request(port, "GET", "/v2/health/ready", b"", "missing", {})) == 200
    except OSError:
        return False
