"""Section: what compacting a finished recording costs and saves (omi_receiver/runtime/compaction):
bytes per audio-hour of speech as WAV, FLAC and Opus, and the compactor's CPU per audio-hour to
encode and to verify, at the settings it is deployed with. The cost model (bench/cost.py) puts
them beside the bucket's storage over the years.

The recording is samples/speech-16k.wav repeated to RECORDING_SECONDS (a minute in a quick run),
written as the assembler writes a WAV, compacted from a file as the function does from its
ranged downloads. No emulator: the Cloud Storage requests are one read, one upload and one
delete per recording whatever its length, and bench/cost.py counts them.
"""

from __future__ import annotations

import io
import resource
import tempfile
from pathlib import Path

from bench.common import ROOT
from omi_receiver.devtools.simulate.wavfile import read_wav
from omi_receiver.runtime import wav
from omi_receiver.runtime.compaction import codec
from omi_receiver.runtime.compaction.settings import Format

RECORDING_SECONDS = 600
# infra/compaction.tf: the compactor's size (the cost model bills its CPU time at this size).
VCPU, MEMORY_GIB = 1.0, 1.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(quick: bool = False, log=print) -> dict:
    pcm, rate = read_wav(ROOT / "samples" / "speech-16k.wav")
    seconds = 60 if quick else RECORDING_SECONDS
    size = seconds * rate * 2
    data = (pcm * (size // len(pcm) + 1))[:size]
    recording = wav.header(rate, len(data)) + data
    per_hour = 3600 / seconds
    summary = {"wav": {"bytes_per_audio_hour": round(len(data) * per_hour)}}
    with tempfile.TemporaryDirectory() as tmp:  # soundfile imported before anything is timed
        codec.encode(io.BytesIO(wav.header(rate, 3200) + data[:3200]), Path(tmp) / "warm.flac", Format.FLAC)
    for fmt in (Format.FLAC, Format.OPUS):
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / f"recording.{fmt.value}"
            start = _cpu_s()
            source = codec.encode(io.BytesIO(recording), target, fmt)
            encoded = _cpu_s()
            checked = codec.verify(target, fmt, source)
            verified = _cpu_s()
            out = {
                "bytes_per_audio_hour": round(target.stat().st_size * per_hour),
                "ratio_to_wav": round(target.stat().st_size / len(data), 4),
                "encode_cpu_s_per_audio_hour": round((encoded - start) * per_hour, 1),
                "verify_cpu_s_per_audio_hour": round((verified - encoded) * per_hour, 1),
                "cpu_s_per_audio_hour": round((verified - start) * per_hour, 1),
                "envelope_db_mean_diff": checked.envelope_db_mean_diff,
                "vcpu": VCPU,
                "memory_gib": MEMORY_GIB,
            }
        summary[fmt.value] = out
        log(
            f"  compaction {fmt.value}: {out['bytes_per_audio_hour'] / 1e6:.2f} MB per audio-hour "
            f"({out['ratio_to_wav']} of the WAV), {out['cpu_s_per_audio_hour']} CPU-s per audio-hour"
        )
    return {"summary": summary, "settings": {"recording_seconds": seconds, "sample_rate": rate}}
