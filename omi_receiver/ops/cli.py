"""`omi-receiver`: find, fetch and delete audio and replay dead letters, without the Console.

    omi-receiver recordings list     --uid U [--since DATE] [--json]
    omi-receiver recordings download --uid U [--id ID | --since DATE] [-o DIR] [--wav]
    omi-receiver recordings erase    --uid U [--yes]
    omi-receiver recordings stats    [--json]
    omi-receiver dlq inspect         [--limit N] [--json]
    omi-receiver dlq replay          [--limit N]

Also `python -m omi_receiver ...`. Settings come from the functions' environment variables
(RECORDINGS_BUCKET, GOOGLE_CLOUD_PROJECT, DEAD_LETTER_TOPIC, ASSEMBLER_SHARDS, ...); the
emulator variables point it at the local stack: `set -a; . .local/stack.env; set +a`.
Exit status: 0 done, 1 it could not be done (the reason on stderr), 2 bad usage (a --uid
ingest would refuse, a --since that is not a date). Cloud Storage or Pub/Sub out of reach
ends a command within about 15 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from google.api_core import exceptions
from google.auth.exceptions import DefaultCredentialsError, RefreshError
from google.cloud.storage.retry import DEFAULT_RETRY

from omi_receiver.ops import deadletter, explain
from omi_receiver.ops.catalog import Catalog, CatalogError, decode_to_wav, parse_since, recording_info, suffix_of
from omi_receiver.ops.erase import erase_user
from omi_receiver.runtime import clients, logs
from omi_receiver.runtime.assembler import Assembler, LeaseBusy
from omi_receiver.runtime.assembler.recording import state_name
from omi_receiver.runtime.config import Config, ConfigError
from omi_receiver.runtime.contract import UID_PATTERN, InvalidChunk, check_uid

# Someone waits at the terminal: give Cloud Storage ~10 s of retries, each request 3 s to
# connect and 5 s between bytes (the client's defaults: 120 s of retries, 60 s per request),
# so a bucket out of reach is a one-line error within ~15 s, not a traceback after two minutes.
STORAGE_RETRY = DEFAULT_RETRY.with_timeout(10.0)
STORAGE_TIMEOUT = (3.0, 5.0)


class CommandError(Exception):
    """Printed as `error: <message>`, exit status 1."""


# --- recordings -----------------------------------------------------------------------------


def _config(*required: str) -> Config:
    config = Config.from_env()
    config.require(*required)
    return config


def _catalog(config: Config) -> Catalog:
    _check_emulator_hosts("STORAGE_EMULATOR_HOST")
    return Catalog(clients.storage_client(), config.recordings_bucket, retry=STORAGE_RETRY, timeout=STORAGE_TIMEOUT)


def _check_emulator_hosts(*names: str) -> None:
    """The two variables take different forms (a URL; host:port), and each written in the
    other's form fails deep inside its client."""
    storage, pubsub = os.environ.get("STORAGE_EMULATOR_HOST"), os.environ.get("PUBSUB_EMULATOR_HOST")
    if "STORAGE_EMULATOR_HOST" in names and storage and not storage.startswith(("http://", "https://")):
        raise CommandError(f"STORAGE_EMULATOR_HOST={storage!r} is not a URL: give its scheme, e.g. http://{storage}")
    if "PUBSUB_EMULATOR_HOST" in names and pubsub and "://" in pubsub:
        raise CommandError(
            f"PUBSUB_EMULATOR_HOST={pubsub!r} is host:port, without a scheme: {pubsub.split('://', 1)[1]}"
        )


def cmd_list(args) -> int:
    config = _config("recordings_bucket")
    found = _catalog(config).recordings(args.uid, _since(args))
    if args.json:
        print(json.dumps([info.to_json() for info in found], indent=1))
        return 0
    rows = [("START (UTC)", "DURATION", "SIZE", "RATE", "FORMAT", "STATUS", "ID")]
    rows += [
        (
            info.start.strftime("%Y-%m-%d %H:%M:%S"),
            _duration(info.duration_seconds),
            _size(info.bytes),
            f"{info.sample_rate} Hz",
            info.format,
            info.status + (" (late)" if info.late else ""),
            info.id,
        )
        for info in found
    ]
    _table(rows)
    if not found:
        print(f"no recordings of {args.uid} since {args.since}")
    return 0


def cmd_download(args) -> int:
    config = _config("recordings_bucket")
    catalog = _catalog(config)
    found = catalog.recordings(args.uid, _since(args))
    if args.id:
        wanted = args.id.rsplit("/", 1)[-1]
        wanted = wanted.removesuffix(suffix_of(wanted) or "")
        found = [info for info in found if info.id == wanted]
        if not found:
            raise CommandError(
                f"{args.uid} has no recording with id {args.id!r} (`recordings list --uid {args.uid}` shows the ids)"
            )
    if not found:
        raise CommandError(f"no recordings of {args.uid} since {args.since}")
    directory = Path(args.output)
    total = sum(info.bytes for info in found)
    with _progress(total, f"{len(found)} recording(s)", args.quiet) as bar:
        for info in found:
            path, got = catalog.download(info, directory, _advance(bar))
            bar.write(f"{path}  {_size(got.bytes)}  {got.status}  crc32c {got.crc32c} verified")
            if args.wav and got.format != "wav":
                bar.write(f"{decode_to_wav(path)}  decoded from {got.format}")
    return 0


