"""The live page of a `streamlearn serve` replica with a bearer token, in headless Chromium."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from selenium.webdriver.common.by import By

from streamlearn.checkpoint import CheckpointStore
from streamlearn.config import load_config_dict
from streamlearn.daemon import Daemon
from streamlearn.ingest.broker import find_free_port
from streamlearn.streams import load_stream
from tests.browser.test_live_page import wait_for
from tests.integration.test_replica import _live
from tests.integration.test_replica import wait_for as wait_until

pytestmark = pytest.mark.integration

TOKEN = "page-s3cret"


def test_a_replica_page_shows_its_checkpoint_and_asks_for_the_token(tmp_path: Path, browser) -> None:
    ckpt_dir = tmp_path / "ckpt"
    cfg = {
        "learner": {"name": "er", "alignment_every": 0},
        "model": {"hidden": [32]},
        "checkpoint": {"dir": str(ckpt_dir)},
        "serve": {"auth_token": TOKEN},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    learner = Daemon(load_config_dict(cfg, "test"))  # checkpointed by hand: no broker needed
    task = load_stream("rotated-mnist-10k", n_tasks=1).tasks[0]
    for i in range(40):
        learner.learner.learn(
            torch.as_tensor(task.train_x[i : i + 1]), torch.as_tensor(task.train_y[i : i + 1])
        )
    CheckpointStore(ckpt_dir).save(learner.state({}), learner.learned)

    port = find_free_port()
    cmd = [sys.executable, "-m", "streamlearn.cli", "serve", "-c", str(tmp_path / "cfg.yaml")]
    proc = subprocess.Popen([*cmd, "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: _live(port))
        browser.get(f"http://127.0.0.1:{port}/")
        wait_for(browser, "+document.body.dataset.refreshes >= 2", "the page refreshes")
        assert browser.find_element(By.ID, "role").text == "replica"
        wait_for(browser, "document.getElementById('ready').textContent === 'ready'", "ready")
        assert browser.find_element(By.ID, "learned").get_attribute("data-value") == "40"
        assert browser.find_element(By.ID, "accuracy").get_attribute("data-value") == ""  # no learner metrics

        # /predict stays behind the token: the page says so, takes it, and then gets its answer
        row = browser.find_element(By.ID, "row")
        row.clear()
        row.send_keys(json.dumps(task.train_x[0].tolist()))
        browser.find_element(By.ID, "send").click()
        wait_for(browser, "document.getElementById('answer').textContent.includes('bearer token')", "401")
        assert browser.find_element(By.ID, "auth").is_displayed()
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "send").click()
        label = wait_for(
            browser,
            "document.getElementById('prediction') && document.getElementById('prediction').textContent",
            "a prediction with the token",
        )
        assert label in [str(i) for i in range(10)]
        # the served version appears once a prediction used the model
        wait_for(
            browser, "document.getElementById('versions').textContent.endsWith('/ 40')", "served version"
        )
        browser.save_screenshot(str(tmp_path / "replica-page.png"))
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
