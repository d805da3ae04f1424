#!/usr/bin/env bash
# Install headless Chromium and its WebDriver (Debian packages `chromium`, `chromium-driver`) for the
# browser tests: tests/browser/ drives the live page at GET / with Selenium.
#
# Idempotent: if both `chromium` and `chromedriver` are already on PATH it does nothing.
# Needs root (or sudo) only when it has to install.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have chromium && have chromedriver; then
    echo "install-browser: already installed, nothing to do: $(command -v chromium), $(command -v chromedriver)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if have sudo && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-browser: error: chromium/chromedriver are missing and installing them needs root." >&2
        echo "  run as root: sudo $0   (or: apt-get install -y chromium chromium-driver)" >&2
        exit 1
    fi
fi

if ! have apt-get; then
    echo "install-browser: error: apt-get not found; install Chromium and a matching chromedriver" >&2
    echo "  for your OS and put both on PATH (the browser tests are skipped without them)" >&2
    exit 1
fi

echo "install-browser: installing 'chromium' and 'chromium-driver' with apt-get"
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver

if ! have chromium || ! have chromedriver; then
    echo "install-browser: error: the packages installed but chromium/chromedriver are not on PATH" >&2
    exit 1
fi
echo "install-browser: installed $(command -v chromium) and $(command -v chromedriver)"
