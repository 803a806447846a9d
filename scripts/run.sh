#!/usr/bin/env bash
# Install the product and run it on embedded defaults (SQLite, local files, no servers).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh ml   # the worker beside the bot (and the offline demo) needs torch
exec .venv/bin/hps run "$@"
