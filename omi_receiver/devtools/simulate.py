"""Omi device simulator: sends a WAV file to a webhook the way the Omi backend does.

    python -m omi_receiver.devtools.simulate FILE.wav --url URL --uid U [--mode current|legacy]
        [--interval X] [--fast | --speed N] [--ledger FILE] [--json] ...

Two senders are emulated, as described in "How the Omi backend calls the webhook":

current (Omi backend 2025-2026)
    The audio is released in batches of X seconds (`--interval`). Each batch is split into
    1-second POSTs (`sample_rate * 2` bytes; only the very last chunk of the stream may be
    shorter), sent one after another: a POST starts only after the previous one was
    answered. The query is merged (`sample_rate` and `uid` replace any present, the other
    parameters are kept), every chunk carries a fresh `Idempotency-Key` that stays the same
    on its retries. Retries after 1 s, 5 s and 30 s on network errors, 5xx, 408 and 429;
    other statuses are final. When a chunk fails, the rest of its batch is dropped (never
    sent, counted as `dropped`). After 5 failed chunks in a row a circuit breaker skips
    sends for 30 s (batches released meanwhile are dropped); after 100 in a row the webhook
    is "disabled" and everything left is dropped.

legacy (self-hosted backends)
    One POST per X seconds of audio, URL built by string concatenation
    (`url + "?sample_rate=...&uid=..."`, so a URL with a query gets a second `?`), no
    Idempotency-Key, no retries: a failed POST is simply lost.

Cut uploads (`cut_rate`, current mode, for the soak): the first attempt of a share of
the chunks declares the full Content-Length but sends only part of the body and closes
the connection (`send_cut`); the sender sees a network error and retries as usual.

Differences from the real sender, on purpose: the last partial interval of the file is
sent (the real sender never sends the last partial interval of a conversation); a batch is
exactly X seconds, not "a bit more".

Pacing: by default a batch is released when its audio has been "recorded", i.e. at
`start + (audio position at the end of the batch) / speed` - real time for `--speed 1`,
the way the backend buffers X seconds before sending; the 1-s POSTs of one batch go back
to back. `--fast` sends as fast as the answers come. The circuit breaker and
`--pause-for` always run on wall-clock time.

Programmatic use (demo, benchmarks, soak)::

    pcm, rate = read_wav("samples/speech-16k.wav")
    summary = stream(pcm, rate, "http://127.0.0.1:8080/ingest/TOKEN", "u1", fast=True)
    assert summary.ok

Exit codes of the CLI: 0 every chunk acknowledged, 1 some chunk failed or was dropped,
2 usage error (unreadable or non-PCM16-mono WAV, bad URL or uid, bad option).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import random
import socket
import ssl
import sys
import threading
import time
import uuid
import wave
from pathlib import Path
from typing import IO, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from omi_receiver.runtime import contract

MODE_CURRENT = "current"
MODE_LEGACY = "legacy"
MODES = (MODE_CURRENT, MODE_LEGACY)

DEFAULT_INTERVAL = 1.0
DEFAULT_TIMEOUT = (2.0, 15.0)  # (connect, read) seconds, as the real sender
DEFAULT_RETRY_DELAYS = (1.0, 5.0, 30.0)  # 4 attempts in all
DEFAULT_BREAKER_THRESHOLD = 5
DEFAULT_BREAKER_COOLDOWN = 30.0
DEFAULT_DISABLE_AFTER = 100
CUT_LINGER_MAX = 1.0  # seconds a "slow" cut upload waits, sending nothing, before it closes
# The sender accepts 1000-192000 Hz; the receiver's contract is narrower (8000-48000),
# so a simulator may send rates the receiver must reject.
SENDER_MIN_SAMPLE_RATE = 1000
SENDER_MAX_SAMPLE_RATE = 192000
RETRYABLE_STATUSES = frozenset({408, 429})
BYTES_PER_SAMPLE = contract.BYTES_PER_SAMPLE

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad input to the simulator (file, URL, uid, option); the CLI exits with 2."""


# --- input ---------------------------------------------------------------------------

