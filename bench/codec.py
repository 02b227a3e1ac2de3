"""The chunk codec (omi_receiver/runtime/codec.py): what FLAC saves on Pub/Sub and what it costs.

    python -m bench.codec [--quick]      writes bench/results/codec.json (tmp/ with --quick)

For speech (samples/speech-16k.wav; at 8 kHz the same, each pair of samples averaged into one),
digital silence, full-scale white noise and low-level noise (Gaussian, sigma 100: a quiet
room), cut in 1-second chunks at 16 and 8 kHz: the published bytes over the PCM bytes (with
codec.encode's PCM fallback, and FLAC's own whether chosen or not), CPU ms per chunk of
encode + verify (codec.encode) and of decode (codec.decode), medians of the thread's CPU
time, so other load on the machine counts less than in wall time. Speech at 16 kHz also at
every compression level, which is how COMPRESSION_LEVEL was chosen. Then the import time of
soundfile (and numpy under it) in a fresh interpreter (`-X importtime`), and Pub/Sub's
saving per chunk against the CPU it costs, at list prices (bench/cost.py PRICE).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
import wave

import numpy as np

from bench import common
from bench.cost import PRICE, TIB
from omi_receiver.runtime import codec
from omi_receiver.runtime.codec import Encoding

SPEECH = common.ROOT / "samples" / "speech-16k.wav"
RATES = (16000, 8000)
LEVELS = (0.0, 0.25, 0.5, 0.625, 0.75, 1.0)  # x 8 = libFLAC -0 .. -8; 0.625 is libsndfile's default


def signals(rate: int, n_seconds: int) -> dict[str, list[bytes]]:
    """1-second chunks of each kind of audio at `rate`."""
    with wave.open(str(SPEECH)) as w:
        speech = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if rate == 8000:
        even = len(speech) // 2 * 2
        speech = ((speech[0:even:2].astype(np.int32) + speech[1:even:2]) // 2).astype("<i2")
    rng = np.random.default_rng(15)
    total = rate * n_seconds
    kinds = {
        "speech": speech[: len(speech) // rate * rate],
        "silence": np.zeros(total, dtype="<i2"),
        "white_noise": rng.integers(-32768, 32768, total, dtype=np.int32).astype("<i2"),
        "low_noise": np.clip(rng.normal(0, 100, total), -32768, 32767).astype("<i2"),
    }
    return {name: [a[i : i + rate].tobytes() for i in range(0, len(a), rate)] for name, a in kinds.items()}


def cpu_ms(fn, repeat: int) -> float:
    """Median CPU time of this thread for one call of `fn`, in ms."""
    times = []
    for _ in range(repeat):
        t = time.thread_time_ns()
        fn()
        times.append((time.thread_time_ns() - t) / 1e6)
    return statistics.median(times)


def measure(chunks: list[bytes], rate: int, repeat: int) -> dict:
    pcm_bytes = sum(len(c) for c in chunks)
    encoded = [codec.encode(c, rate, wait=True) for c in chunks]
    flac_only = [codec._write_flac(codec._soundfile(True), c, rate) for c in chunks]
    flac_payloads = [p for p, e in encoded if e is Encoding.FLAC]
    for (payload, encoding), pcm in zip(encoded, chunks, strict=True):
        assert codec.decode(payload, encoding, rate) == pcm  # the benchmark is of a correct codec
    encode_ms = statistics.median(cpu_ms(lambda c=c: codec.encode(c, rate), repeat) for c in chunks)
    decode_ms = (
        statistics.median(cpu_ms(lambda p=p: codec.decode(p, Encoding.FLAC, rate), repeat) for p in flac_payloads)
        if flac_payloads
        else None
    )
    published = sum(len(p) for p, _ in encoded)
    return {
        "chunks": len(chunks),
        "bytes_ratio": round(published / pcm_bytes, 4),
        "flac_ratio": round(sum(len(f) for f in flac_only) / pcm_bytes, 4),
        "flac_chunks": len(flac_payloads),
        "encode_verify_cpu_ms": round(encode_ms, 3),
        "decode_cpu_ms": None if decode_ms is None else round(decode_ms, 3),
    }


def levels(chunks: list[bytes], rate: int, repeat: int) -> dict:
    """FLAC alone (no verify) at each compression level, on the same chunks."""
    sf = codec._soundfile(True)
    out = {}
    for level in LEVELS:
        saved, codec.COMPRESSION_LEVEL = codec.COMPRESSION_LEVEL, level
        try:
            size = sum(len(codec._write_flac(sf, c, rate)) for c in chunks)
            ms = statistics.median(cpu_ms(lambda c=c: codec._write_flac(sf, c, rate), repeat) for c in chunks)
        finally:
            codec.COMPRESSION_LEVEL = saved
        out[f"{level:g}"] = {"flac_ratio": round(size / sum(len(c) for c in chunks), 4), "encode_cpu_ms": round(ms, 3)}
    return out


def import_ms(module: str, runs: int) -> dict:
    """Cumulative import time (ms, median of `runs` fresh interpreters) of `module` and of
    numpy within it, as `-X importtime` reports them."""
    totals: dict[str, list[float]] = {module: [], "numpy": []}
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True,
            text=True,
            check=True,
            cwd=common.ROOT,
        ).stderr
        for name in totals:
            found = re.search(rf"^import time:\s+\d+ \|\s+(\d+) \|\s*{re.escape(name)}$", out, re.M)
            if found:
                totals[name].append(int(found.group(1)) / 1000)
    return {name: round(statistics.median(v), 1) for name, v in totals.items() if v}


def economics(speech: dict, rate: int) -> dict:
    """Per 1-second speech chunk: what Pub/Sub bills less (publish + one delivery) against
    the CPU of encode + verify (ingest) and decode (assembler), at list prices."""
    pcm = rate * 2
    saved_bytes = pcm * (1 - speech["bytes_ratio"]) * 2
    saved = saved_bytes / TIB * PRICE["pubsub_tib"]
    cpu = (speech["encode_verify_cpu_ms"] + (speech["decode_cpu_ms"] or 0)) / 1000 * PRICE["vcpu_s"]
    return {
        "pubsub_saved_usd_per_chunk": saved,
        "cpu_usd_per_chunk": cpu,
        "saving_over_cpu": round(saved / cpu, 1) if cpu else None,
        "pubsub_saved_usd_per_user_hour": round(saved * 3600, 6),
    }


def run(quick: bool = False, log=print) -> dict:
    repeat, n_seconds, imports = (3, 5, 2) if quick else (15, 20, 5)
    result: dict = {
        "compression_level": codec.COMPRESSION_LEVEL,
        "min_saving": codec.MIN_SAVING,
        "import_ms": {
            "soundfile": import_ms("soundfile", imports),
            "main": import_ms("main", imports),
        },
    }
    for rate in RATES:
        kinds = signals(rate, n_seconds)
        if quick:
            kinds = {name: chunks[:n_seconds] for name, chunks in kinds.items()}
        per_kind = {name: measure(chunks, rate, repeat) for name, chunks in kinds.items()}
        result[str(rate)] = {**per_kind, "economics": economics(per_kind["speech"], rate)}
        log(
            f"   {rate} Hz: "
            + ", ".join(f"{k} {v['bytes_ratio']} ({v['encode_verify_cpu_ms']} ms)" for k, v in per_kind.items())
        )
    result["speech_16000_levels"] = levels(signals(16000, n_seconds)["speech"], 16000, repeat)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run; results to bench/results/tmp/")
    args = parser.parse_args(argv)
    if args.quick:
        common.RESULTS = common.RESULTS / "tmp"
    machine, started = common.machine(), time.monotonic()
    result = run(args.quick)
    body = {
        "section": "codec",
        "quick": args.quick,
        "machine": machine,
        "duration_s": round(time.monotonic() - started, 1),
        **result,
    }
    print(common.write_result("codec", body).relative_to(common.ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
