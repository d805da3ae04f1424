"""The HTTP server over real sockets: routes, status codes, limits, auth, keep-alive, request metrics."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamlearn.config import ModelConfig
from streamlearn.learners import build_model
from streamlearn.serving.app import App
from streamlearn.serving.http import serve_in_thread
from streamlearn.serving.predictor import ModelView, Predictor, param_arrays
from streamlearn.serving.settings import ServerSettings

N_IN, N_CLS = 6, 3


class StaticSource:
    def __init__(self, view: ModelView | None) -> None:
        self.view = view
        self.is_ready = view is not None

    def current(self) -> ModelView | None:
        return self.view

    def ready(self) -> bool:
        return self.is_ready

    def extra_metrics(self) -> bytes:
        return (
            b"# HELP streamlearn_examples_learned_total x\n"
            b"# TYPE streamlearn_examples_learned_total counter\n"
            b"streamlearn_examples_learned_total 42.0\n"
        )


def _view() -> tuple[ModelView, Predictor]:
    model = build_model("mlp", N_IN, N_CLS, (5,), seed=0)
    p = Predictor(ModelConfig(n_inputs=N_IN, n_classes=N_CLS, hidden=[5]))
    flat = np.concatenate([a.reshape(-1) for a in param_arrays(model)]).astype(np.float32)
    return p.load_flat(flat, 17, ["cat", "dog", "eel"]), p


def _start(source: StaticSource, **kw: object) -> tuple[App, int]:
    settings = ServerSettings(
        model_name="m", learner="mer", n_inputs=N_IN, n_classes=N_CLS, max_request_bytes=2000, max_rows=4
    )
    for k, v in kw.items():
        setattr(settings, k, v)
    app = App(source, settings, role="replica")
    server, _ = serve_in_thread(app, "127.0.0.1", 0)
    return app, server.server_port


@pytest.fixture
def served() -> Iterator[tuple[App, http.client.HTTPConnection, ModelView]]:
    view, _ = _view()
    app, port = _start(StaticSource(view))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    yield app, conn, view
    conn.close()


def call(
    conn: http.client.HTTPConnection, method: str, path: str, body: object = None, headers: dict | None = None
):
    raw = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    conn.request(method, path, body=raw, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, (
        json.loads(data) if resp.getheader("Content-Type", "").startswith("application/json") else data
    )


def test_predict_and_infer_answer_the_model_with_its_version(served) -> None:
    _app, conn, view = served
    x = np.linspace(0, 1, N_IN, dtype=np.float32)
    expected = view.predict_proba(x.reshape(1, -1))[0]
    status, out = call(conn, "POST", "/predict", {"x": x.tolist()})
    assert status == 200 and out["model_version"] == 17
    assert out["label"] == ["cat", "dog", "eel"][int(expected.argmax())]
    assert [out["probabilities"][k] for k in ("cat", "dog", "eel")] == pytest.approx(
        expected.tolist(), rel=1e-6
    )
    # same connection (keep-alive), the v2 protocol
    req = {"inputs": [{"name": "input-0", "shape": [2, N_IN], "datatype": "FP32", "data": [x.tolist()] * 2}]}
    status, out = call(conn, "POST", "/v2/models/m/infer", req)
    assert status == 200 and out["model_version"] == "17" and out["model_name"] == "m"
    probs = next(o for o in out["outputs"] if o["name"] == "probabilities")
    assert probs["shape"] == [2, N_CLS] and probs["data"][:N_CLS] == pytest.approx(
        expected.tolist(), rel=1e-6
    )
    status, meta = call(conn, "GET", "/v2/models/m")
    assert status == 200 and meta["versions"] == ["17"] and meta["inputs"][0]["shape"] == [-1, N_IN]
    assert call(conn, "GET", "/v2/health/live")[0] == 200
    assert call(conn, "GET", "/v2/health/ready")[0] == 200
    assert call(conn, "GET", "/v2/models/m/ready")[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/predict", {"x": [1, 2]}, 400),
        ("POST", "/predict", b"{bad", 400),
        ("POST", "/predict", {"instances": [[0] * N_IN] * 5}, 413),
        ("POST", "/v2/models/m/infer", {"inputs": []}, 400),
        ("POST", "/v2/models/other/infer", {"inputs": []}, 404),
        ("GET", "/predict", None, 405),
        ("GET", "/nothing", None, 404),
        ("DELETE", "/metrics", None, 405),
    ],
)
def test_bad_requests_get_json_4xx_and_the_server_keeps_going(served, method, path, body, status) -> None:
    _app, conn, _ = served
    got, out = call(conn, method, path, body)
    assert got == status and isinstance(out, dict) and out["error"]
    assert call(conn, "GET", "/v2/health/live")[0] == 200  # same connection still works


def test_oversized_body_is_refused_before_it_is_read(served) -> None:
    _, conn, _ = served
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Length", "10000000")
    conn.endheaders()  # body never sent: the server must answer from the header alone
    resp = conn.getresponse()
    assert resp.status == 413 and b"max_request_bytes" in resp.read()


def test_missing_content_length_is_411(served) -> None:
    _, conn, _ = served
    conn.putrequest("POST", "/predict")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 411


def test_not_ready_without_a_model() -> None:
    _, port = _start(StaticSource(None))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    assert call(conn, "GET", "/v2/health/live")[0] == 200
    assert call(conn, "GET", "/v2/health/ready") == (503, {"ready": False, "role": "replica"})
    status, out = call(conn, "POST", "/predict", {"x": [0] * N_IN})
    assert status == 503 and "no model yet" in out["error"]


def test_a_non_finite_model_is_not_ready_and_the_error_blames_the_model() -> None:
    """A NaN weight used to leave readiness at 200 and make /predict blame the caller's features."""
    model = build_model("mlp", N_IN, N_CLS, (5,), seed=0)
    p = Predictor(ModelConfig(n_inputs=N_IN, n_classes=N_CLS, hidden=[5]))
    flat = np.concatenate([a.reshape(-1) for a in param_arrays(model)]).astype(np.float32)
    flat[3] = np.nan
    _, port = _start(StaticSource(p.load_flat(flat, 5, ["a", "b", "c"])))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    status, body = call(conn, "GET", "/v2/health/ready")
    assert status == 503 and body["ready"] is False and "non-finite" in body["reason"]
    assert call(conn, "GET", "/v2/models/m/ready")[0] == 503
    status, out = call(conn, "POST", "/predict", {"x": [0.5] * N_IN})
    assert status == 503 and "non-finite" in out["error"] and "not the request" in out["error"]


