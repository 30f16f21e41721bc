#!/usr/bin/env bash
# Create .venv (if missing) and install interleaf with its test tools into it. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# Strict editable mode: the root folders (schemas/, tokenizers/, ...) are mapped into the interleaf
# namespace, which the default (lenient) editable mode does not resolve.
.venv/bin/python -m pip install --quiet -e ".[test]" --config-settings editable_mode=strict
