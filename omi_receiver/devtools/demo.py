"""`make demo`: the main job on the local stack, checked end to end.

Starts the stack if it is not running, streams a speech sample from two simulated Omi
devices (a current sender: 1-second chunks in 5-second bursts; a legacy sender: one
10-second POST at a time), waits for the assembler to put every acknowledged byte into
each device's recording, downloads the WAVs and checks they are byte-identical to what
was sent. Prints where the recordings are. Leaves the stack running (`make down`).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import wave
from pathlib import Path

from omi_receiver.runtime import clients, wav
from omi_receiver.runtime.contract import BYTES_PER_SAMPLE
from omi_receiver.devtools import simulate, stack
from omi_receiver.runtime.assembler.recording import RECORDINGS_PREFIX

SAMPLE = stack.ROOT / "samples" / "speech-16k.wav"
OUT = stack.LOCAL / "demo"


def _recordings(bucket: str, uid: str) -> list:
    """The user's WAVs (not what consumers write next to them)."""
    blobs = clients.storage_client().list_blobs(bucket, prefix=f"{RECORDINGS_PREFIX}{uid}/")
    return sorted((b for b in blobs if b.name.endswith(".wav")), key=lambda b: b.name)


def wait_for_audio(bucket: str, uid: str, expected: bytes, timeout: float) -> list[tuple[str, bytes]]:
    """Poll until the user's recordings hold `expected` bytes of audio; return them."""
    deadline = time.monotonic() + timeout
    while True:
        blobs = _recordings(bucket, uid)
        have = sum((b.size or 0) - wav.HEADER_BYTES for b in blobs)
        if have >= len(expected) or time.monotonic() > deadline:
            return [(b.name, b.download_as_bytes()) for b in blobs]
        time.sleep(1.0)


def pcm_of(blob: bytes) -> tuple[bytes, int]:
    with wave.open(io.BytesIO(blob)) as w:
        return w.readframes(w.getnframes()), w.getframerate()


def run(speed: float, timeout: float) -> int:
    try:
        values = stack.read_env()
        print("using the running local stack")
    except stack.StackError:
        print("starting the local stack (make up)...")
        values = stack.up()
        stack.wait_ready(values)
    for key in ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"):
        os.environ[key] = values[key]
    pcm, rate = simulate.read_wav(SAMPLE)
    suffix = time.strftime("%H%M%S")
    devices = [
        (f"demo-current-{suffix}", "current", 5.0),
        (f"demo-legacy-{suffix}", "legacy", 10.0),
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    failures = 0
    for uid, mode, interval in devices:
        print(f"\n[{uid}] streaming {SAMPLE.name} ({len(pcm) / (BYTES_PER_SAMPLE * rate):.1f} s at {rate} Hz) "
              f"as a {mode} sender, every {interval:.0f} s of audio, {speed:g}x real time")
        ledger = OUT / f"{uid}.ledger.jsonl"
        summary = simulate.stream(pcm, rate, values["INGEST_URL"], uid, mode=mode, interval=interval,
                                  speed=speed, ledger=ledger, progress=sys.stderr.isatty(),
                                  retry_delays=(1.0, 5.0, 30.0))
        print(f"[{uid}] {summary.line()}")
        entries = simulate.read_ledger(ledger)
        acked_bytes = sum(e.bytes for e in entries)
        if summary.failed or summary.dropped or acked_bytes != len(pcm):
            print(f"[{uid}] FAILED: not every chunk was acknowledged")
            failures += 1
            continue
        print(f"[{uid}] waiting for the assembler (tick every {values['TICK_SECONDS']} s)...")
        recs = wait_for_audio(values["RECORDINGS_BUCKET"], uid, pcm, timeout)
        audio = b""
        for name, blob in recs:
            data, got_rate = pcm_of(blob)
            audio += data
            local = OUT / Path(name).name.replace(".wav", f"-{uid}.wav")
            local.write_bytes(blob)
            print(f"[{uid}] recording gs://{values['RECORDINGS_BUCKET']}/{name}")
            print(f"[{uid}]   {len(data) / (BYTES_PER_SAMPLE * got_rate):.2f} s at {got_rate} Hz, copy at {stack._show(local)}")
        if audio == pcm:
            print(f"[{uid}] OK: byte-identical to the {len(pcm):,} bytes sent ({len(entries)} chunks)")
        else:
            print(f"[{uid}] FAILED: the recording holds {len(audio):,} bytes, {len(pcm):,} were sent"
                  f"{' (same length, different bytes)' if len(audio) == len(pcm) else ''}")
            failures += 1
    print(f"\nthe stack is still running: INGEST_URL is in {stack._show(stack.ENV_FILE)}; `make down` stops it")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=4.0, help="pacing, times real time (default 4)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the recordings")
    args = parser.parse_args(argv)
    try:
        return run(args.speed, args.timeout)
    except (stack.StackError, simulate.UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
