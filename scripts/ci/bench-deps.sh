#!/usr/bin/env bash
# The overhead benchmark drives closed-loop load with wrk (Debian's package); without it, it
# falls back to its Python generator, whose own ceiling is lower.
set -euo pipefail
command -v wrk >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "wrk is not installed; the benchmark will use its Python generator (sudo apt-get install -y wrk)" >&2
  exit 0
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 \
  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
