#!/usr/bin/env bash
# What one change buys: alternate runs of chanlite's server at git revision REV and at the
# working tree, on the same scenario, and print rate and rate per server CPU-second.
#
#   bash bench/tools/ab.sh REV echo 3                    # 3 pairs of echo runs
#   bash bench/tools/ab.sh HEAD~1 bcast 3 --conns 1000   # extra arguments go to wsload
#   bash bench/tools/ab.sh HEAD http 3                   # HTTP hello through wrk
#   AB_AGAINST=REV2 bash bench/tools/ab.sh REV echo 3     # REV against REV2, not the tree
#
# REV is checked out into bench/out/ab-<rev> (a git worktree) and put first on PYTHONPATH,
# so the same virtualenv runs either version. Server on CPU 0, load on CPU 1, as in
# scenarios.py; alternating runs cancel most of the drift of a shared machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
[[ $# -ge 3 ]] || { sed -n '2,9p' "$0"; exit 2; }
rev="$1"; mode="$2"; pairs="$3"; shift 3
extra=("$@")
sha="$(git -C "$ROOT" rev-parse --short "$rev")"
checkout() {  # $1 = short sha: a detached worktree in bench/out, made once
    local dir="$ROOT/bench/out/ab-$1"
    [[ -d "$dir" ]] || git -C "$ROOT" worktree add --detach -f "$dir" "$1" >/dev/null
    echo "$dir"
}
tree="$(checkout "$sha")"
label_b="work" tree_b=""
if [[ -n "${AB_AGAINST:-}" ]]; then
    label_b="$(git -C "$ROOT" rev-parse --short "$AB_AGAINST")"
    tree_b="$(checkout "$label_b")"
fi
wsload="$ROOT/bench/out/wsload"
[[ "$mode" == http || -x "$wsload" ]] || { echo "build the load generator first: bash bench/run.sh calibrate" >&2; exit 2; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

one() {  # $1 = label, $2 = PYTHONPATH
    cd "$ROOT/bench/apps"
    PYTHONPATH="$2" taskset -c 0 "$ROOT/.venv/bin/chanlite" run chanlite_app:app --host 127.0.0.1 \
        --port "$port" --no-access-log --log-level warning >/dev/null 2>&1 &
    local pid=$! rate u0 s0 u1 s1
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    if [[ "$mode" == http ]]; then
        taskset -c 1 wrk -t1 -c50 -d1s "http://127.0.0.1:$port/" >/dev/null
        read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
        rate=$(taskset -c 1 wrk -t1 -c50 -d4s "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {print $2}')
        read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
        secs=4
    else
        read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
        rate=$(taskset -c 1 "$wsload" "$mode" --port "$port" --warmup 1 --duration 4 "${extra[@]}" \
            | tail -1 | sed 's/.*"rate":\([0-9.]*\).*/\1/')
        read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
        secs=5  # the warm-up second loads the server too
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 -c "r=$rate; t=($u1-$u0+$s1-$s0)/100
print(f'$1 rate {r:10,.0f}/s  per server CPU-s {r*$secs/t:10,.0f}  user {($u1-$u0)/100:.2f} s  sys {($s1-$s0)/100:.2f} s')"
}

for _ in $(seq "$pairs"); do
    one "$sha " "$tree"
    one "$label_b" "$tree_b"
done
