"""The chunk codec (omi_receiver.runtime.codec) and the message contract's `encoding`:
FLAC only when it pays, always the exact PCM back, a clear error for what cannot be read."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile

from omi_receiver.runtime import codec, contract
from omi_receiver.runtime.codec import CodecError, Encoding
from omi_receiver.runtime.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[2]


def speech(rate: int) -> bytes:
    """The sample speech (16 kHz); at 8 kHz, every other sample of it low-passed by a pair average."""
    with wave.open(str(ROOT / "samples" / "speech-16k.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if rate == 8000:
        pcm = ((pcm[: len(pcm) // 2 * 2 : 2].astype(np.int32) + pcm[1 : len(pcm) // 2 * 2 : 2]) // 2).astype("<i2")
    return pcm.tobytes()


def seconds(pcm: bytes, rate: int) -> list[bytes]:
    size = rate * 2
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


def noise(n_samples: int, level: int, seed: int = 1) -> bytes:
    return np.random.default_rng(seed).integers(-level, level + 1, n_samples, dtype="<i2").tobytes()


@pytest.fixture(autouse=True)
def loaded():
    codec.encode(b"\0\0", 16000, wait=True)  # soundfile imported: encode makes FLAC from here


@pytest.mark.parametrize("rate", [8000, 16000])
def test_speech_is_flac_smaller_and_decodes_to_the_same_bytes(rate):
    chunks = seconds(speech(rate), rate)
    total = 0
    for pcm in chunks:
        payload, encoding = codec.encode(pcm, rate)
        assert encoding is Encoding.FLAC and payload[:4] == b"fLaC"
        assert codec.decode(payload, encoding, rate) == pcm
        total += len(payload)
    assert total < 0.7 * len(chunks) * rate * 2  # measured 0.585 at 16 kHz (bench/codec.py)


@pytest.mark.parametrize(
    "pcm, rate, expected, most",
    [
        (bytes(32_000), 16000, Encoding.FLAC, 0.02),  # silence
        (noise(16_000, 200), 16000, Encoding.FLAC, 0.8),  # low-level noise
        (noise(8_000, 200), 8000, Encoding.FLAC, 0.8),
        (noise(16_000, 32767), 16000, Encoding.PCM, 1.0),  # white noise: no smaller, goes as is
        (noise(8_000, 32767), 8000, Encoding.PCM, 1.0),
        (b"\x01\x80", 16000, Encoding.PCM, 1.0),  # one sample: FLAC's headers alone are larger
        (speech(16000)[:4_410], 16000, Encoding.FLAC, 0.95),  # an odd number of samples
        (speech(16000)[:32_002], 16000, Encoding.FLAC, 0.8),
    ],
    ids=["silence", "low noise", "low noise 8k", "white noise", "white noise 8k", "one sample", "tail", "odd"],
)
def test_flac_only_when_it_pays(pcm, rate, expected, most):
    payload, encoding = codec.encode(pcm, rate)
    assert encoding is expected
    assert len(payload) <= most * len(pcm)
    if encoding is Encoding.PCM:
        assert payload is pcm
    assert codec.decode(payload, encoding, rate) == pcm
    assert codec.decode(payload, encoding) == pcm  # the rate is a check, not needed


@pytest.mark.parametrize("rate", [8000, 8001, 11025, 22050, 44100, 47999, 48000])
def test_every_rate_ingest_accepts_round_trips(rate):
    pcm = speech(16000)[: 2 * rate]
    payload, encoding = codec.encode(pcm, rate)
    assert encoding is Encoding.FLAC
    assert codec.decode(payload, encoding, rate) == pcm


def test_a_failure_or_a_bad_verify_publishes_the_pcm_and_says_so_once(monkeypatch, capsys):
    pcm = speech(16000)[:32_000]
    monkeypatch.setattr(codec, "_warned", set())
    monkeypatch.setattr(codec, "_read_flac", lambda sf, payload, rate: pcm[:-2] + b"\0\0")  # wrong PCM back
    assert codec.encode(pcm, 16000) == (pcm, Encoding.PCM)
    assert codec.encode(pcm, 16000) == (pcm, Encoding.PCM)

    def broken(*args):
        raise RuntimeError("libsndfile said no")

    monkeypatch.setattr(codec, "_write_flac", broken)
    assert codec.encode(pcm, 16000) == (pcm, Encoding.PCM)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["event"], x["error"], x["fallback"]) for x in lines] == [
        ("chunk_encode_failed", "CodecError", "pcm"),
        ("chunk_encode_failed", "RuntimeError", "pcm"),
    ]


def test_encode_without_wait_before_the_codec_is_loaded_gives_pcm(monkeypatch):
    monkeypatch.setattr(codec, "_sf", None)
    monkeypatch.setattr(codec, "_loader", None)
    pcm = bytes(32_000)
    assert codec.encode(pcm, 16000) == (pcm, Encoding.PCM)
    codec.warm_up()
    codec.warm_up()  # once per process
    codec._loader.join(30)
    assert codec.ready()
    assert codec.encode(pcm, 16000)[1] is Encoding.FLAC


def test_importing_ingest_does_not_import_numpy_or_soundfile():
    """The cold-start path: main.py and ingest import neither (~0.23 s of CPU); the first
    request starts the import on a thread of its own."""
    code = (
        "import sys, main\n"
        "from omi_receiver.runtime import codec, contract, ingest\n"
        "assert codec.encode(bytes(3200), 16000)[1] is codec.Encoding.PCM\n"
        "print(sorted(m for m in ('numpy', 'soundfile') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- what cannot be decoded -----------------------------------------------------------------


def flac_of(pcm: bytes, rate: int = 16000) -> bytes:
    payload, encoding = codec.encode(pcm, rate, wait=True)
    assert encoding is Encoding.FLAC
    return payload


def other_file(rate: int, channels: int, subtype: str, fmt: str = "FLAC") -> bytes:
    out = io.BytesIO()
    soundfile.write(out, np.zeros((1600, channels), dtype="int16"), rate, format=fmt, subtype=subtype)
    return out.getvalue()


SPEECH_FLAC = flac_of(speech(16000)[:32_000])
BAD = {
    "garbage": (b"\x00\x01" * 500, "undecodable_payload"),
    "fLaC then garbage": (b"fLaC" + b"\x07" * 500, "undecodable_payload"),
    "cut short": (SPEECH_FLAC[: len(SPEECH_FLAC) // 2], "undecodable_payload"),
    "empty": (b"", "undecodable_payload"),
    "stereo": (other_file(16000, 2, "PCM_16"), "undecodable_payload"),
    "24-bit": (other_file(16000, 1, "PCM_24"), "undecodable_payload"),
    "a WAV": (other_file(16000, 1, "PCM_16", "WAV"), "undecodable_payload"),
    "another rate": (other_file(8000, 1, "PCM_16"), "sample_rate_mismatch"),
}


@pytest.mark.parametrize("payload, code", BAD.values(), ids=BAD.keys())
def test_a_payload_that_is_not_our_flac_is_a_codec_error(payload, code):
    with pytest.raises(CodecError) as caught:
        codec.decode(payload, Encoding.FLAC, 16000)
    assert caught.value.code == code and caught.value.detail


def test_a_payload_claiming_more_than_a_message_can_hold_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(codec, "MAX_PCM_BYTES", 10_000)
    with pytest.raises(CodecError, match="claims 16000 samples"):
        codec.decode(SPEECH_FLAC, Encoding.FLAC, 16000)


@pytest.mark.parametrize("value", ["opus", "FLAC", "", "gzip"])
def test_unknown_encoding_is_a_clear_error(value):
    with pytest.raises(CodecError) as caught:
        codec.parse_encoding(value)
    assert caught.value.code == "unknown_encoding" and "flac" in caught.value.detail


# --- the message contract ---------------------------------------------------------------------

PCM = speech(16000)[32_000:64_000]
CHUNK = contract.Chunk("u1", 16000, contract.now_us(), "c-1", PCM)


def test_a_chunk_message_round_trips_in_each_encoding():
    for asked, used in ((Encoding.FLAC, "flac"), (Encoding.PCM, "pcm")):
        data, attributes = CHUNK.message(asked, shard=3)
        assert attributes == CHUNK.attributes() | {"encoding": used, "shard": "3"}
        assert (data == PCM) == (used == "pcm")
        assert contract.Chunk.from_message(data, attributes) == CHUNK


def test_a_message_without_encoding_is_pcm_as_older_ingest_sent_it():
    assert contract.Chunk.from_message(PCM, CHUNK.attributes()) == CHUNK


def test_every_flac_payload_is_odd_so_an_assembler_from_before_flac_dead_letters_it():
    """An assembler from before FLAC chunks ignores the `encoding` attribute and reads the data
    as PCM16; an odd length is poison to it (dead-lettered, replayable), never stored as audio.
    About half of libsndfile's streams are even: those get a 1-byte PADDING block."""
    padded = 0
    for pcm in seconds(speech(16000), 16000) + seconds(speech(8000), 8000):
        rate = 16000 if len(pcm) == 32_000 else 8000
        raw = io.BytesIO()
        with soundfile.SoundFile(
            raw, "w", rate, 1, "PCM_16", format="FLAC", compression_level=codec.COMPRESSION_LEVEL
        ) as f:
            f.buffer_write(pcm, dtype="int16")
        padded += len(raw.getvalue()) % 2 == 0
        payload, encoding = codec.encode(pcm, rate)
        assert encoding is Encoding.FLAC and len(payload) % 2 == 1
        assert codec.decode(payload, encoding, rate) == pcm  # the padding is skipped by the decoder
        with soundfile.SoundFile(io.BytesIO(payload)) as f:  # and by libsndfile on its own
            assert f.frames == len(pcm) // 2
        with pytest.raises(contract.InvalidChunk) as caught:  # what the old assembler does
            contract.Chunk.from_message(payload, CHUNK.attributes() | {"sample_rate": str(rate)})
        assert caught.value.code == "odd_length"
    assert padded > 0  # the padding path ran


@pytest.mark.parametrize(
    "encoding, data, code",
    [
        ("opus", PCM, "unknown_encoding"),
        ("flac", PCM, "undecodable_payload"),  # PCM labelled FLAC
        ("flac", SPEECH_FLAC[:-100], "undecodable_payload"),
        ("pcm", PCM + b"\0", "odd_length"),
    ],
)
def test_a_message_that_does_not_decode_is_poison(encoding, data, code):
    attributes = CHUNK.attributes() | {"encoding": encoding}
    with pytest.raises(contract.InvalidChunk) as caught:
        contract.Chunk.from_message(data, attributes)
    assert caught.value.code == code


def test_chunk_encoding_setting():
    assert Config().encoding is Encoding.FLAC  # the default
    assert Config.from_env({"CHUNK_ENCODING": "pcm"}).encoding is Encoding.PCM
    for bad in ("FLAC", "opus", "none"):
        with pytest.raises(ConfigError, match="CHUNK_ENCODING=.* must be flac or pcm"):
            Config.from_env({"CHUNK_ENCODING": bad})
