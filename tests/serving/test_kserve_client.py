"""The KServe SDK's REST client (``kserve.InferenceRESTClient``, Open Inference Protocol v2) against
the server: readiness, model readiness and inference, as a KServe user would call them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.serving.test_connections import serving
from tests.serving.test_http import N_CLS, N_IN, StaticSource, _view

kserve = pytest.importorskip("kserve")


def _client() -> kserve.InferenceRESTClient:
    return kserve.InferenceRESTClient(config=kserve.RESTConfig(protocol="v2", retries=0, timeout=10))


@pytest.mark.parametrize("dtype", ["FP32", "FP64"])
def test_kserve_rest_client_infers(dtype: str) -> None:
    view, _ = _view()
    x = np.random.default_rng(1).normal(size=(4, N_IN))

    async def call(port: int) -> tuple[bool, bool, object]:
        client = _client()
        try:
            base = f"http://127.0.0.1:{port}"
            ready = await client.is_server_ready(base)
            model_ready = await client.is_model_ready(base, "m")
            inp = kserve.InferInput("input-0", list(x.shape), dtype, x.astype(np.float32).tolist())
            request = kserve.InferRequest(model_name="m", infer_inputs=[inp], request_id="r-1")
            return ready, model_ready, await client.infer(base, request, model_name="m")
        finally:
            await client.close()

    with serving(StaticSource(view)) as (_app, port):
        ready, model_ready, response = asyncio.run(call(port))
    assert ready and model_ready
    assert isinstance(response, kserve.InferResponse)
    assert response.model_name == "m" and response.id == "r-1"
    outputs = {o.name: o for o in response.outputs}
    assert set(outputs) == {"probabilities", "label", "class_index"}
    probs = np.asarray(outputs["probabilities"].as_numpy(), dtype=np.float32).reshape(4, N_CLS)
    np.testing.assert_allclose(probs, view.predict_proba(x.astype(np.float32)), rtol=1e-6)
    idx = probs.argmax(axis=1)
    assert np.asarray(outputs["class_index"].as_numpy()).reshape(-1).tolist() == idx.tolist()
    labels = [v.decode() if isinstance(v, bytes) else v for v in outputs["label"].as_numpy().reshape(-1)]
    assert labels == [view.labels[i] for i in idx]


def test_kserve_rest_client_gets_a_clear_error() -> None:
    view, _ = _view()

    async def call(port: int) -> None:
        client = _client()
        try:
            bad = kserve.InferInput("input-0", [1, N_IN + 1], "FP32", [[0.5] * (N_IN + 1)])
            await client.infer(f"http://127.0.0.1:{port}", kserve.InferRequest("m", [bad]), model_name="m")
        finally:
            await client.close()

    with serving(StaticSource(view)) as (_app, port), pytest.raises(Exception) as err:
        asyncio.run(call(port))
    assert "400" in str(err.value) and str(N_IN) in str(err.value)
