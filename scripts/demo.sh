#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run interleaf on the bundled sample; arguments go to `interleaf demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1
exec .venv/bin/interleaf demo "$@"
