"""Omi device simulator: sends audio to a webhook the way the Omi backend does.

    python -m omi_receiver.devtools.simulate FILE.wav --url URL --uid U [--mode current|legacy]
        [--interval X] [--fast | --speed N] [--ledger FILE] [--json] ...

Two senders are emulated, as docs/omi-sender.md describes them:

current (Omi backend 2025-2026)
    The audio is released in batches of X seconds (`interval`). Each batch is split into
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

The parts, in the order a chunk meets them:

  options.py    Options: the sender (Mode), pacing, Retries, faults; checked when built
  wavfile.py    read_wav: the audio of a WAV file
  schedule.py   what is sent when: pieces, batches (bursts), the Pacer, pauses
  urls.py       the URL each sender POSTs to, and which URLs it accepts
  sender.py     the POSTs: retries, repeated POSTs, the circuit breaker
  cuts.py       cut uploads (send_cut, plan_cut)
  ledger.py     the Summary, the ledger of acknowledged chunks, the progress bar
  device.py     stream(): one device, wired from the parts above
  cli.py        the command line

Programmatic use (demo, soak, tests)::

    pcm, rate = read_wav("samples/speech-16k.wav")
    summary = stream(pcm, rate, "http://127.0.0.1:8080/ingest/TOKEN", "u1", Options(fast=True))
    assert summary.ok
"""

from omi_receiver.devtools.simulate.cuts import CUT_LINGER_MAX, Cut, plan_cut, send_cut
from omi_receiver.devtools.simulate.device import stream
from omi_receiver.devtools.simulate.ledger import LedgerEntry, Summary, read_ledger, write_ledger_entry
from omi_receiver.devtools.simulate.options import Mode, Options, Retries, UsageError
from omi_receiver.devtools.simulate.schedule import Batch, Piece, plan
from omi_receiver.devtools.simulate.urls import check_url, current_url, legacy_url
from omi_receiver.devtools.simulate.wavfile import read_wav

__all__ = [
    "CUT_LINGER_MAX",
    "Batch",
    "Cut",
    "LedgerEntry",
    "Mode",
    "Options",
    "Piece",
    "Retries",
    "Summary",
    "UsageError",
    "check_url",
    "current_url",
    "legacy_url",
    "plan",
    "plan_cut",
    "read_ledger",
    "read_wav",
    "send_cut",
    "stream",
    "write_ledger_entry",
]
