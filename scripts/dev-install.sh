#!/usr/bin/env bash
# Re-link the strict editable install after adding or removing a module file (no dependency changes).
# Serialised with a lock so that several shells can call it at once.
set -euo pipefail
cd "$(dirname "$0")/.."
exec flock /tmp/interleaf-dev-install.lock .venv/bin/python -m pip install --quiet --no-deps -e . \
  --config-settings editable_mode=strict
