"""`stream()`: one simulated device sending its audio, wired from the parts: the schedule
(what is sent when), the sender (POSTs, retries, breaker) and the ledger (what became of
each chunk)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import requests

from omi_receiver.devtools.simulate.ledger import Ledger, Summary, progress_bar
from omi_receiver.devtools.simulate.options import (
    SENDER_MAX_SAMPLE_RATE,
    SENDER_MIN_SAMPLE_RATE,
    Mode,
    Options,
    UsageError,
)
from omi_receiver.devtools.simulate.schedule import Batch, Pacer, plan, span
from omi_receiver.devtools.simulate.sender import Breaker, Sender
from omi_receiver.devtools.simulate.urls import check_url, target_url
from omi_receiver.runtime import contract


def stream(
    pcm: bytes,
    sample_rate: int,
    url: str,
    uid: str,
    options: Options | None = None,
    *,
    ledger: str | Path | None = None,
    stop: threading.Event | None = None,
    session: requests.Session | None = None,
    progress: bool = False,
) -> Summary:
    """Send `pcm` (PCM16 LE mono at `sample_rate`) to `url` as Omi device `uid`.

    Blocks until the whole stream was sent (or `stop` was set); returns the Summary.
    Raises UsageError for bad arguments before anything is sent. `options`: how it sends
    (default: the current sender, paced in real time, 1-s batches). `ledger`: a file to append
    a line per acknowledged chunk to. Thread-safe across streams: run one per thread to
    emulate several devices (without `progress`). Idempotency-Keys are always fresh uuid4
    values, so concurrent simulators never share one.
    """
    options = options or Options()
    _check(pcm, sample_rate, url, uid, options)
    audio = span(pcm, sample_rate, options)
    batches = plan(len(audio), sample_rate, options.mode, options.interval, options.pause_after)
    summary = Summary(options.mode, uid, sample_rate, chunks=sum(len(b.pieces) for b in batches))
    stop = stop or threading.Event()
    started = time.monotonic()
    with contextlib.ExitStack() as open_:
        http = session or open_.enter_context(requests.Session())
        bar = progress_bar(uid, len(audio) / (sample_rate * contract.BYTES_PER_SAMPLE), progress)
        if bar is not None:
            open_.callback(bar.close)
        book = Ledger(summary, ledger, bar)
        open_.callback(book.close)
        sender = Sender(http, target_url(url, options.mode, sample_rate, uid), options, summary, stop)
        try:
            _send_all(
                batches, audio, Pacer(options, sample_rate, stop), sender, Breaker(options.retries, summary), book, stop
            )
        finally:
            summary.elapsed_s = round(time.monotonic() - started, 3)
    return summary


def _send_all(
    batches: list[Batch],
    audio: memoryview,
    pacer: Pacer,
    sender: Sender,
    breaker: Breaker,
    book: Ledger,
    stop: threading.Event,
) -> None:
    """Each batch when it is due: dropped while the breaker is open, else its chunks one
    after another."""
    for batch in batches:
        pacer.wait_for(batch)
        if not breaker.closed():
            book.dropped(batch.pieces)
            continue
        _send_batch(batch, audio, sender, breaker, book, stop)
        if stop.is_set():
            book.stopped()
            return


def _send_batch(
    batch: Batch, audio: memoryview, sender: Sender, breaker: Breaker, book: Ledger, stop: threading.Event
) -> None:
    """The batch's chunks back to back. When one fails, the current sender drops the rest
    of the batch (audio is never kept for later) and counts a failure in a row; for the
    legacy sender only that chunk is lost."""
    for index, piece in enumerate(batch.pieces):
        if stop.is_set():
            return
        body = bytes(audio[piece.start : piece.end])
        ack = sender.send(body)
        if ack is not None:
            book.acked(piece, body, ack.chunk_id)
            sender.repeat(body, ack)
            breaker.success()
            continue
        book.failed(piece)
        if sender.options.mode is Mode.CURRENT:
            book.dropped(batch.pieces[index + 1 :])
            breaker.failure()
            return


def _check(pcm: bytes, sample_rate: int, url: str, uid: str, options: Options) -> None:
    """What Options cannot check alone: the URL for this sender, the uid, the audio."""
    check_url(url, options.mode)
    if not isinstance(uid, str) or not contract.UID_PATTERN.fullmatch(uid):
        raise UsageError("uid must match ^[A-Za-z0-9_-]{1,128}$")
    if not SENDER_MIN_SAMPLE_RATE <= sample_rate <= SENDER_MAX_SAMPLE_RATE:
        raise UsageError(f"sample rate {sample_rate} outside {SENDER_MIN_SAMPLE_RATE}-{SENDER_MAX_SAMPLE_RATE}")
    if len(pcm) % contract.BYTES_PER_SAMPLE:
        raise UsageError(f"PCM16 needs an even number of bytes; got {len(pcm)}")
