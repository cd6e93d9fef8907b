"""Summarise an Autobahn|Testsuite fuzzing-client report (``index.json``).

Prints, per agent, a table of case counts per behaviour and every case whose behaviour or close
behaviour is not OK (with the server's close code and the case's report file), then one last line
``autobahn: N passed, M failed``. OK, NON-STRICT and INFORMATIONAL count as passed; FAILED and
UNIMPLEMENTED count as failed and make the exit status 1. As in Autobahn's own report, the
verdict is the case's behaviour: a case whose close behaviour alone is off (say WRONG CODE) is
listed but does not fail the run, since Autobahn already folds fatal close errors into the
behaviour. A report that is missing, empty, or
holds fewer cases than wstest announced (it stops a run silently when a connection fails) is
an error with exit status 2.

Usage: ``python compliance/summarize.py reports/servers/index.json [--wstest-log FILE]``
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

PASSED = ("OK", "NON-STRICT", "INFORMATIONAL")
FAILED = ("FAILED", "UNIMPLEMENTED")
ORDER = (*PASSED, *FAILED)


def case_key(case_id: str) -> tuple[int, ...]:
    """Sort key that puts ``1.1.10`` after ``1.1.9``."""
    return tuple(int(part) if part.isdigit() else 0 for part in case_id.split("."))


def announced_cases(log: Path) -> int | None:
    """The case count wstest announced at start-up (``Ok, will run N test cases``), if any."""
    match = re.search(r"will run (\d+) test cases", log.read_text(errors="replace"))
    return int(match.group(1)) if match else None


def _all_ok(result: dict[str, Any]) -> bool:
    return result.get("behavior") == "OK" and result.get("behaviorClose") == "OK"


def summarize(index: dict[str, Any], expected: int | None) -> tuple[int, int, list[str]]:
    """Print the report for every agent; return (passed, failed, problems)."""
    passed = failed = 0
    problems: list[str] = []
    for agent, cases in sorted(index.items()):
        counts = Counter(str(result.get("behavior")) for result in cases.values())
        print(f"Autobahn|Testsuite results for {agent} ({len(cases)} cases)")
        print(f"  {'behaviour':<15} {'cases':>5}")
        for behaviour in (*ORDER, *sorted(set(counts) - set(ORDER))):
            if counts[behaviour] or behaviour in ORDER:
                print(f"  {behaviour:<15} {counts[behaviour]:>5}")
        not_ok = sorted(
            (c for c, r in cases.items() if not _all_ok(r)),
            key=case_key,
        )
        if not_ok:
            print("  cases not OK (behaviour or close behaviour):")
            print(f"    {'case':<9} {'behaviour':<14} {'close':<14} {'code':>5}  report")
        for case_id in not_ok:
            result = cases[case_id]
            code = result.get("remoteCloseCode")
            print(
                f"    {case_id:<9} {result.get('behavior', '?'):<14} "
                f"{result.get('behaviorClose', '?'):<14} {'-' if code is None else code!s:>5}  "
                f"{result.get('reportfile', '')}"
            )
        passed += sum(counts[b] for b in PASSED)
        failed += len(cases) - sum(counts[b] for b in PASSED)
        if expected is not None and len(cases) != expected:
            problems.append(
                f"{agent}: wstest announced {expected} cases but reported {len(cases)} "
                "(did the server stop accepting connections?)"
            )
    if not index:
        problems.append("the report holds no agents")
    return passed, failed, problems


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("index", type=Path, help="the fuzzing client's index.json")
    parser.add_argument("--wstest-log", type=Path, help="wstest output, to check the case count")
    args = parser.parse_args(argv)

    try:
        index = json.loads(args.index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"compliance: cannot read {args.index}: {exc}", file=sys.stderr)
        print("autobahn: 0 passed, 0 failed (no report)")
        return 2
    expected = announced_cases(args.wstest_log) if args.wstest_log else None
    passed, failed, problems = summarize(index, expected)
    for problem in problems:
        print(f"compliance: error: {problem}", file=sys.stderr)
    # Flush the table before the final line so it stays last when both streams share a tty.
    sys.stdout.flush()
    sys.stderr.flush()
    suffix = " (incomplete run)" if problems else ""
    print(f"autobahn: {passed} passed, {failed} failed{suffix}")
    if problems:
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
