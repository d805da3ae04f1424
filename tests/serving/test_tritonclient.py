"""Triton's own HTTP client against the server: binary tensor data (its default) and JSON."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import numpy as np
import pytest

from streamlearn.serving.predictor import ModelView
from tests.serving.test_connections import serving
from tests.serving.test_http import N_CLS, N_IN, StaticSource, _view

httpclient = pytest.importorskip("tritonclient.http")
OUTPUTS = ("probabilities", "label", "class_index")


@pytest.fixture
def client() -> Iterator[tuple[object, ModelView]]:
    view, _ = _view()
    with serving(StaticSource(view)) as (_app, port):
        c = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        yield c, view
        c.close()


def expected(view: ModelView, x: np.ndarray) -> tuple[np.ndarray, list[bytes], np.ndarray]:
    probs = view.predict_proba(x.astype(np.float32))
    idx = probs.argmax(axis=1)
    return probs, [view.labels[i].encode() for i in idx], idx


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_infers(client, dtype: type, binary: bool) -> None:
    c, view = client
    x = np.random.default_rng(0).normal(size=(3, N_IN)).astype(dtype)
    inp = httpclient.InferInput("input-0", list(x.shape), "FP32" if dtype == np.float32 else "FP64")
    inp.set_data_from_numpy(x, binary_data=binary)
    if binary:  # its defaults: binary input, no outputs named, all answered binary
        result = c.infer("m", [inp])
    else:
        outputs = [httpclient.InferRequestedOutput(name, binary_data=False) for name in OUTPUTS]
        result = c.infer("m", [inp], outputs=outputs)
    probs, labels, idx = expected(view, x)
    got = result.as_numpy("probabilities")
    assert got.dtype == np.float32 and got.shape == (3, N_CLS)
    np.testing.assert_allclose(got, probs, rtol=1e-6)
    # BYTES: bytes from binary data, str from JSON (tritonclient's own choice)
    assert [v if isinstance(v, bytes) else v.encode() for v in result.as_numpy("label")] == labels
    assert result.as_numpy("class_index").tolist() == idx.tolist()
    binary_sizes = [o.get("parameters", {}).get("binary_data_size") for o in result.get_response()["outputs"]]
    assert binary_sizes == ([N_CLS * 3 * 4, sum(4 + len(s) for s in labels), 3 * 8] if binary else [None] * 3)


def test_some_outputs_binary_some_json(client) -> None:
    c, view = client
    x = np.ones((1, N_IN), dtype=np.float32)
    inp = httpclient.InferInput("input-0", [1, N_IN], "FP32")
    inp.set_data_from_numpy(x)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=False),
        httpclient.InferRequestedOutput("probabilities", binary_data=True),
    ]
    result = c.infer("m", [inp], outputs=outputs)
    out = result.get_response()["outputs"]
    assert [o["name"] for o in out] == ["label", "probabilities"]
    assert "data" in out[0] and "data" not in out[1]
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected(view, x)[0], rtol=1e-6)


@pytest.mark.parametrize(
    ("size", "tail", "extra", "header", "fragment"),
    [
        (48, 24, {}, None, "binary_data_size"),  # two rows announced, one sent
        (24, 24, {"data": [0] * N_IN}, None, "not both"),
        (None, 24, {"data": [0] * N_IN}, None, "no input has"),
        (24, 24, {}, "99999", "Inference-Header-Content-Length"),
        (24, 24, {}, "-1", "Inference-Header-Content-Length"),
    ],
)
def test_binary_requests_that_do_not_add_up_are_400(size, tail, extra, header, fragment) -> None:
    view, _ = _view()
    tensor = {"name": "input-0", "shape": [1 if size != 48 else 2, N_IN], "datatype": "FP32", **extra}
    if size is not None:
        tensor["parameters"] = {"binary_data_size": size}
    head = json.dumps({"inputs": [tensor]}).encode()
    with serving(StaticSource(view)) as (_app, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "POST",
            "/v2/models/m/infer",
            body=head + bytes(tail),
            headers={"Inference-Header-Content-Length": header or str(len(head))},
        )
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 400 and fragment in body["error"], body
