"""What coalescing broadcast writes per loop iteration would buy chanlite's server.

    bench/.venv/bin/python bench/tools/coalesce_experiment.py [--rounds 3]

Runs the broadcast scenarios against chanlite as it is and against
``coalesced_server.py`` (the same server with ``send_frame`` queuing frames and writing
each connection's queue once per loop iteration), alternating, and prints the rates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench


def _coalesced(port: int) -> list[str]:
    script = str(Path(__file__).resolve().parent / "coalesced_server.py")
    cmd = [str(bench.MAIN_BIN / "python"), script, "chanlite_app:app"]
    return [*cmd, "--host", "127.0.0.1", "--port", str(port), *bench.CHANLITE_FLAGS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    bench.OUT.mkdir(exist_ok=True)
    bench._probe_chanlite_flags()
    servers = [
        bench.SERVERS["chanlite"],
        bench.Server("chanlite-coalesced", _coalesced, label="chanlite, coalesced writes"),
    ]
    best: dict[tuple[str, str], dict[str, float]] = {}
    for _ in range(opts.rounds):
        for scenario in ("broadcast200", "broadcast1000"):
            for server in servers:
                result = bench.SCENARIOS[scenario](server, bench.free_port())
                print(f"{scenario:14} {server.name:20} {bench._summary(result)}", flush=True)
                key = (scenario, server.name)
                if key not in best or result["rate"] > best[key]["rate"]:
                    best[key] = result
    print("\nbest of each (deliveries/s, per server CPU-second, p50, p99):")
    for (scenario, name), r in sorted(best.items()):
        core = r["rate"] / r["server_cpu"] if r.get("server_cpu") else 0
        print(
            f"{scenario:14} {name:20} {r['rate']:9,.0f} {core:9,.0f}/CPU-s "
            f"p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
