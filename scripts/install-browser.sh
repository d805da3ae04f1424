#!/usr/bin/env bash
# Install headless Chromium and its WebDriver (Debian packages `chromium`, `chromium-driver`) for the
# browser tests: tests/browser/ drives the live page at GET / with Selenium.
#
# Idempotent: if both `chromium` and `chromedriver` are already on PATH it does nothing.
# Needs root (or sudo) only when it has to install.
set -euo pipefail
. "$(dirname "$0")/lib/apt.sh"

if have chromium && have chromedriver; then
    echo "install-browser: already installed, nothing to do: $(command -v chromium), $(command -v chromedriver)"
    exit 0
fi

apt_install install-browser "install Chromium and a matching chromedriver for your OS and put both on PATH" \
    chromium chromium-driver

if ! have chromium || ! have chromedriver; then
    echo "install-browser: error: the packages installed but chromium/chromedriver are not on PATH" >&2
    exit 1
fi
echo "install-browser: installed $(command -v chromium) and $(command -v chromedriver)"
