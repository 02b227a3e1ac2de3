"""The command line: `python -m omi_receiver.devtools.simulate FILE.wav --url URL --uid U ...`.

Exit codes: 0 every chunk acknowledged, 1 some chunk failed or was dropped, 2 usage error
(unreadable or non-PCM16-mono WAV, bad URL or uid, bad option).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence

from omi_receiver.devtools.simulate.device import stream
from omi_receiver.devtools.simulate.options import (
    DEFAULT_BREAKER_COOLDOWN,
    DEFAULT_BREAKER_THRESHOLD,
    DEFAULT_DISABLE_AFTER,
    DEFAULT_INTERVAL,
    DEFAULT_RETRY_DELAYS,
    DEFAULT_TIMEOUT,
    Mode,
    Options,
    Retries,
    UsageError,
)
from omi_receiver.devtools.simulate.wavfile import read_wav

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _delays(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip()) if text.strip() else ()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of seconds: {text!r}") from exc
    if any(v < 0 or not math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError("retry delays must be finite and >= 0")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m omi_receiver.devtools.simulate",
        description=(
            "Send a PCM16 mono WAV file to an Omi 'Realtime audio bytes' webhook the way the "
            "Omi backend does. current: X-second batches of 1-second POSTs, one after another, "
            "Idempotency-Key per chunk, retries after 1/5/30 s, circuit breaker. legacy: one "
            "POST per X seconds, URL + '?sample_rate=..&uid=..', no key, no retries."
        ),
        epilog=(
            "Exit status: 0 every chunk acknowledged, 1 a chunk failed or was dropped, "
            "2 usage error. The summary goes to stdout (to stderr with --json, which prints "
            "a JSON object on stdout instead)."
        ),
    )
    parser.add_argument("wav", metavar="FILE.wav", help="PCM16 mono WAV, any sample rate")
    parser.add_argument("--url", required=True, help="webhook URL, http(s)://host[:port]/path")
    parser.add_argument("--uid", required=True, help="user id, ^[A-Za-z0-9_-]{1,128}$")
    parser.add_argument(
        "--mode", choices=list(Mode), default=Mode.CURRENT, help="which sender to emulate (default: %(default)s)"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="X",
        help="seconds of audio per batch, the app's 'every x seconds' (default: %(default)s)",
    )
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--fast", action="store_true", help="send as fast as answers come instead of in real time")
    pace.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="N",
        help="release batches N times faster than real time (default: 1)",
    )
    parser.add_argument("--ledger", metavar="FILE", help="append one JSON line per acknowledged chunk to FILE")
    _add_failure_options(parser)
    _add_fault_options(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar (there is none either when stderr is not a terminal)"
    )
    return parser


def _add_failure_options(parser: argparse.ArgumentParser) -> None:
    """How the sender answers failures (Retries) and its timeout."""
    parser.add_argument(
        "--retry-delays",
        type=_delays,
        default=DEFAULT_RETRY_DELAYS,
        metavar="S,S,...",
        help="current mode: seconds before each retry (default: 1,5,30, i.e. 4 attempts)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT[1],
        metavar="SECONDS",
        help="read timeout per POST in seconds (default: %(default)s; connect: 2 s)",
    )
    parser.add_argument(
        "--breaker-threshold",
        type=int,
        default=DEFAULT_BREAKER_THRESHOLD,
        metavar="N",
        help="current mode: failed chunks in a row that open the circuit breaker (default: %(default)s)",
    )
    parser.add_argument(
        "--breaker-cooldown",
        type=float,
        default=DEFAULT_BREAKER_COOLDOWN,
        metavar="SECONDS",
        help="current mode: wall-clock seconds the open breaker skips sends (default: %(default)s)",
    )
    parser.add_argument(
        "--disable-after",
        type=int,
        default=DEFAULT_DISABLE_AFTER,
        metavar="N",
        help="current mode: failed chunks in a row after which the sender "
        "gives up, like the disabled webhook (default: %(default)s)",
    )


def _add_fault_options(parser: argparse.ArgumentParser) -> None:
    """Duplicates, a disconnect, and which part of the audio is sent."""
    parser.add_argument(
        "--duplicate-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="current mode: probability of POSTing an acked chunk again "
        "with the same Idempotency-Key, as after a lost response "
        "(default: 0)",
    )
    parser.add_argument(
        "--pause-after",
        type=float,
        metavar="SECONDS",
        help="emulate a device disconnect after this much audio (rounded up to a whole chunk in current mode)",
    )
    parser.add_argument(
        "--pause-for",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wall-clock length of that disconnect, also with --fast (default: 0)",
    )
    parser.add_argument(
        "--start-offset",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="skip this much audio at the start of the file",
    )
    parser.add_argument("--max-seconds", type=float, metavar="SECONDS", help="send at most this much audio")
    parser.add_argument("--seed", type=int, help="random seed for the duplicate decisions")


def options_from(args: argparse.Namespace) -> Options:
    """The Options the parsed flags ask for; UsageError for a bad combination."""
    return Options(
        mode=args.mode,
        interval=args.interval,
        fast=args.fast,
        speed=args.speed,
        timeout=(DEFAULT_TIMEOUT[0], args.timeout),
        retries=Retries(
            delays=args.retry_delays,
            breaker_threshold=args.breaker_threshold,
            breaker_cooldown=args.breaker_cooldown,
            disable_after=args.disable_after,
        ),
        pause_after=args.pause_after,
        pause_for=args.pause_for,
        start_offset=args.start_offset,
        max_seconds=args.max_seconds,
        duplicate_rate=args.duplicate_rate,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        pcm, rate = read_wav(args.wav)
        if not pcm:
            raise UsageError(f"{args.wav}: no audio")
        summary = stream(pcm, rate, args.url, args.uid, options_from(args), ledger=args.ledger, progress=not args.quiet)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # e.g. the ledger cannot be opened
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(summary.line(), file=sys.stderr)
        print(json.dumps(summary.to_dict(), sort_keys=True))
    else:
        print(summary.line())
    return EXIT_OK if summary.ok else EXIT_FAILED
