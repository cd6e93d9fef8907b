"""Run chanlite and its peers through the same scenarios and record the numbers.

    bench/.venv/bin/python bench/bench.py                 # every scenario, every server
    bench/.venv/bin/python bench/bench.py echo http       # just these scenarios
    bench/.venv/bin/python bench/bench.py echo --servers chanlite,starlette-uvicorn

Servers run pinned to CPU 0 and the load generator (``bench/out/wsload``, compiled from
``bench/loadgen/wsload.c``; ``wrk`` for HTTP) to CPU 1, so each side has one core of this
2-core machine.  Results are merged into ``bench/out/results.json``; ``report.py`` turns them
into ``bench/RESULTS.md`` and ``bench/results.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scenarios import (
    DURATION,
    GROUPS,
    IDLE_CONNS,
    ORDER,
    SCENARIOS,
    WARMUP,
    _summary,
    _wrk,
    run_calibrate,
    run_layer_scripts,
    run_xproc,
    wsload,
)
from servers import (
    CHANLITE_FLAGS,
    CLIENT_CPU,
    MAIN_BIN,
    OUT,
    PEER_BIN,
    ROOT,
    SERVER_CPU,
    SERVERS,
    Server,
    _probe_chanlite_flags,
    free_port,
    running,
)

# profile.py and tools/ import this module as ``bench`` and use these names from it.
__all__ = [
    "CHANLITE_FLAGS",
    "MAIN_BIN",
    "OUT",
    "PEER_BIN",
    "SCENARIOS",
    "SERVERS",
    "Server",
    "_probe_chanlite_flags",
    "_summary",
    "_wrk",
    "free_port",
    "main",
    "running",
    "wsload",
]

RESULTS = OUT / "results.json"


# -- driver ------------------------------------------------------------------------------------


def _better(scenario: str, new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    if old is None or "error" in old:
        return True
    if "error" in new:
        return False
    if scenario == "idle":
        return float(new["kb_per_conn"]) < float(old["kb_per_conn"])
    return float(new.get("rate", 0)) > float(old.get("rate", 0))


def versions() -> dict[str, str]:
    found: dict[str, str] = {"python": sys.version.split()[0]}
    for python, names in [
        (
            PEER_BIN / "python",
            ["uvicorn", "starlette", "channels", "daphne", "channels_redis", "django",
             "websockets", "uvloop", "httptools", "twisted"],
        ),
        (MAIN_BIN / "python", ["chanlite", "websockets", "httptools", "uvloop"]),
    ]:  # fmt: skip
        script = (
            "import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for n in sys.argv[1:]:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))\n"
        )
        done = subprocess.run(
            [str(python), "-c", script, *names], capture_output=True, text=True, check=False
        )
        tag = "chanlite venv" if python.parent == MAIN_BIN else "peers venv"
        for key, value in json.loads(done.stdout or "{}").items():
            found[f"{key} ({tag})" if key in ("websockets", "httptools", "uvloop") else key] = value
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "chanlite", "plugins"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    # The tree is measured as it is on disk, which may be ahead of the commit.
    found["chanlite commit"] = rev + (f" + {len(dirty)} uncommitted file(s)" if dirty else "")
    return found


def machine() -> dict[str, str]:
    info: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    info["cores"] = str(os.cpu_count())
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
        info["memory"] = f"{int(mem) // 1024} MiB"
    info["kernel"] = os.uname().release
    info["load before run"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def load_results() -> dict[str, Any]:
    if RESULTS.exists():
        data: dict[str, Any] = json.loads(RESULTS.read_text())
        return data
    return {"scenarios": {}, "runs": []}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--servers", help="comma-separated server names (default: all)")
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT", "1")))
    parser.add_argument("--fresh", action="store_true", help="forget earlier results first")
    opts = parser.parse_args()

    unknown = [s for s in opts.scenarios if s not in GROUPS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(GROUPS)}")
    wanted = {name for s in opts.scenarios for name in GROUPS[s]} or set(ORDER)
    only = set(opts.servers.split(",")) if opts.servers else None

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    OUT.mkdir(exist_ok=True)
    _probe_chanlite_flags()
    data = {"scenarios": {}, "runs": []} if opts.fresh else load_results()
    data["machine"] = machine()
    data["versions"] = versions()
    data["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    data["settings"] = {
        "warmup_s": WARMUP,
        "duration_s": DURATION,
        "idle_conns": IDLE_CONNS,
        "repeat": opts.repeat,
        "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU,
        "chanlite_flags": " ".join(CHANLITE_FLAGS),
    }
    data["labels"] = {name: s.label or name for name, s in SERVERS.items()}

    def save() -> None:
        RESULTS.write_text(json.dumps(data, indent=1, sort_keys=True))

    started = time.monotonic()
    for round_no in range(opts.repeat):
        for scenario in ORDER:
            if scenario not in wanted:
                continue
            print(f"== {scenario} (round {round_no + 1}/{opts.repeat})", flush=True)
            if scenario == "calibrate":
                data["calibrate"] = run_calibrate()
                for key, value in data["calibrate"].items():
                    print(f"  generator ceiling {key}: {_summary(value)}", flush=True)
            elif scenario == "xproc":
                table = data["scenarios"].setdefault("xproc", {})
                for name, result in run_xproc(only).items():
                    # A new run replaces earlier numbers; repeats within it keep the best.
                    if round_no == 0 or _better("xproc", result, table.get(name)):
                        table[name] = result
                data["labels"].update({n: s.label or n for n, s in SERVERS.items()})
            elif scenario == "layers":
                data["layer_scripts"] = run_layer_scripts()
            else:
                table = data["scenarios"].setdefault(scenario, {})
                for name, server in SERVERS.items():
                    if only and name not in only:
                        continue
                    if server.scenarios and scenario not in server.scenarios:
                        continue
                    try:
                        result = SCENARIOS[scenario](server, free_port())
                    except Exception as exc:  # keep going: one broken server loses one cell
                        result = {"error": str(exc)[:300]}
                    result["when"] = time.strftime("%H:%M:%S", time.gmtime())
                    data["runs"].append({"scenario": scenario, "server": name, **result})
                    if round_no == 0 or _better(scenario, result, table.get(name)):
                        table[name] = result
                    print(f"  {name}: {_summary(result)}", flush=True)
            save()
    data["machine"]["load after run"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    data["machine"]["run took"] = f"{time.monotonic() - started:.0f} s"
    save()
    print(f"done in {time.monotonic() - started:.0f} s; results in {RESULTS}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
