#!/usr/bin/env bash
# Installs and starts what the test suite needs beyond Python packages: Prometheus and
# Alertmanager (promtool, amtool) from Debian's packages, a Redis server binary, Node.js and curl. Tests start
# their own private Redis and Prometheus on free ports; they never touch a shared instance.
set -euo pipefail

need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
command -v redis-server >/dev/null || need+=(redis-server)
command -v node >/dev/null || need+=(nodejs)  # checks the k6 script's syntax
command -v curl >/dev/null || need+=(curl)  # the README's examples, run by tests/system/test_readme.py

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "The tests need these Debian packages: ${need[*]}" >&2
    echo "Run as root, or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts the packaged daemons; the tests run their own on free ports.
  for unit in prometheus prometheus-alertmanager; do
    (service "$unit" stop >/dev/null 2>&1 || true)
  done
fi
echo "test dependencies: prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}'),"\
  "redis $(redis-server --version | awk '{print $3}')"
