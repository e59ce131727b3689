#!/usr/bin/env bash
# Set up .venv with adcore, every plugin under plugins/ and the test tools (offline-friendly).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# torch first, pinned to the release these machines cache locally (CPU works with the CUDA build).
.venv/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
args=(--editable ".[test]")
for plugin in plugins/*/; do
    if [ -f "$plugin/pyproject.toml" ]; then args+=(--editable "$plugin"); fi
done
.venv/bin/pip install --quiet "${args[@]}"
