"""`python -m bench.soak [--devices 50] [--minutes 10] [--seed 1] [--speed 1] ...` (make soak):
the flags, and the exit status (1 on any failed check)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from bench.soak import report
from bench.soak.run import run
from bench.soak.settings import RESULT_FILE, ROOT, Settings


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=(
            "Fault-injection soak: many simulated Omi devices against ingest and the assembler while "
            "the assembler is SIGKILLed, Cloud Storage fails requests and senders repeat POSTs."
        ),
    )
    p.add_argument("--devices", type=int, default=d.devices)
    p.add_argument("--minutes", type=float, default=d.minutes, help="wall-clock streaming time")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--speed", type=float, default=d.speed, help="audio released N times faster than real time")
    p.add_argument("--session-gap", type=int, default=d.session_gap, help="SESSION_GAP_SECONDS")
    p.add_argument("--max-recording", type=int, default=d.max_recording, help="MAX_RECORDING_SECONDS")
    p.add_argument("--settle", type=float, default=d.settle, help="SETTLE_SECONDS")
    p.add_argument("--pass-seconds", type=float, default=d.pass_seconds, help="PASS_SECONDS")
    p.add_argument("--lease-seconds", type=int, default=d.lease_seconds, help="LEASE_SECONDS")
    p.add_argument("--ack-deadline", type=int, default=d.ack_deadline, help="the chunk subscription's")
    p.add_argument("--tick", type=float, default=d.tick_seconds, help="seconds between tick starts")
    p.add_argument("--error-rate", type=float, default=d.error_rate, help="share of storage requests failed")
    p.add_argument(
        "--kill-every",
        type=float,
        nargs=2,
        default=d.kill_spacing,
        metavar=("MIN", "MAX"),
        help="seconds between assembler kills, uniform in [MIN, MAX]",
    )
    p.add_argument("--duplicate-rate", type=float, default=d.duplicate_rate)
    p.add_argument(
        "--cut-rate",
        type=float,
        default=d.cut_rate,
        help="share of current senders' POSTs first sent cut part-way, then retried",
    )
    p.add_argument("--pause-for", type=float, default=None, help="wall seconds (default 1.5 x gap)")
    p.add_argument("--out", type=Path, default=RESULT_FILE, help="result JSON (default: %(default)s)")
    p.add_argument("--no-out", action="store_true", help="do not write the result file")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, ledgers)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--code",
        type=Path,
        default=ROOT,
        help="tree with main.py and omi_receiver/ for the two functions (default: this one)",
    )
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        devices=args.devices,
        minutes=args.minutes,
        seed=args.seed,
        speed=args.speed,
        session_gap=args.session_gap,
        max_recording=args.max_recording,
        settle=args.settle,
        pass_seconds=args.pass_seconds,
        lease_seconds=args.lease_seconds,
        ack_deadline=args.ack_deadline,
        tick_seconds=args.tick,
        error_rate=args.error_rate,
        kill_spacing=tuple(args.kill_every),
        duplicate_rate=args.duplicate_rate,
        cut_rate=args.cut_rate,
        pause_for=args.pause_for,
        keep_workdir=args.keep,
        quiet=args.quiet,
        code=args.code.resolve(),
    )


def _exit_on_signals() -> None:
    """SIGTERM and SIGINT end the run through its clean-up; a second one cannot cut that short."""
    stopping = []

    def on_signal(signum, frame):
        if stopping:
            return
        stopping.append(signum)
        sys.exit(128 + signum)  # runs the clean-up in `finally`

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    s = settings_from(args)
    _exit_on_signals()
    result = run(s)
    if not args.no_out:
        report.write(result, args.out)
        print(f"result written to {args.out}")
    return 0 if result["passed"] else 1
