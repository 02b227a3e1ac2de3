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

from omi_receiver.devtools import simulate, stack
from omi_receiver.devtools.settings import ROOT
from omi_receiver.runtime import clients, wav
from omi_receiver.runtime.assembler.recording import RECORDINGS_PREFIX
from omi_receiver.runtime.config import ConfigError
from omi_receiver.runtime.contract import BYTES_PER_SAMPLE

SAMPLE = ROOT / "samples" / "speech-16k.wav"
# The demo's devices: (uid prefix, sender, the app's interval in seconds).
DEVICES = (("demo-current", simulate.Mode.CURRENT, 5.0), ("demo-legacy", simulate.Mode.LEGACY, 10.0))


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


def _stack() -> dict[str, str]:
    """The running stack's stack.env values, starting the stack if needed; this process's
    clients pointed at its emulators."""
    try:
        values = stack.read_env()
        print("using the running local stack")
    except stack.StackError:
        print("starting the local stack (make up)...")
        values = stack.up()
        stack.wait_ready(values)
    for key in ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"):
        os.environ[key] = values[key]
    return values


def _stream(
    values: dict[str, str], uid: str, options: simulate.Options, pcm: bytes, rate: int, out: Path
) -> int | None:
    """Send the sample as one device; the number of chunks, or None if any was not acknowledged."""
    print(
        f"\n[{uid}] streaming {SAMPLE.name} ({len(pcm) / (BYTES_PER_SAMPLE * rate):.1f} s at {rate} Hz) "
        f"as a {options.mode} sender, every {options.interval:.0f} s of audio, {options.speed:g}x real time"
    )
    ledger = out / f"{uid}.ledger.jsonl"
    summary = simulate.stream(
        pcm, rate, values["INGEST_URL"], uid, options, ledger=ledger, progress=sys.stderr.isatty()
    )
    print(f"[{uid}] {summary.line()}")
    entries = simulate.read_ledger(ledger)
    if summary.failed or summary.dropped or sum(e.bytes for e in entries) != len(pcm):
        print(f"[{uid}] FAILED: not every chunk was acknowledged")
        return None
    return len(entries)


def _check_recordings(values: dict[str, str], uid: str, pcm: bytes, chunks: int, timeout: float, out: Path) -> bool:
    """Wait for the device's recordings, copy them to `out`; whether they hold exactly `pcm`."""
    print(f"[{uid}] waiting for the assembler (tick every {values['TICK_SECONDS']} s)...")
    audio = b""
    for name, blob in wait_for_audio(values["RECORDINGS_BUCKET"], uid, pcm, timeout):
        data, got_rate = pcm_of(blob)
        audio += data
        local = out / Path(name).name.replace(".wav", f"-{uid}.wav")
        local.write_bytes(blob)
        print(f"[{uid}] recording gs://{values['RECORDINGS_BUCKET']}/{name}")
        print(
            f"[{uid}]   {len(data) / (BYTES_PER_SAMPLE * got_rate):.2f} s at {got_rate} Hz, copy at {stack.show(local)}"
        )
    if audio == pcm:
        print(f"[{uid}] OK: byte-identical to the {len(pcm):,} bytes sent ({chunks} chunks)")
        return True
    print(
        f"[{uid}] FAILED: the recording holds {len(audio):,} bytes, {len(pcm):,} were sent"
        f"{' (same length, different bytes)' if len(audio) == len(pcm) else ''}"
    )
    return False


def run(speed: float, timeout: float) -> int:
    values = _stack()
    pcm, rate = simulate.read_wav(SAMPLE)
    out = stack.settings().local_dir / "demo"
    out.mkdir(parents=True, exist_ok=True)
    suffix = time.strftime("%H%M%S")
    failures = 0
    for prefix, mode, interval in DEVICES:
        uid = f"{prefix}-{suffix}"
        options = simulate.Options(mode=mode, interval=interval, speed=speed)
        chunks = _stream(values, uid, options, pcm, rate, out)
        if chunks is None or not _check_recordings(values, uid, pcm, chunks, timeout, out):
            failures += 1
    print(
        f"\nthe stack is still running: INGEST_URL is in {stack.show(stack.settings().env_file)}; `make down` stops it"
    )
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=4.0, help="pacing, times real time (default 4)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the recordings")
    args = parser.parse_args(argv)
    try:
        return run(args.speed, args.timeout)
    except (stack.StackError, simulate.UsageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
