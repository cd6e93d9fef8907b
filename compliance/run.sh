#!/usr/bin/env bash
# Run the Autobahn|Testsuite fuzzing client against chanlite's built-in server serving
# compliance/echo_app.py, then summarise the reports. Exits 0 only when no case is FAILED or
# UNIMPLEMENTED; the last line printed is always "autobahn: N passed, M failed".
#
# Environment:
#   FULL=1                   run every case, including 12.*/13.* (permessage-deflate);
#                            the default run excludes what
#                            COMPLIANCE_DEFAULT_EXCLUDE lists.
#   COMPLIANCE_SERVER_CMD    server command, "{port}" is replaced by the port under test
#                            (default: chanlite's built-in server, see SERVER_CMD below).
#   COMPLIANCE_AGENT         name of the server in the reports (default: chanlite).
#   COMPLIANCE_CASES         comma-separated case patterns to run instead of "*" (e.g. "1.*,5.*").
#   COMPLIANCE_EXCLUDE       comma-separated case patterns to exclude, replacing the defaults.
#   COMPLIANCE_TIMEOUT       seconds before wstest is stopped (default 540, FULL: 14400).
#   COMPLIANCE_REPORTS       directory for the reports and logs (default: compliance/reports;
#                            its servers/ subdirectory is emptied at the start of a run).
#   COMPLIANCE_VENV27        where the suite's Python 2.7 virtualenv lives (default:
#                            compliance/.venv27; created when it has no bin/wstest).
#   COMPLIANCE_PYTHON27      CPython 2.7 interpreter that hosts the suite
#                            (default: $(pyenv root)/versions/2.7.18/bin/python).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"

VENV27="${COMPLIANCE_VENV27:-$HERE/.venv27}"
REPORTS="${COMPLIANCE_REPORTS:-$HERE/reports}"
OUTDIR="$REPORTS/servers"
SPEC="$REPORTS/fuzzingclient.json"
SERVER_LOG="$REPORTS/server.log"
WSTEST_LOG="$REPORTS/wstest.log"

# 12.*/13.* (permessage-deflate) are CPU-bound in the Python 2 fuzzing client itself: 12.1.*
# alone took 230 s here and all 216 cases about 40 minutes, against under a minute for
# everything else (9.*, messages and fragments up to 16 MiB, included). They belong to FULL=1.
COMPLIANCE_DEFAULT_EXCLUDE="${COMPLIANCE_DEFAULT_EXCLUDE:-12.*,13.*}"

say() { printf 'compliance: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    printf 'autobahn: 0 passed, 0 failed (not run: %s)\n' "$*"
    exit 2
}

# Python 3 for the config generator and the summary: the project's virtualenv when present.
if [[ -x "$ROOT/.venv/bin/python" ]]; then
    PY3="$ROOT/.venv/bin/python"
else
    PY3="$(command -v python3 || true)"
    [[ -n "$PY3" ]] || die "no python3 found (run 'make setup' first)"
fi

# --- Autobahn|Testsuite in a Python 2.7 virtualenv, created only when missing --------------
find_python27() {
    if [[ -n "${COMPLIANCE_PYTHON27:-}" ]]; then
        printf '%s\n' "$COMPLIANCE_PYTHON27"
        return
    fi
    local root="${PYENV_ROOT:-}"
    if [[ -z "$root" ]] && command -v pyenv >/dev/null 2>&1; then
        root="$(pyenv root 2>/dev/null || true)"
    fi
    if [[ -n "$root" && -x "$root/versions/2.7.18/bin/python" ]]; then
        printf '%s\n' "$root/versions/2.7.18/bin/python"
    else
        printf '%s\n' "/root/.pyenv/versions/2.7.18/bin/python"
    fi
}

ensure_suite() {
    if [[ -x "$VENV27/bin/wstest" ]]; then
        return
    fi
    local py27
    py27="$(find_python27)"
    [[ -x "$py27" ]] || die "CPython 2.7.18 not found at $py27 (the Autobahn suite is Python 2 \
only; install it with 'pyenv install 2.7.18' or set COMPLIANCE_PYTHON27)"
    say "creating $VENV27 with $py27 (one-time set-up)"
    # The machine-wide pip constraint file pins packages that have no Python 2 releases.
    export PIP_CONSTRAINT=""
    if ! "$py27" -m virtualenv --version >/dev/null 2>&1; then
        "$py27" -m pip install -q virtualenv 2>&1 | grep -v 'is ignored' >&2 || true
        "$py27" -m virtualenv --version >/dev/null 2>&1 \
            || die "could not install virtualenv into $py27"
    fi
    rm -rf "$VENV27"
    "$py27" -m virtualenv -q "$VENV27" >&2 || die "virtualenv $VENV27 failed"
    # incremental must predate its Python 3-only releases before Twisted asks for it.
    "$VENV27/bin/pip" install -q typing incremental==16.10.1 2>&1 \
        | grep -v -e 'is ignored' -e DEPRECATION >&2 || true
    "$VENV27/bin/pip" install -q autobahntestsuite==25.10.1 autobahn==0.10.9 Twisted==19.10.0 \
        txaio==2.1.0 six==1.16.0 zope.interface==4.6.0 2>&1 \
        | grep -v -e 'is ignored' -e DEPRECATION >&2 || true
    if [[ ! -x "$VENV27/bin/wstest" ]]; then
        rm -rf "$VENV27"
        die "installing autobahntestsuite into $VENV27 failed (see pip output above)"
    fi
}