def test_bearer_token_guards_predictions_only() -> None:
    view, _ = _view()
    _, port = _start(StaticSource(view), auth_token="s3cret")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    assert call(conn, "POST", "/predict", {"x": [0] * N_IN})[0] == 401
    assert call(conn, "POST", "/predict", {"x": [0] * N_IN}, {"Authorization": "Bearer nope"})[0] == 401
    assert call(conn, "POST", "/predict", {"x": [0] * N_IN}, {"Authorization": "Bearer s3cret"})[0] == 200
    assert call(conn, "GET", "/v2/health/ready")[0] == 200  # probes need no token
    assert call(conn, "GET", "/metrics")[0] == 200


def test_metrics_count_requests_by_endpoint_and_code_and_append_the_learners(served) -> None:
    _app, conn, _ = served
    call(conn, "POST", "/predict", {"x": [0] * N_IN})
    call(conn, "POST", "/predict", {"x": [0] * N_IN})
    call(conn, "POST", "/predict", {"x": [0]})
    status, text = call(conn, "GET", "/metrics")
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text.decode())
        for s in fam.samples
    }
    assert samples[("streamlearn_prediction_requests_total", (("code", "200"), ("endpoint", "predict")))] == 2
    assert samples[("streamlearn_prediction_requests_total", (("code", "400"), ("endpoint", "predict")))] == 1
    assert samples[("streamlearn_prediction_duration_seconds_count", (("endpoint", "predict"),))] == 3
    assert samples[("streamlearn_prediction_rows_total", ())] == 2
    assert samples[("streamlearn_serving_model_version", ())] == 17
    assert samples[("streamlearn_examples_learned_total", ())] == 42  # the learner's text, appended
    build = [k for k in samples if k[0] == "streamlearn_build_info"]
    assert build and dict(build[0][1])["role"] == "replica"


def test_fp64_input_is_answered_as_float32_and_documented(served) -> None:
    """FP64 is accepted (clients such as numpy default to it) and rounded to float32, the model's
    type: the answer is the FP32 answer for the rounded values; a value beyond float32 is a 400."""
    _app, conn, _view = served
    x = np.linspace(-1, 1, N_IN)  # float64; not all exactly representable in float32
    answers = {}
    for dtype, values in (("FP64", x.tolist()), ("FP32", x.astype(np.float32).tolist())):
        req = {"inputs": [{"name": "input-0", "shape": [1, N_IN], "datatype": dtype, "data": values}]}
        status, out = call(conn, "POST", "/v2/models/m/infer", req)
        assert status == 200
        answers[dtype] = out["outputs"]
    assert answers["FP64"] == answers["FP32"]
    huge = {"inputs": [{"name": "input-0", "shape": [N_IN], "datatype": "FP64", "data": [1e300] * N_IN}]}
    status, out = call(conn, "POST", "/v2/models/m/infer", huge)
    assert status == 400 and "float32" in out["error"]
    _, doc = call(conn, "GET", "/openapi.json")
    datatype = doc["components"]["schemas"]["InferInput"]["properties"]["datatype"]
    assert datatype["enum"] == ["FP32", "FP64"] and "float32" in datatype["description"]