def cmd_erase(args) -> int:
    config = _config("recordings_bucket", "google_cloud_project")
    if not _preview_erase(_catalog(config), config, args.uid):
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise CommandError("not erasing without confirmation: stdin is not a terminal; pass --yes")
        if _answer(f"Type the uid ({args.uid}) to erase: ") != args.uid:
            print("nothing erased")
            return 1
    erased = _erase_when_free(config, args.uid)
    print(
        f"erased {len(erased.deleted)} object(s) of {args.uid}; {state_name(args.uid)} is kept as the erase "
        "marker (no audio)"
    )
    if erased.failed:
        raise CommandError(f"{len(erased.failed)} object(s) could not be deleted: run the erase again")
    return 0


def _preview_erase(catalog: Catalog, config: Config, uid: str) -> bool:
    """Show what an erase deletes; False when there is nothing to erase. The preview is for
    the confirmation only: erase_user lists again under the user's lease."""
    objects = catalog.user_objects(uid)
    recordings = [info for info in map(recording_info, objects) if info]
    others = [b for b in objects if b.name != state_name(uid) and not recording_info(b)]
    if not recordings and not others:
        if any(b.name == state_name(uid) for b in objects):
            print(f"{uid} has nothing stored to erase")
            return False
        catalog.recordings(uid)  # raises the clear "unknown uid" / "empty bucket" error
    print(f"This deletes every object of {uid} in gs://{config.recordings_bucket}:")
    for info in sorted(recordings, key=lambda i: i.name):
        print(f"  {info.name}  {_duration(info.duration_seconds)}  {_size(info.bytes)}  {info.status}")
    if others:
        print(
            f"  and {len(others)} other object(s) ({_size(sum(b.size or 0 for b in others))}): "
            "temporary audio and files next to the recordings"
        )
    print("  (chunks still in flight from before the erase are dropped when they arrive)")
    return True


def _erase_when_free(config: Config, uid: str):
    """Erase once no assembler pass holds the user; a pass's lease ends within LEASE_SECONDS."""
    assembler = Assembler(config, storage_retry=STORAGE_RETRY)
    deadline = time.monotonic() + config.lease_seconds + 30
    while True:
        try:
            return erase_user(assembler, uid, progress=lambda name: print(f"deleted {name}"))
        except LeaseBusy:
            if time.monotonic() > deadline:
                raise CommandError(
                    f"an assembler pass kept {uid} busy for {config.lease_seconds} s; try again"
                ) from None
            print("waiting for the assembler to finish with this user...", file=sys.stderr)
            time.sleep(2)


def cmd_stats(args) -> int:
    config = _config("recordings_bucket")
    stats = _catalog(config).stats()
    if args.json:
        print(json.dumps(stats, indent=1))
        return 0
    if not stats["recordings"]:
        print(f"gs://{stats['bucket']} holds no recordings yet")
    _table(
        [
            ("bucket", f"gs://{stats['bucket']}"),
            ("users", stats["users"]),
            ("recordings", stats["recordings"]),
            ("open recordings", stats["open_recordings"]),
            ("hours", f"{stats['hours']:.2f}"),
            ("stored", _size(stats["bytes"])),
            ("temporary", _size(stats["temporary_bytes"])),
        ]
    )
    return 0


# --- dead letters ---------------------------------------------------------------------------


def cmd_dlq_inspect(args) -> int:
    config = _config("google_cloud_project")
    _check_emulator_hosts("PUBSUB_EMULATOR_HOST")
    letters = deadletter.inspect(config, args.limit)
    if args.json:
        print(json.dumps([_letter_json(d) for d in letters], indent=1))
        return 0
    if not letters:
        print(f"no dead letters waiting in {config.dead_letter_hold_subscription}")
        return 0
    rows = [("PUBLISHED (UTC)", "UID", "CHUNK ID", "RECEIVED AT", "BYTES", "ATTEMPTS", "REPLAYABLE")]
    rows += [
        (
            d.publish_time.strftime("%Y-%m-%d %H:%M:%S"),
            d.uid or "-",
            d.chunk_id or "-",
            d.received_at or "-",
            d.bytes,
            d.delivery_attempts or "-",
            "yes" if d.replayable else f"no: {d.reason}",
        )
        for d in letters
    ]
    _table(rows)
    print(f"{len(letters)} message(s) waiting in {config.dead_letter_hold_subscription}")
    return 0


