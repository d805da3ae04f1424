"""Schemathesis against the server's own /openapi.json: no 5xx, and every answer is what the document says.

A real server on a real socket reads the model the way the daemon's server process does (the
learner's shared-memory snapshot), once with auth off and once with a bearer token. Schemathesis
runs every operation of the served document through its examples, coverage and fuzzing phases,
positive and negative data, other HTTP methods included, and checks each answer: never a 5xx, the
status code, content type, headers and body as documented, 405s with an Allow header, and (token
on) that a guarded operation refuses requests without the token. For ``/predict``, whose body
JSON Schema describes exactly, a schema-valid body must also be accepted and an invalid one refused.
Afterwards the snapshot's parameters are bit-identical: serving never touches the learner.

Schemathesis runs through its engine (what ``schemathesis run`` drives): its lazy pytest loader
(``schemathesis.pytest.from_fixture``) needs ``Item._nodeid``, which pytest 9.2 removed.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import requests
import schemathesis
from openapi_spec_validator import validate
from schemathesis.engine import events, from_schema

from streamlearn.config import ModelConfig
from streamlearn.learners import build_model
from streamlearn.serving.app import App
from streamlearn.serving.http import serve_in_thread
from streamlearn.serving.openapi import document
from streamlearn.serving.predictor import Predictor, param_arrays
from streamlearn.serving.server_process import SharedMemorySource
from streamlearn.serving.settings import ServerSettings
from streamlearn.serving.snapshot import SharedSnapshot

N_IN, N_CLS, LABELS, TOKEN, VERSION = 6, 3, ["cat", "dog", "eel"], "s3cret-token", 17
#: Fuzzing examples per operation; the coverage phase adds its own cases. ~35 s for both runs on 2 busy cores.
MAX_EXAMPLES = 200
SEED = 20240601  # the same cases every run; change it (or raise MAX_EXAMPLES) to look elsewhere
CHECKS = [
    # what the issue asks for
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    # and what else the document promises
    "response_headers_conformance",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
]
GUARDED = {
    "POST /predict",
    "POST /v2/models/m/infer",
    "POST /v2/models/m/versions/{model_version}/infer",
    "POST /v2/admin/checkpoint",
    # the operator's controls (streamlearn.guard.operator)
    "POST /v2/admin/pause",
    "POST /v2/admin/resume",
    "POST /v2/admin/promote",
    "POST /v2/admin/rollback",
}


def settings_for(token: str | None) -> ServerSettings:
    return ServerSettings(
        model_name="m",
        learner="mer",
        n_inputs=N_IN,
        n_classes=N_CLS,
        max_request_bytes=4000,
        max_rows=4,
        auth_token=token,
    )


@contextmanager
def served(token: str | None) -> Iterator[str]:
    """A server over a published snapshot; yields its URL, then checks the snapshot is untouched."""
    cfg = ModelConfig(n_inputs=N_IN, n_classes=N_CLS, hidden=[5])
    model = build_model(cfg.kind, N_IN, N_CLS, tuple(cfg.hidden), seed=0)
    flat = np.concatenate([a.reshape(-1) for a in param_arrays(model)]).astype(np.float32)
    snap = SharedSnapshot.create(flat.size)  # what the learner publishes to the daemon's server
    snap.publish(flat, version=VERSION)
    snap.publish_text({"labels": LABELS}, b"streamlearn_examples_learned_total 42.0\n")
    snap.set_ready(True)
    app = App(SharedMemorySource(snap, Predictor(cfg)), settings_for(token), role="learner")
    server, _ = serve_in_thread(app, "127.0.0.1", 0)
    stop = threading.Event()

    def learner() -> None:  # the learner's side of POST /v2/admin/checkpoint: answer "written"
        while not stop.wait(0.005):
            if request := snap.checkpoint_requested():
                snap.answer_checkpoint(request, True)

    answering = threading.Thread(target=learner, daemon=True)
    answering.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
        after = np.empty_like(flat)
        assert snap.read(after) == VERSION and np.array_equal(after, flat), "serving changed the model"
    finally:
        stop.set()
        answering.join()
        server.shutdown()
        server.server_close()
        snap.close()


def config(token: str | None) -> schemathesis.Config:
    exact = {  # /predict's request schema is exact: the body alone decides accepted or refused
        "negative_data_rejection": {"enabled": True, "expected-statuses": [400, 401, 413]},
        "positive_data_acceptance": {"enabled": True, "expected-statuses": [200, 401, 422]},
    }
    raw: dict[str, Any] = {
        "seed": SEED,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
        "phases": {"stateful": {"enabled": False}},  # no links between operations: nothing to chain
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "operations": [{"include-path": "/predict", "checks": exact}],
    }
    if token is not None:
        raw["auth"] = {"openapi": {"bearer": {"bearer": token}}}
    return schemathesis.Config.from_dict(raw)


@dataclass
class Run:
    cases: int = 0
    statuses: Counter[tuple[str, int | None]] = field(default_factory=Counter)
    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)  # one example of each
    errors: list[str] = field(default_factory=list)
    auth_leaks: list[str] = field(default_factory=list)
    stop_reason: str = ""


def run_schemathesis(url: str, token: str | None) -> Run:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config(token))
    run = Run()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            rec = event.recorder
            run.cases += len(rec.cases)
            for checks in rec.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        info = check.failure_info
                        key = (rec.label, check.name, info.failure.title)
                        run.failures.setdefault(key, f"{info.failure.message}\n{info.code_sample}"[:3000])
            for interaction in rec.interactions.values():
                status = interaction.response.status_code if interaction.response else None
                run.statuses[(rec.label, status)] += 1
                req = interaction.request
                if token is None or rec.label not in GUARDED or req.method != "POST":
                    continue
                auth = {k.lower(): v for k, v in req.headers.items()}.get("authorization", [None])[0]
                # framing errors (411/413) are answered before the token is looked at
                ok = status != 401 if auth == f"Bearer {token}" else status in (401, 411, 413)
                if not ok:
                    run.auth_leaks.append(f"{req.method} {req.uri} Authorization={auth!r} -> {status}")
        elif isinstance(event, events.NonFatalError):  # e.g. a schema it cannot generate from
            run.errors.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            run.errors.append(repr(event.exception))
        elif isinstance(event, events.EngineFinished):
            run.stop_reason = event.stop_reason.value
    return run


@pytest.mark.parametrize("token", [None, TOKEN], ids=["auth-off", "auth-on"])
def test_every_operation_answers_as_documented_and_never_5xx(token: str | None) -> None:
    t0 = time.perf_counter()
    with served(token) as url:
        run = run_schemathesis(url, token)
    seconds = time.perf_counter() - t0
    by_op: dict[str, dict[int | None, int]] = {}
    for (label, status), n in sorted(run.statuses.items(), key=str):
        by_op.setdefault(label, {})[status] = n
    print(
        f"\nschemathesis {'auth-on' if token else 'auth-off'}: {run.cases} cases, "
        f"{sum(run.statuses.values())} requests in {seconds:.1f} s"
    )
    for label, codes in by_op.items():
        print(f"  {label}: {codes}")
    assert not run.errors, "\n\n".join(run.errors)
    assert not run.failures, "\n\n".join(f"{k}:\n{v}" for k, v in run.failures.items())
    assert not run.auth_leaks, run.auth_leaks[:20]
    assert run.stop_reason == "completed"
    # Schemathesis leaves out the operation that serves the document it runs from; the test below
    # fetches /openapi.json itself.
    ops = {
        f"{m.upper()} {p}"
        for p, items in document(settings_for(token), admin="checkpoint")["paths"].items()
        for m in items
    }
    assert set(by_op) == ops - {"GET /openapi.json"}, "an operation was not tested"
    assert not any(s is not None and s >= 500 for (_, s) in run.statuses)
    # Without a token the state-changing endpoint always refuses (403); with one it works.
    refused = {op for op in GUARDED if op.startswith("POST /v2/admin/")} if token is None else set()
    assert all(200 in by_op[label] for label in set(by_op) - refused), "every operation answered 200"
    assert all(set(by_op[label]) <= {403, 405} for label in refused), by_op
    if token is not None:
        assert all(401 in by_op[label] for label in GUARDED), "requests without the token were tried"


@pytest.mark.parametrize("token", [None, TOKEN], ids=["auth-off", "auth-on"])
def test_the_served_document_is_valid_openapi_for_these_settings(token: str | None) -> None:
    doc = document(settings_for(token), LABELS, admin="checkpoint")
    validate(doc)  # the OpenAPI 3.1 meta-schema, $refs resolved
    with served(token) as url:
        got = requests.get(f"{url}/openapi.json", timeout=10)
        # no token needed, even when one guards the predictions
        assert got.status_code == 200 and got.headers["Content-Type"] == "application/json"
        assert got.json() == doc
    guarded = {
        f"{method.upper()} {path}"
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if "security" in op
    }
    assert guarded == (set() if token is None else GUARDED)


def raw(port: int, wire: bytes) -> list[bytes]:
    """Send bytes as they are; the status codes of the responses the server sent before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(wire)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", data)


LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    ("first", "status", "then_live"),
    [
        # what requests cannot send: other methods (the stdlib answered 501 in HTML), HEAD, framing
        (b"PATCH /predict HTTP/1.1\r\nHost: x\r\n\r\n", 405, True),
        (b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405, True),
        (b"OPTIONS /nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404, True),
        (b"HEAD /v2/models/m HTTP/1.1\r\nHost: x\r\n\r\n", 200, True),  # no body, so keep-alive holds
        (b"HEAD /predict HTTP/1.1\r\nHost: x\r\n\r\n", 405, True),
        # a GET body nobody reads used to be parsed as the next request: now the connection closes
        (b"GET /v2 HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nGET /v2 X\r\n", 200, False),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n{}", 400, False),
        (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\n{}",
            400,
            False,
        ),
        (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            411,
            False,
        ),
    ],
)
def test_what_schemathesis_cannot_send_gets_json_4xx_and_framing_holds(
    first: bytes, status: int, then_live: bool
) -> None:
    with served(None) as url:
        lines = raw(int(url.rsplit(":", 1)[1]), first + LIVE)
    assert lines == [str(status).encode()] + ([b"200"] if then_live else []), lines


def test_a_wrong_token_gets_401_with_a_bearer_challenge() -> None:
    with served(TOKEN) as url:
        got = requests.post(f"{url}/predict", json={"x": [0] * N_IN}, timeout=10)
        assert got.status_code == 401 and got.headers["WWW-Authenticate"] == "Bearer"
        assert got.json()["error"] and requests.get(f"{url}/openapi.json", timeout=10).status_code == 200