def read_wav(path: str | Path) -> tuple[bytes, int]:
    """(PCM16 LE mono bytes, sample_rate) of a WAV file; UsageError for anything else."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            if wav.getcomptype() != "NONE":
                raise UsageError(f"{path}: compressed WAV ({wav.getcompname()}); need PCM16")
            if width != BYTES_PER_SAMPLE:
                raise UsageError(f"{path}: {8 * width}-bit samples; need 16-bit PCM")
            if channels != 1:
                raise UsageError(f"{path}: {channels} channels; need mono")
            pcm = wav.readframes(wav.getnframes())
    except UsageError:
        raise
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: no such file") from exc
    except (wave.Error, EOFError) as exc:
        # wave only reads WAVE_FORMAT_PCM; float, A-law, extensible etc. land here.
        raise UsageError(f"{path}: not a PCM16 mono WAV file ({exc})") from exc
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc})") from exc
    return pcm, rate


# --- URLs -----------------------------------------------------------------------------

def check_url(url: str, mode: str = MODE_CURRENT) -> str:
    """The URL if the sender of `mode` would accept it; UsageError otherwise.

    Both senders need http(s) and a host. The current sender also rejects a URL with a
    query but no path (`https://host?x=1`): nothing is ever sent to it.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise UsageError(f"bad URL {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"bad URL {url!r}: need http(s)://host[:port]/path")
    if mode == MODE_CURRENT and parts.query and not parts.path:
        raise UsageError(
            f"bad URL {url!r}: a query needs a path (http(s)://host/path?...); "
            "the Omi sender rejects this URL and never sends"
        )
    return url


def current_url(url: str, sample_rate: int, uid: str) -> str:
    """Current sender: existing query kept, `sample_rate` and `uid` replaced."""
    parts = urlsplit(url)
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key not in ("sample_rate", "uid")
    ]
    query += [("sample_rate", str(sample_rate)), ("uid", uid)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def legacy_url(url: str, sample_rate: int, uid: str) -> str:
    """Legacy sender: plain concatenation; a URL with a query gets a second '?'."""
    return f"{url}?sample_rate={sample_rate}&uid={uid}"


# --- the schedule ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Piece:
    """One POST body: pcm[start:end], the `seq`-th chunk of the stream."""

    seq: int
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class Batch:
    """Chunks released together once `release` bytes of audio have been recorded."""

    release: int
    pieces: tuple[Piece, ...]
    after_pause: bool


def plan(
    total_bytes: int,
    sample_rate: int,
    mode: str,
    interval: float,
    pause_after: float | None = None,
) -> list[Batch]:
    """Split `total_bytes` of audio into batches of POST bodies, in sending order.

    current: 1-s chunks (only the stream's last chunk shorter), grouped into batches of
    `interval` seconds of audio. legacy: one chunk of `interval` seconds per batch.
    With `pause_after`, the stream is cut there (rounded up to a whole chunk in current
    mode) and batching restarts after the pause, as after a device reconnect; in legacy
    mode the batch before the pause is shorter.
    """
    second = sample_rate * BYTES_PER_SAMPLE
    batch_bytes = max(1, round(interval * sample_rate)) * BYTES_PER_SAMPLE
    chunk_bytes = second if mode == MODE_CURRENT else batch_bytes
    segments = [(0, total_bytes)]
    if pause_after is not None:
        cut = round(pause_after * sample_rate) * BYTES_PER_SAMPLE
        if mode == MODE_CURRENT:
            cut = -(-cut // chunk_bytes) * chunk_bytes
        if 0 < cut < total_bytes:
            segments = [(0, cut), (cut, total_bytes)]
    batches: list[Batch] = []
    seq = 0
    for index, (seg_start, seg_end) in enumerate(segments):
        grouped: dict[int, list[Piece]] = {}
        for start in range(seg_start, seg_end, chunk_bytes):
            end = min(start + chunk_bytes, seg_end)
            release = min(seg_start + -(-(end - seg_start) // batch_bytes) * batch_bytes, seg_end)
            grouped.setdefault(release, []).append(Piece(seq, start, end))
            seq += 1
        batches += [Batch(r, tuple(p), index > 0) for r, p in grouped.items()]
    return batches


# --- results --------------------------------------------------------------------------

@dataclasses.dataclass
class Summary:
    """What one stream did. `sent` counts every POST (first attempts, retries, duplicates)."""

    mode: str
    uid: str
    sample_rate: int
    chunks: int = 0        # chunks in the schedule
    sent: int = 0          # POST requests made
    acked: int = 0         # chunks answered 2xx (duplicates not counted)
    retried: int = 0       # POSTs that were retries of a chunk
    failed: int = 0        # chunks whose attempts all failed or got a final status
    dropped: int = 0       # chunks never sent: rest of a failed batch, breaker open, stopped
    duplicates: int = 0    # extra POSTs of acked chunks (--duplicate-rate)
    cuts: int = 0          # first attempts cut part-way (cut_rate), each then retried
    bytes_acked: int = 0
    elapsed_s: float = 0.0
    breaker_trips: int = 0
    disabled: bool = False  # the sender gave up after `disable_after` failures in a row
    stopped: bool = False   # the `stop` event ended the stream early
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)  # "200", "error", ...

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.dropped == 0 and not self.stopped

    def line(self) -> str:
        return (
            f"{self.mode} uid={self.uid} rate={self.sample_rate}: "
            f"sent {self.sent}, acked {self.acked}/{self.chunks}, retried {self.retried}, "
            f"failed {self.failed}, dropped {self.dropped}, duplicates {self.duplicates}, "
            f"bytes acked {self.bytes_acked}, elapsed {self.elapsed_s:.2f} s"
        )

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "ok": self.ok}


# --- ledger ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LedgerEntry:
    """One acknowledged chunk as the simulator saw it."""

    uid: str
    chunk_id: str | None  # response body's chunk_id, else the Idempotency-Key (legacy: None)
    bytes: int
    sha256: str
    sample_rate: int
    seq: int
    acked_at: str  # RFC 3339 UTC


def write_ledger_entry(out: IO[str], entry: LedgerEntry) -> None:
    out.write(json.dumps(dataclasses.asdict(entry), separators=(",", ":")) + "\n")
    out.flush()


def read_ledger(path: str | Path) -> list[LedgerEntry]:
    """All entries of a ledger file. A torn last line (writer killed) is ignored."""
    entries = []
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(LedgerEntry(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            if number == len(lines):  # no newline after it: an interrupted write
                break
            raise ValueError(f"{path}:{number}: bad ledger line ({exc})") from exc
    return entries


# --- sending --------------------------------------------------------------------------

@dataclasses.dataclass
class _Outcome:
    ok: bool
    status: int | None
    body: bytes = b""


def _retryable(outcome: _Outcome) -> bool:
    if outcome.status is None:  # network error or timeout
        return True
    return outcome.status >= 500 or outcome.status in RETRYABLE_STATUSES


def _response_chunk_id(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("chunk_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def _headers(key: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/octet-stream"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


@dataclasses.dataclass(frozen=True)
class Cut:
    """How a cut upload ends: after `sent` bytes of the body the connection is closed, at
    once (`linger` 0) or after `linger` seconds of sending nothing (a slow upload that stops)."""

    sent: int
    linger: float = 0.0


def plan_cut(rng: random.Random, size: int) -> Cut:
    """A cut strictly inside a body of `size` bytes: no body at all one time in ten, else
    anywhere (so about half odd); a third of the cuts wait up to CUT_LINGER_MAX s first."""
    sent = 0 if size < 2 or rng.random() < 0.1 else rng.randrange(1, size)
    linger = rng.uniform(0.1, CUT_LINGER_MAX) if rng.random() < 1 / 3 else 0.0
    return Cut(sent, linger)


def send_cut(session: requests.Session, url: str, body: bytes, key: str | None, cut: Cut,
             timeout: float = DEFAULT_TIMEOUT[0]) -> None:
    """Start the POST the sender would make, but send only `cut.sent` bytes of `body`, then
    close the connection (after `cut.linger` s). No answer is read: there is none to read.

    Why: an upload cut by the network (a dropped connection, a stalled slow upload) leaves
    the receiver holding less body than Content-Length announced, and the sender, seeing a
    network error, retries the whole chunk under the same Idempotency-Key. A receiver that
    keeps the partial body then stores it in place of the chunk it acknowledges later
    (issue 12). requests will not send fewer bytes than it declares, hence the raw socket;
    the request line and headers are the ones `session` would send.
    """
    request = session.prepare_request(
        requests.Request("POST", url, data=body, headers=_headers(key)))
    parts = urlsplit(request.url)
    head = [f"POST {request.path_url} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}"]
    head += [f"{name}: {value}" for name, value in request.headers.items()]
    sock = socket.create_connection(
        (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), timeout=timeout)
    try:
        if parts.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body[:cut.sent])
        time.sleep(cut.linger)
    finally:
        sock.close()


class _Sender:
    def __init__(self, session, summary, timeout):
        self.session, self.summary, self.timeout = session, summary, timeout

    def post(self, url: str, body: bytes, key: str | None, cut: Cut | None = None) -> _Outcome:
        self.summary.sent += 1
        if cut is not None:
            return self._post_cut(url, body, key, cut)
        try:
            response = self.session.post(
                url, data=body, headers=_headers(key), timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException:
            self.summary.statuses["error"] = self.summary.statuses.get("error", 0) + 1
            return _Outcome(False, None)
        code = str(response.status_code)
        self.summary.statuses[code] = self.summary.statuses.get(code, 0) + 1
        return _Outcome(200 <= response.status_code < 300, response.status_code, response.content)

    def _post_cut(self, url: str, body: bytes, key: str | None, cut: Cut) -> _Outcome:
        """A POST cut part-way (send_cut): to the sender, a network error."""
        self.summary.cuts += 1
        self.summary.statuses["cut"] = self.summary.statuses.get("cut", 0) + 1
        with contextlib.suppress(OSError):
            send_cut(self.session, url, body, key, cut, self.timeout[0])
        return _Outcome(False, None)


def _progress(total_s: float, enabled: bool, uid: str):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=round(total_s, 3), unit="s", desc=uid, file=sys.stderr, leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s audio "
                           "[{elapsed}<{remaining}{postfix}]")


def stream(
    pcm: bytes,
    sample_rate: int,
    url: str,
    uid: str,
    *,
    mode: str = MODE_CURRENT,
    interval: float = DEFAULT_INTERVAL,
    fast: bool = False,
    speed: float = 1.0,
    ledger: str | Path | None = None,
    retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    breaker_threshold: int = DEFAULT_BREAKER_THRESHOLD,
    breaker_cooldown: float = DEFAULT_BREAKER_COOLDOWN,
    disable_after: int = DEFAULT_DISABLE_AFTER,
    duplicate_rate: float = 0.0,
    cut_rate: float = 0.0,
    pause_after: float | None = None,
    pause_for: float = 0.0,
    start_offset: float = 0.0,
    max_seconds: float | None = None,
    seed: int | None = None,
    progress: bool = False,
    stop: threading.Event | None = None,
    session: requests.Session | None = None,
) -> Summary:
    """Send `pcm` (PCM16 LE mono at `sample_rate`) to `url` as Omi device `uid`.

    Blocks until the whole stream was sent (or `stop` was set); returns the Summary.
    Raises UsageError for bad arguments before anything is sent. Thread-safe across
    streams: run one per thread to emulate several devices (pass `progress=False`).
    `cut_rate`: share of chunks whose first attempt is a cut upload (send_cut, plan_cut),
    then retried like any network error. `seed` makes the duplicate and cut decisions
    reproducible; Idempotency-Keys are always fresh uuid4 values so that concurrent
    simulators never share one.
    """
    _check_args(pcm, sample_rate, url, uid, mode, interval, speed, duplicate_rate, cut_rate,
                pause_after, pause_for, start_offset, max_seconds, retry_delays)
    second = sample_rate * BYTES_PER_SAMPLE
    first = round(start_offset * sample_rate) * BYTES_PER_SAMPLE
    last = len(pcm)
    if max_seconds is not None:
        last = min(last, first + round(max_seconds * sample_rate) * BYTES_PER_SAMPLE)
    if pcm and first >= len(pcm):
        raise UsageError(f"start offset {start_offset} s is beyond the end of the audio")
    pcm = memoryview(pcm)[first:last]
    batches = plan(len(pcm), sample_rate, mode, interval, pause_after)
    target_url = (current_url if mode == MODE_CURRENT else legacy_url)(url, sample_rate, uid)
    summary = Summary(mode, uid, sample_rate, chunks=sum(len(b.pieces) for b in batches))
    stop = stop or threading.Event()
    rng = random.Random(seed)
    ledger_file = open(ledger, "a", encoding="utf-8") if ledger is not None else None
    own_session = session is None
    session = session or requests.Session()
    sender = _Sender(session, summary, timeout)
    bar = _progress(len(pcm) / second, progress, uid)

    def done(piece: Piece) -> None:
        if bar is not None:
            bar.update((piece.end - piece.start) / second)
            bar.set_postfix(acked=summary.acked, failed=summary.failed + summary.dropped,
                            refresh=False)

    def drop(pieces: Sequence[Piece]) -> None:
        summary.dropped += len(pieces)
        for piece in pieces:
            done(piece)

    def send(piece: Piece) -> bool:
        """POST one chunk (with retries in current mode); True when acknowledged."""
        body = bytes(pcm[piece.start:piece.end])
        key = str(uuid.uuid4()) if mode == MODE_CURRENT else None
        cut = plan_cut(rng, len(body)) if cut_rate and rng.random() < cut_rate else None
        outcome = sender.post(target_url, body, key, cut)
        if mode == MODE_CURRENT:
            for delay in retry_delays:
                if outcome.ok or not _retryable(outcome) or stop.wait(delay):
                    break
                summary.retried += 1
                outcome = sender.post(target_url, body, key)
        if not outcome.ok:
            summary.failed += 1
            done(piece)
            return False
        summary.acked += 1
        summary.bytes_acked += len(body)
        if ledger_file is not None:
            write_ledger_entry(ledger_file, LedgerEntry(
                uid=uid,
                chunk_id=_response_chunk_id(outcome.body) or key,
                bytes=len(body),
                sha256=hashlib.sha256(body).hexdigest(),
                sample_rate=sample_rate,
                seq=piece.seq,
                acked_at=contract.format_time(contract.now_us()),
            ))
        if duplicate_rate and rng.random() < duplicate_rate:
            # What a retry after a lost response looks like: same body, same key. Its
            # answer changes nothing the sender knows, so it is only counted.
            summary.duplicates += 1
            sender.post(target_url, body, key)
        done(piece)
        return True

    started = time.monotonic()
    origin = started  # wall time at which audio position 0 was "recorded"
    failures_in_row = 0
    breaker_until = 0.0
    try:
        for number, batch in enumerate(batches):
            now = time.monotonic()
            pause_starts = batch.after_pause and not batches[number - 1].after_pause
            if pause_starts:
                # Device disconnect: nothing is recorded or sent for `pause_for` seconds.
                origin += pause_for
            wait_until = now if fast else origin + batch.release / second / speed
            if pause_starts:
                wait_until = max(wait_until, now + pause_for)
            if wait_until > now:
                stop.wait(wait_until - now)
            if summary.disabled or time.monotonic() < breaker_until:
                drop(batch.pieces)
                continue
            for index, piece in enumerate(batch.pieces):
                if stop.is_set():
                    break
                if send(piece):
                    failures_in_row = 0
                    continue
                if mode == MODE_LEGACY:
                    continue  # the batch is lost; the legacy sender has no breaker
                # Current sender: the rest of the batch is dropped, audio never kept.
                drop(batch.pieces[index + 1:])
                failures_in_row += 1
                if failures_in_row >= disable_after:
                    summary.disabled = True
                elif failures_in_row >= breaker_threshold:
                    summary.breaker_trips += 1
                    breaker_until = time.monotonic() + breaker_cooldown
                break
            if stop.is_set():
                summary.stopped = True
                unsent = summary.chunks - summary.acked - summary.failed - summary.dropped
                summary.dropped += unsent
                break
    finally:
        summary.elapsed_s = round(time.monotonic() - started, 3)
        if ledger_file is not None:
            ledger_file.close()
        if bar is not None:
            bar.close()
        if own_session:
            session.close()
    return summary


def _check_args(pcm, sample_rate, url, uid, mode, interval, speed, duplicate_rate, cut_rate,
                pause_after, pause_for, start_offset, max_seconds, retry_delays) -> None:
    if mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    check_url(url, mode)
    if not isinstance(uid, str) or not contract.UID_PATTERN.fullmatch(uid):
        raise UsageError("uid must match ^[A-Za-z0-9_-]{1,128}$")
    if not SENDER_MIN_SAMPLE_RATE <= sample_rate <= SENDER_MAX_SAMPLE_RATE:
        raise UsageError(
            f"sample rate {sample_rate} outside {SENDER_MIN_SAMPLE_RATE}-{SENDER_MAX_SAMPLE_RATE}"
        )
    if len(pcm) % BYTES_PER_SAMPLE:
        raise UsageError(f"PCM16 needs an even number of bytes; got {len(pcm)}")
    checks = [
        (math.isfinite(interval) and interval > 0, "interval must be > 0"),
        (math.isfinite(speed) and speed > 0, "speed must be > 0"),
        (0.0 <= duplicate_rate <= 1.0, "duplicate rate must be in [0, 1]"),
        (0.0 <= cut_rate <= 1.0, "cut rate must be in [0, 1]"),
        (pause_after is None or pause_after > 0, "pause-after must be > 0"),
        (pause_for >= 0, "pause-for must be >= 0"),
        (start_offset >= 0, "start-offset must be >= 0"),
        (max_seconds is None or max_seconds > 0, "max-seconds must be > 0"),
        (all(d >= 0 for d in retry_delays), "retry delays must be >= 0"),
        (mode == MODE_CURRENT or not duplicate_rate,
         "duplicate rate needs --mode current (legacy has no Idempotency-Key)"),
        (mode == MODE_CURRENT or not cut_rate,
         "cut uploads need --mode current (legacy never retries)"),
    ]
    for good, message in checks:
        if not good:
            raise UsageError(message)


# --- CLI ------------------------------------------------------------------------------

def _delays(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip()) if text.strip() else ()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of seconds: {text!r}"
        ) from exc
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
    parser.add_argument("--mode", choices=MODES, default=MODE_CURRENT,
                        help="which sender to emulate (default: %(default)s)")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, metavar="X",
                        help="seconds of audio per batch, the app's 'every x seconds' "
                        "(default: %(default)s)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--fast", action="store_true",
                      help="send as fast as answers come instead of in real time")
    pace.add_argument("--speed", type=float, default=1.0, metavar="N",
                      help="release batches N times faster than real time (default: 1)")
    parser.add_argument("--ledger", metavar="FILE",
                        help="append one JSON line per acknowledged chunk to FILE")
    parser.add_argument("--retry-delays", type=_delays, default=DEFAULT_RETRY_DELAYS,
                        metavar="S,S,...",
                        help="current mode: seconds before each retry "
                        "(default: 1,5,30, i.e. 4 attempts)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT[1], metavar="SECONDS",
                        help="read timeout per POST in seconds "
                        "(default: %(default)s; connect: 2 s)")
    parser.add_argument("--breaker-threshold", type=int, default=DEFAULT_BREAKER_THRESHOLD,
                        metavar="N",
                        help="current mode: failed chunks in a row that open the circuit "
                        "breaker (default: %(default)s)")
    parser.add_argument("--breaker-cooldown", type=float, default=DEFAULT_BREAKER_COOLDOWN,
                        metavar="SECONDS",
                        help="current mode: wall-clock seconds the open breaker skips "
                        "sends (default: %(default)s)")
    parser.add_argument("--disable-after", type=int, default=DEFAULT_DISABLE_AFTER,
                        metavar="N",
                        help="current mode: failed chunks in a row after which the sender "
                        "gives up, like the disabled webhook (default: %(default)s)")
    parser.add_argument("--duplicate-rate", type=float, default=0.0, metavar="P",
                        help="current mode: probability of POSTing an acked chunk again "
                        "with the same Idempotency-Key, as after a lost response "
                        "(default: 0)")
    parser.add_argument("--pause-after", type=float, metavar="SECONDS",
                        help="emulate a device disconnect after this much audio (rounded up "
                        "to a whole chunk in current mode)")
    parser.add_argument("--pause-for", type=float, default=0.0, metavar="SECONDS",
                        help="wall-clock length of that disconnect, also with --fast "
                        "(default: 0)")
    parser.add_argument("--start-offset", type=float, default=0.0, metavar="SECONDS",
                        help="skip this much audio at the start of the file")
    parser.add_argument("--max-seconds", type=float, metavar="SECONDS",
                        help="send at most this much audio")
    parser.add_argument("--seed", type=int, help="random seed for the duplicate decisions")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (there is none either when stderr is not a "
                        "terminal)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        pcm, rate = read_wav(args.wav)
        if not pcm:
            raise UsageError(f"{args.wav}: no audio")
        summary = stream(
            pcm, rate, args.url, args.uid,
            mode=args.mode, interval=args.interval, fast=args.fast, speed=args.speed,
            ledger=args.ledger, retry_delays=args.retry_delays,
            timeout=(DEFAULT_TIMEOUT[0], args.timeout),
            breaker_threshold=args.breaker_threshold, breaker_cooldown=args.breaker_cooldown,
            disable_after=args.disable_after, duplicate_rate=args.duplicate_rate,
            pause_after=args.pause_after, pause_for=args.pause_for,
            start_offset=args.start_offset, max_seconds=args.max_seconds,
            seed=args.seed, progress=not args.quiet,
        )
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


if __name__ == "__main__":
    sys.exit(main())
