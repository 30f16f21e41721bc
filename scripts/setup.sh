#!/usr/bin/env bash
# Create .venv (if missing) and install interleaf with its test tools into it. Safe to rerun.
# pip's and setuptools' own chatter (machine pip settings, the strict editable install's notices) goes to
# .venv/setup.log; a failed install prints the end of that log.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
log=.venv/setup.log
started=$(date +%s)
echo "setting up .venv (pinned versions; log in $log) ..."
install() {
  if ! "$@" >>"$log" 2>&1; then
    echo "setup failed: $*" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}
: >"$log"
install .venv/bin/python -m pip install --quiet --upgrade pip
# Strict editable mode: the root folders (schemas/, tokenizers/, ...) are mapped into the interleaf
# namespace, which the default (lenient) editable mode does not resolve.
install .venv/bin/python -m pip install --quiet -e ".[test]" --config-settings editable_mode=strict
echo ".venv ready in $(( $(date +%s) - started )) s"