def cmd_dlq_replay(args) -> int:
    config = _config("google_cloud_project")
    _check_emulator_hosts("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")  # replay reads the users' states
    with _progress(args.limit, "replayed", args.quiet, unit="msg") as bar:
        report = deadletter.replay(
            config, args.limit, progress=lambda done, total: bar.update(done - bar.n), storage_retry=STORAGE_RETRY
        )
    print(
        f"replayed {len(report.replayed)}, already assembled (acked, not replayed) "
        f"{len(report.already_assembled)}, left as poison {len(report.skipped_poison)}, "
        f"still waiting {report.remaining}"
    )
    for letter in report.skipped_poison:
        print(f"  poison {letter.message_id} uid={letter.uid} chunk_id={letter.chunk_id}: {letter.reason}")
    return 0


# --- plumbing -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omi-receiver",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="{recordings,dlq}")

    recordings = groups.add_parser("recordings", help="list, download, erase recordings; bucket stats")
    commands = recordings.add_subparsers(dest="command", required=True)
    p = commands.add_parser("list", help="a user's recordings, newest first")
    p.add_argument("--uid", required=True)
    p.add_argument("--since", help="only recordings starting at or after this date/time (UTC unless given)")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(run=cmd_list)

    p = commands.add_parser(
        "download",
        help="download recordings, verifying size and CRC32C",
        description="Download recordings as stored, verifying size and CRC32C: <id>.wav, or <id>.flac / "
        "<id>.opus for a compacted recording (COMPACTION_FORMAT). --wav decodes those to <id>.wav "
        "(PCM16; FLAC gives the original samples exactly, Opus what it decodes to).",
    )
    p.add_argument("--uid", required=True)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--id", help="one recording (its id from `list`, or its object name)")
    which.add_argument("--since", help="recordings starting at or after this date/time")
    p.add_argument("-o", "--output", default=".", help="directory to write to (default: .)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--wav", action="store_true", help="decode a compacted .flac or .opus to <id>.wav after the check")
    p.set_defaults(run=cmd_download)

    p = commands.add_parser("erase", help="delete every object of a user (privacy requests)")
    p.add_argument("--uid", required=True)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(run=cmd_erase)

    p = commands.add_parser("stats", help="users, recordings, hours and bytes stored, open recordings")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_stats)

    dlq = groups.add_parser("dlq", help="dead-lettered chunks: inspect, replay")
    commands = dlq.add_subparsers(dest="command", required=True)
    p = commands.add_parser("inspect", help="show what waits in the dead-letter hold subscription (consumes nothing)")
    p.add_argument("--limit", type=_positive, help="show at most N")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_dlq_inspect)
    p = commands.add_parser("replay", help="send valid dead-lettered chunks back to their chunk topic")
    p.add_argument("--limit", type=_positive, help="replay at most N")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_dlq_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.for_command_line()
    _check_usage(args)
    try:
        return args.run(args)
    except (CommandError, CatalogError, ConfigError, deadletter.DeadLetterError) as exc:
        return _fail(str(exc))
    except (DefaultCredentialsError, RefreshError):
        return _fail(explain.NO_CREDENTIALS)
    except exceptions.Forbidden as exc:
        return _fail(f"permission denied: {exc.message}")
    except exceptions.GoogleAPICallError as exc:
        return _fail(f"Google Cloud answered {exc.code}: {exc.message}")
    except explain.UNREACHABLE as exc:  # Cloud Storage (deadletter explains Pub/Sub's itself)
        return _fail(explain.out_of_reach("Cloud Storage", f"bucket {os.environ.get('RECORDINGS_BUCKET')}", exc))
    except KeyboardInterrupt:
        return _fail("interrupted")


def _check_usage(args) -> None:
    """Argument mistakes are usage errors (one line, exit status 2) before anything is read
    or written. The uid follows ingest's rule: one with a `/` would name objects of another
    user (`carol/<day>` is carol's recordings of that day)."""
    uid = getattr(args, "uid", None)
    if uid is not None:
        try:
            check_uid(uid)
        except InvalidChunk:
            _usage(f"--uid {uid!r} is not a uid ingest accepts: it must match {UID_PATTERN.pattern}")
    if getattr(args, "since", None):
        try:
            parse_since(args.since)
        except CatalogError as exc:
            _usage(str(exc))


def _usage(message: str) -> None:
    build_parser().exit(2, f"omi-receiver: error: {message}\n")


def _answer(prompt: str) -> str:
    try:
        return input(prompt).strip()
    except EOFError:  # stdin ended (Ctrl-D): no answer
        print()
        return ""


def _advance(bar):
    """A download's progress callback: moves the bar from where it stands now."""
    before = bar.n
    return lambda done, size: bar.update(before + done - bar.n)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _since(args):
    return parse_since(args.since) if getattr(args, "since", None) else None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _progress(total, desc: str, quiet: bool, unit: str = "B"):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024,
        disable=quiet or None,
        file=sys.stderr,
        leave=False,
    )


def _table(rows) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def _letter_json(letter) -> dict:
    body = dataclasses.asdict(letter)
    body["publish_time"] = letter.publish_time.isoformat()
    return body
