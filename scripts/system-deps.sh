#!/usr/bin/env bash
# Installs the outside programs the test suite drives for real, only when missing.
# Fails loudly when it cannot: tests never skip because a program is absent.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v wrk >/dev/null 2>&1 || need+=(wrk)  # the HTTP benchmark (make bench)
command -v node >/dev/null 2>&1 || need+=(nodejs)  # the phoenix.js client suite (tests/node)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
echo "installing OS packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
