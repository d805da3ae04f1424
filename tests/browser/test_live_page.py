"""The live page at GET /, in a real headless Chromium, on a daemon learning from the real broker."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from streamlearn.daemon import Daemon
from streamlearn.produce import produce, stream_messages
from tests.integration.test_daemon import make_config
from tests.integration.test_serving import running

pytestmark = pytest.mark.integration

#: label and task names that producers control; the page must show them as text and run nothing
XSS_LABEL = "<img src=x onerror=alert(1)>"
XSS_TASK = '"><svg onload=alert(2)>'
NAMES = ["zero", "one", "two", XSS_LABEL, "four", "five", "six", "seven", "eight", "nine"]
#: where the README's picture comes from (the test also saves one under its tmp_path)
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "live-page.png"


def named_stream(n_tasks: int) -> Iterator[dict[str, Any]]:
    """rotated-mnist-10k with string labels and task names (one of each is an XSS attempt)."""
    for m in stream_messages("rotated-mnist-10k", n_tasks):
        task = XSS_TASK if m["task"] == 1 else f"rotation-{m['task']}"
        yield {**m, "y": NAMES[m["y"]], "task": task}


@contextlib.contextmanager
def learning_daemon(
    broker: Any, topic: str, tmp_path: Path, *, n_tasks: int, rate: float
) -> Iterator[Daemon]:
    cfg = make_config(
        broker,
        topic,
        tmp_path,
        learner={"name": "lamaml", "alignment_every": 5},
        checkpoint={"every_seconds": 2.0},
    )
    produce([b"not json", b'{"x": [1], "y": "one"}'], broker.bootstrap_servers, topic, progress=None)
    with running(cfg, named_stream(n_tasks), broker.bootstrap_servers, topic, rate=rate) as daemon:
        yield daemon


def learner_values(port: int) -> tuple[float, float]:
    """(examples learned, prequential accuracy) as GET /metrics says now."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    values = {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}
    return values["streamlearn_model_examples_learned"], values["streamlearn_prequential_accuracy"]


def stroke(corners: list[tuple[int, int]], step: int = 10) -> Iterator[tuple[int, int]]:
    """Points every ``step`` pixels along the lines through ``corners`` (offsets from the centre)."""
    for (x0, y0), (x1, y1) in itertools.pairwise(corners):
        n = max(1, int(max(abs(x1 - x0), abs(y1 - y0)) / step))
        for i in range(1, n + 1):
            yield x0 + (x1 - x0) * i // n, y0 + (y1 - y0) * i // n


def wait_for(browser: webdriver.Chrome, script: str, what: str, timeout: float = 30.0) -> Any:
    """Poll a JavaScript expression until it is truthy; returns its value."""
    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(
        lambda b: b.execute_script("return " + script), message=what
    )


def page_number(browser: webdriver.Chrome, element_id: str) -> float:
    return float(browser.find_element(By.ID, element_id).get_attribute("data-value") or "nan")


def assert_no_alert(browser: webdriver.Chrome) -> None:
    with pytest.raises(TimeoutException):
        WebDriverWait(browser, 0.5).until(expected_conditions.alert_is_present())


def test_the_live_page_shows_the_learning_daemon(broker, topic, tmp_path, browser) -> None:
    with learning_daemon(broker, topic, tmp_path, n_tasks=3, rate=120) as daemon:
        port = daemon.serve_port
        assert port is not None
        browser.get(f"http://127.0.0.1:{port}/")

        # the charts hold data within a few seconds
        wait_for(browser, "+document.getElementById('chart-accuracy').dataset.points >= 6", "accuracy chart")
        wait_for(browser, "+document.getElementById('chart-rate').dataset.points >= 3", "rate chart")
        wait_for(browser, "+document.getElementById('chart-cosine').dataset.points >= 1", "alignment chart")
        wait_for(browser, "+document.getElementById('buffer').dataset.rows >= 2", "buffer per class")
        wait_for(browser, "+document.getElementById('rejected').dataset.rows >= 1", "dead letters")
        assert browser.find_element(By.ID, "role").text == "active"  # a fleet of one

        # what the page shows is one of the values /metrics gave while the page refreshed
        seen: set[tuple[float, float]] = set()
        stop = threading.Event()

        def watch_metrics() -> None:
            while not stop.is_set():
                seen.add(learner_values(port))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch_metrics)
        watcher.start()
        try:
            time.sleep(0.3)
            refreshes = int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-refreshes") or 0)
            wait_for(browser, f"+document.body.dataset.refreshes >= {refreshes + 2}", "two refreshes")
            shown = (page_number(browser, "learned"), page_number(browser, "accuracy"))
            time.sleep(0.3)
        finally:
            stop.set()
            watcher.join()
        assert shown in seen, f"page shows {shown}, /metrics said {sorted(seen)}"
        assert shown[0] > 0

        # producer-controlled names are text: shown as typed, no element made of them, nothing runs
        names = wait_for(
            browser,
            "[...document.querySelectorAll('#buffer .name')].map(e => e.textContent)"
            f".filter(t => t === {XSS_LABEL!r}).length && "
            "[...document.querySelectorAll('#buffer .name')].map(e => e.textContent)",
            "the XSS label shown as text",
        )
        assert XSS_LABEL in names
        wait_for(
            browser,
            f"[...document.querySelectorAll('#tasks .name')].some(e => e.textContent === {XSS_TASK!r})",
            "the XSS task shown as text",
        )
        assert browser.execute_script("return document.querySelectorAll('img, svg').length") == 0
        assert_no_alert(browser)

        # a random example of the running stream, sent to /predict
        browser.find_element(By.ID, "random").click()
        wait_for(browser, "document.getElementById('answer').textContent.includes('label sent by')", "random")
        assert_no_alert(browser)

        # draw a "7" on the 28x28 pad: the served model answers with a label and its probabilities
        browser.find_element(By.ID, "clear").click()
        assert browser.execute_script("return document.getElementById('prediction')") is None
        pad = browser.find_element(By.ID, "pad")
        strokes = (
            ActionChains(browser, duration=20).move_to_element_with_offset(pad, -60, -70).click_and_hold()
        )
        for x, y in stroke([(-60, -70), (60, -70), (-5, 85)]):
            strokes = strokes.move_to_element_with_offset(pad, x, y)
        strokes.release().perform()
        label = wait_for(
            browser,
            "document.getElementById('prediction') && document.getElementById('prediction').textContent",
            "a prediction for the drawn digit",
        )
        assert label in NAMES
        assert int(pad.get_attribute("data-moves") or 0) >= 5, "the strokes did not reach the pad"
        assert int(browser.find_element(By.ID, "probs").get_attribute("data-rows")) >= 2

        browser.save_screenshot(str(tmp_path / "live-page.png"))
        # the README's picture is refreshed only when asked: a test run leaves the checkout clean
        if os.environ.get("STREAMLEARN_UPDATE_SCREENSHOT") and DOCS_SCREENSHOT.parent.is_dir():
            shutil.copyfile(tmp_path / "live-page.png", DOCS_SCREENSHOT)
