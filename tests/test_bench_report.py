"""`streamlearn bench --report DIR`: a self-contained HTML page with the figures and the scores table,
checked as files and rendered by a real headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from streamlearn.bench import run_bench
from streamlearn.bench_report import FIGURES, write_report
from streamlearn.streams import load_stream

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
REPORT = ("--json", "--report")
IMAGES_JS = (
    "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
)


def png_size(blob: bytes) -> tuple[int, int]:
    assert blob[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", blob[16:24])  # IHDR: width, height


def embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)]


@pytest.fixture(scope="module")
def cli_report(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamlearn.cli",
            "bench",
            "--learner",
            "sgd",
            "--tasks",
            "2",
            *REPORT,
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"report: {out / 'index.html'}" in res.stderr
    return out, json.loads(res.stdout.strip().splitlines()[-1])


def test_the_report_holds_the_figures_and_the_scores_table(cli_report) -> None:
    out, result = cli_report
    page = (out / "index.html").read_text()
    images = embedded_images(page)
    assert len(images) == len(FIGURES) == 3
    for (name, title, _), blob in zip(FIGURES, images, strict=True):
        assert (out / name).read_bytes() == blob  # the same PNG beside the page
        width, height = png_size(blob)
        assert width >= 300 and height >= 200, (name, width, height)
        assert f"<h2>{title}</h2>" in page
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r'(src|href)="(?!data:)', page)
    table = re.search(r'<table id="scores">(.*?)</table>', page, re.S)
    assert table is not None
    headers = re.findall(r"<th>(.*?)</th>", table[1])
    assert headers[:4] == ["learner", "RA", "LA", "BTI"] and "examples/s" in headers
    cells = re.findall(r"<td>(.*?)</td>", table[1])
    assert cells[:4] == ["sgd", f"{result['ra']:.4f}", f"{result['la']:.4f}", f"{result['bti']:+.4f}"]
    assert f"{result['examples_per_s']:.1f}" in cells


def test_learners_side_by_side_give_one_panel_and_one_row_each(tmp_path) -> None:
    stream = load_stream("rotated-mnist-10k", n_tasks=2)
    # Two runs of the fastest learner (er would take a minute on a busy machine): two panels, two rows.
    results = [run_bench("sgd", stream, seed=seed).to_json() for seed in (0, 1)]
    page = write_report(results, tmp_path / "both").read_text()
    single = write_report(results[:1], tmp_path / "one").read_text()
    table = re.search(r'<table id="scores">(.*?)</table>', page, re.S)
    assert table is not None and re.findall(r"<tr><td>(\w+)</td>", table[1]) == ["sgd", "sgd"]
    # The heatmaps and curves gain a panel per learner: the side-by-side figures are wider.
    for both_png, one_png in list(zip(embedded_images(page), embedded_images(single), strict=True))[:2]:
        assert png_size(both_png)[0] > 1.5 * png_size(one_png)[0]


def test_every_image_of_the_report_loads_in_headless_chromium(cli_report, tmp_path) -> None:
    for binary in (CHROMIUM, CHROMEDRIVER):
        assert binary.exists(), (
            f"{binary} missing: run scripts/install-browser.sh (Debian chromium, chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    out, _ = cli_report
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get((out / "index.html").as_uri())
        images = driver.execute_script(IMAGES_JS)
        rows = driver.execute_script("return document.querySelectorAll('#scores tbody tr').length")
        driver.save_screenshot(str(tmp_path / "report.png"))  # a test artifact to look at
    finally:
        driver.quit()
    assert [alt for alt, *_ in images] == [title for _, title, _ in FIGURES]
    for alt, complete, width, height in images:
        assert complete and width > 0 and height > 0, alt
    assert rows == 1
    assert png_size((tmp_path / "report.png").read_bytes())[0] > 0


def test_the_module_examples_hold() -> None:
    import doctest

    from streamlearn import bench_report

    assert doctest.testmod(bench_report).attempted >= 2 and doctest.testmod(bench_report).failed == 0
