"""`make bench`: every benchmark section, then docs/performance.md and docs/cost.md.

    python -m bench.run            full run (~25 min on 2 cores): bench/results/*.json + docs/
    python -m bench.run --quick    smoke run (~2-3 min): bench/results/tmp/ only, docs untouched
    python -m bench.run --only ingest,scale     some sections (results merged with the rest)
    python -m bench.run --report   regenerate the docs from the stored results only

Uses private emulators and servers on free ports (never the local stack's 8080/8081/8085/4443)
and stops everything it started, also on failure.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

from bench import assembler, codec, common, compaction, cost, fractional_cpu, freshness, ingest, report, scale

SECTIONS = {
    "ingest": ingest,
    "assembler": assembler,
    "freshness": freshness,
    "scale": scale,
    "fractional_cpu": fractional_cpu,
    "codec": codec,
    "compaction": compaction,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Omi receiver benchmarks")
    parser.add_argument("--quick", action="store_true", help="smoke run; results to bench/results/tmp/")
    parser.add_argument("--only", help="comma-separated sections: " + ",".join(SECTIONS))
    parser.add_argument("--report", action="store_true", help="only regenerate docs from stored results")
    args = parser.parse_args(argv)
    if args.quick:
        common.RESULTS = common.RESULTS / "tmp"
    names = list(SECTIONS) if not args.only else args.only.split(",")
    unknown = set(names) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    logging.getLogger("google").setLevel(logging.ERROR)
    # SIGTERM (timeout, Ctrl-C in make) must run the `finally` blocks that stop the emulators.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def say(text: str) -> None:
        print(text, flush=True)

    if not args.report:
        started = time.monotonic()
        for name in names:
            say(f"== {name}")
            t = time.monotonic()
            machine = common.machine()  # before: the source hashes of the code about to be measured
            result = SECTIONS[name].run(args.quick, log=say)
            body = {
                "section": name,
                "quick": args.quick,
                "machine": machine,
                "duration_s": round(time.monotonic() - t, 1),
                **result,
            }
            say(f"   -> {common.write_result(name, body).relative_to(common.ROOT)} ({body['duration_s']} s)")
        say(f"== all sections in {time.monotonic() - started:.0f} s")
    docs = common.RESULTS if args.quick else common.ROOT / "docs"
    cost_result = cost.build()
    common.write_result("cost", {"section": "cost", "machine": common.machine(), **cost_result["data"]})
    (docs / "cost.md").write_text(cost_result["markdown"])
    (docs / "performance.md").write_text(report.performance())
    say(f"wrote {docs.relative_to(common.ROOT)}/performance.md and cost.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
