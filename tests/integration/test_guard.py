"""The non-finite guard through the daemon on the real broker: 1e30 features never reach /predict.

Before the guard, one message whose features were all 1e30 (finite, so the decoder accepts it)
turned every weight into NaN for good, and every /predict after it into an error.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time

import pytest
import torch

from streamlearn.config import load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.produce import encode, produce, stream_messages
from tests.integration.test_daemon import make_config, read_topic
from tests.integration.test_serving import request, samples

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("learner", ["sgd", "mer"])
def test_poisoned_messages_are_undone_dead_lettered_and_never_served(
    broker, topic, tmp_path, learner
) -> None:
    clean = list(itertools.islice(stream_messages("rotated-mnist-10k", 1), 320))
    # 20 poisoned copies of real examples, each with a label the model is unlikely to guess on
    # such an input: some steps are huge (undone), and every one would enter MER's replay memory.
    poisoned = [{"x": [1e30] * 784, "y": (m["y"] + 1 + i) % 10} for i, m in enumerate(clean[:20])]
    poisoned[0]["x"] = [0.5] * 783 + [1e30]  # one feature alone is enough to break an unguarded model
    messages = clean[:150] + poisoned + clean[150:300]
    produce(messages, broker.bootstrap_servers, topic, progress=None)
    cfg = make_config(broker, topic, tmp_path, learner={"name": learner, "alignment_every": 0})
    daemon = Daemon(load_config_dict(cfg, "test"))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while daemon.consumed < len(messages):
            assert runner.is_alive() and time.monotonic() < deadline, f"consumed {daemon.consumed}"
            time.sleep(0.1)
        port = daemon.serve_port
        assert port is not None
        time.sleep(1.5)  # the loop publishes the model and the metrics text about once a second
        status, out = request(port, "POST", "/predict", {"x": clean[310]["x"]})
        assert status == 200, out
        probs = list(out["probabilities"].values())
        assert all(math.isfinite(p) for p in probs) and abs(sum(probs) - 1) < 1e-4
        assert request(port, "GET", "/v2/health/ready")[0] == 200
        metrics = samples(request(port, "GET", "/metrics")[1])
    finally:
        daemon.request_stop()
        runner.join(timeout=60)
    assert not runner.is_alive()

    for p in daemon.learner.model.parameters():
        assert torch.isfinite(p).all()
    assert float(max(p.detach().abs().max() for p in daemon.learner.model.parameters())) <= 1e6
    if daemon.learner.buffer is not None:
        assert float(daemon.learner.buffer.x.abs().max()) <= 1e6, "a 1e30 example is in the replay memory"
    summary = daemon.summary()
    undone = summary["rejected_by_reason"].get("non_finite_update", 0)
    # Nothing lost: each message was learned or dead-lettered, and each poisoned one that was
    # learned changed nothing (its gradient rounded to 0) — it is not in the model or the memory.
    assert summary["learned"] + summary["rejected"] == len(messages)
    assert summary["rejected"] == undone and undone >= 1
    assert metrics[("streamlearn_updates_undone_total", ())] >= 1
    assert metrics[("streamlearn_examples_rejected_total", (("reason", "non_finite_update"),))] == undone
    assert math.isfinite(metrics[("streamlearn_prequential_loss", ())])
    # The dead letters are the poisoned messages, unchanged, with their reason and source offset.
    letters = read_topic(broker, cfg["kafka"]["dead_letter_topic"], undone)
    assert len(letters) == undone
    sent: dict[bytes, set[int]] = {}
    for i, m in enumerate(messages):
        sent.setdefault(encode(m), set()).add(i)
    for rec in letters:
        headers = {k: v.decode() for k, v in rec.headers}
        assert headers["streamlearn.reason"] == "non_finite_update"
        assert (
            "guard.max_abs_value" in headers["streamlearn.detail"] or "nan" in headers["streamlearn.detail"]
        )
        offset = int(headers["streamlearn.source.offset"])
        assert 150 <= offset < 170, f"a clean message (offset {offset}) was dead-lettered"
        assert offset in sent[rec.value], "the dead letter is not the message at its offset, unchanged"
    json.loads(letters[0].value)  # unchanged bytes: still the producer's JSON
