#!/usr/bin/env bash
# Debian's Chromium and its WebDriver (chromedriver) for the console's browser tests.
# Idempotent: installs only what is missing, then prints where chromedriver is.
set -euo pipefail
if ! command -v chromedriver >/dev/null || ! { command -v chromium >/dev/null || [ -x /usr/lib/chromium/chromium ]; }; then
    echo "installing Debian's chromium and chromium-driver packages" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
command -v chromedriver
