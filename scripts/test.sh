#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite, slow end-to-end tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The report test renders the page in a real headless browser (Debian's chromium). Installed when we can
# (root with apt-get, as in CI); elsewhere that one test is skipped and says why.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing Debian's chromium for the report's browser test (log in .venv/setup.log) ..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >>.venv/setup.log 2>&1 \
    || echo "note: could not install chromium; the report's browser test will be skipped"
fi
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
