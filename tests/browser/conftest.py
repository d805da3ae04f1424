"""A real headless Chromium driven by Selenium (installed by ``scripts/install-browser.sh``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

#: flags for a browser that talks to nobody but the server under test
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1500",
)


def chromium_paths() -> tuple[str, str]:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail("chromium/chromedriver not on PATH: run scripts/install-browser.sh (make setup does)")
    return browser, driver


def new_browser(profile: Path) -> webdriver.Chrome:
    """A fresh Chromium with its own profile directory."""
    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(options=options, service=Service(driver))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    b = new_browser(tmp_path / "chromium-profile")
    try:
        yield b
    finally:
        b.quit()
