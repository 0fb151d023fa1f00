#!/usr/bin/env bash
# Set up (first time only) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The browser tests drive Debian's Chromium; install it where we can (root with apt), else they skip.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    bash scripts/install_browser.sh || echo "could not install Chromium: the browser tests will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
