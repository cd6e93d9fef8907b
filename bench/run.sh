#!/usr/bin/env bash
# The one command: `bash bench/run.sh [scenario ...] [--servers a,b] [--repeat N]`.
# Scenarios: calibrate echo broadcast idle handshake http xproc layers (default: all).
# Needs ./.venv (make setup), gcc, wrk and redis-server (apt-get install wrk redis-server).
set -euo pipefail
cd "$(dirname "$0")/.."

# 5000 idle WebSockets need more descriptors than the usual soft limit of 1024.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 12000 ]; then
    echo "bench: ulimit -n is $(ulimit -n); the idle scenario needs ~12000 (raise the hard limit)" >&2
fi

for tool in gcc wrk taskset; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done
[ -x .venv/bin/chanlite ] || { echo "bench: run 'make setup' first (no .venv/bin/chanlite)" >&2; exit 1; }

# The peers' virtualenv, built once and rebuilt when the requirements change.
if [ ! -x bench/.venv/bin/python ] || [ bench/requirements.txt -nt bench/.venv/.stamp ]; then
    python3 -m venv bench/.venv
    bench/.venv/bin/pip install -q --upgrade pip
    bench/.venv/bin/pip install -q -r bench/requirements.txt
    touch bench/.venv/.stamp
fi

# The load generator, rebuilt when its source changes.
mkdir -p bench/out
if [ ! -x bench/out/wsload ] || [ bench/loadgen/wsload.c -nt bench/out/wsload ]; then
    gcc -O2 -Wall -Wextra -o bench/out/wsload bench/loadgen/wsload.c
fi

if [ "${1:-}" = profile ]; then
    shift
    exec bench/.venv/bin/python bench/profile.py "$@"
fi
bench/.venv/bin/python bench/bench.py "$@"
bench/.venv/bin/python bench/report.py