free_port() {
    "$PY3" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        # The server runs in its own process group (setsid), so workers/reloaders go too.
        kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
        local deadline=$((SECONDS + 10))
        while kill -0 "$SERVER_PID" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT
trap 'exit 130' INT TERM

ensure_suite

rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"

PORT="$(free_port)"
if [[ "${FULL:-0}" == "1" ]]; then
    EXCLUDE="${COMPLIANCE_EXCLUDE-}"
    TIMEOUT="${COMPLIANCE_TIMEOUT:-14400}"
else
    EXCLUDE="${COMPLIANCE_EXCLUDE-$COMPLIANCE_DEFAULT_EXCLUDE}"
    TIMEOUT="${COMPLIANCE_TIMEOUT:-540}"
fi
AGENT="${COMPLIANCE_AGENT:-chanlite}"

"$PY3" - "$HERE/fuzzingclient.json" "$SPEC" "$OUTDIR" "$AGENT" "$PORT" \
    "${COMPLIANCE_CASES:-*}" "$EXCLUDE" <<'EOF'
import json
import sys

template, target, outdir, agent, port, cases, exclude = sys.argv[1:]
with open(template, encoding="utf-8") as f:
    spec = json.load(f)
spec["outdir"] = outdir
spec["servers"] = [{"agent": agent, "url": f"ws://127.0.0.1:{port}"}]
spec["cases"] = [c.strip() for c in cases.split(",") if c.strip()]
spec["exclude-cases"] = [c.strip() for c in exclude.split(",") if c.strip()]
with open(target, "w", encoding="utf-8") as f:
    json.dump(spec, f, indent=2)
EOF

# --- the server under test ---------------------------------------------------------------
DEFAULT_SERVER_CMD="$ROOT/.venv/bin/chanlite run compliance/echo_app.py:app --host 127.0.0.1 \
--port {port} --ws-max-size 16777216 --ws-ping-interval 0 --log-level warning"
SERVER_CMD="${COMPLIANCE_SERVER_CMD:-$DEFAULT_SERVER_CMD}"
SERVER_CMD="${SERVER_CMD//\{port\}/$PORT}"

say "server: $SERVER_CMD"
setsid bash -c "exec $SERVER_CMD" >"$SERVER_LOG" 2>&1 </dev/null &
SERVER_PID=$!

deadline=$((SECONDS + 30))
until port_open "$PORT"; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        tail -n 20 "$SERVER_LOG" >&2 || true
        SERVER_PID=""
        die "the server exited before listening on port $PORT (log: $SERVER_LOG)"
    fi
    ((SECONDS < deadline)) || die "the server did not listen on port $PORT within 30 s"
    sleep 0.1
done

# --- the suite ---------------------------------------------------------------------------
say "wstest -m fuzzingclient against ws://127.0.0.1:$PORT (cases: ${COMPLIANCE_CASES:-*}; \
excluded: ${EXCLUDE:-none})"
started=$SECONDS
set +e
timeout --kill-after=10 "$TIMEOUT" "$VENV27/bin/wstest" -m fuzzingclient -s "$SPEC" \
    >"$WSTEST_LOG" 2>&1
wstest_rc=$?
set -e
elapsed=$((SECONDS - started))
say "wstest finished in ${elapsed}s (exit $wstest_rc; log: $WSTEST_LOG)"

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    say "warning: the server exited during the run; last lines of $SERVER_LOG:"
    tail -n 20 "$SERVER_LOG" >&2 || true
fi
stop_server

if ((wstest_rc != 0)); then
    tail -n 20 "$WSTEST_LOG" >&2 || true
    if ((wstest_rc == 124 || wstest_rc == 137)); then
        die "wstest did not finish within ${TIMEOUT}s"
    fi
    die "wstest exited with status $wstest_rc"
fi

exec "$PY3" "$HERE/summarize.py" "$OUTDIR/index.json" --wstest-log "$WSTEST_LOG"
