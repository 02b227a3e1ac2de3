"""The VAD consumer's pure parts: frame math, segment smoothing, header checks, skipped
rates, event decoding, settings; the whole analysis over the speech sample with silence
around it; and the receiver's contract as the example restates it (examples/vad is
self-contained, so its copy of the names and the WAV header is checked against the runtime)."""

from __future__ import annotations

import base64
import io
import json
import struct
import tempfile
import wave
from itertools import pairwise
from pathlib import Path

import pytest
import vad_consumer as vad
from cloudevents.http import CloudEvent
from google.api_core import exceptions

from omi_receiver.runtime import wav
from omi_receiver.runtime.assembler import recording
from omi_receiver.runtime.compaction import Format, codec, compactor

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "speech-16k.wav"


def sample_pcm() -> tuple[bytes, int]:
    with wave.open(str(SAMPLE)) as w:
        return w.readframes(w.getnframes()), w.getframerate()


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    return wav.header(rate, len(pcm)) + pcm


class Trickle(io.BytesIO):
    """A stream that returns at most `most` bytes per read, like a socket."""

    def __init__(self, data: bytes, most: int):
        super().__init__(data)
        self.most = most
        self.reads: list[int] = []

    def read(self, size=-1):
        self.reads.append(size)
        return super().read(min(size, self.most) if size >= 0 else self.most)


# --- frames ------------------------------------------------------------------------------


@pytest.mark.parametrize("rate, frame_bytes", [(8000, 480), (16000, 960), (32000, 1920), (48000, 2880)])
def test_a_30_ms_frame_is_what_webrtcvad_accepts(rate, frame_bytes):
    assert 2 * rate * vad.FRAME_MS // 1000 == frame_bytes
    import webrtcvad

    assert webrtcvad.valid_rate_and_frame_length(rate, frame_bytes // 2)
    assert rate in vad.RATES


def test_frames_are_whole_and_in_order_across_odd_reads(monkeypatch):
    monkeypatch.setattr(vad, "READ_BYTES", 1000)  # not a multiple of the frame
    data = bytes(range(256)) * 40  # 10,240 bytes
    stream = Trickle(data, most=333)
    got = [bytes(f) for f in vad.frames(stream, 960, limit=len(data))]
    assert len(got) == 10 and all(len(f) == 960 for f in got)
    assert b"".join(got) == data[:9600]  # the 640-byte tail is under one frame: left out
    assert max(stream.reads) <= 1000  # never more than one block at a time


def test_frames_stop_at_the_limit_not_at_the_end_of_the_stream():
    data = b"\1" * 960 * 3 + b"trailing chunk after the data"
    assert len(list(vad.frames(io.BytesIO(data), 960, limit=960 * 2))) == 2
    assert list(vad.frames(io.BytesIO(b""), 960, limit=960)) == []


# --- segments ----------------------------------------------------------------------------


def flags(pattern: str) -> list[bool]:
    return [c == "#" for c in pattern]


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("", []),
        ("......", []),
        ("###", [(0, 3)]),
        ("..#####..", [(2, 7)]),
        # A pause of up to 2 frames is bridged, 3 frames is not.
        ("###..###", [(0, 8)]),
        ("###...###", [(0, 3), (6, 9)]),
        # Blips under 3 frames are dropped...
        ("#....##....", []),
        # ...unless bridging made them part of longer speech.
        ("#.#..#......##", [(0, 6)]),
        ("....####...#..", [(4, 8)]),
        ("######", [(0, 6)]),
    ],
)
def test_segments_bridge_short_pauses_then_drop_blips(pattern, expected):
    assert list(vad.segments(flags(pattern), max_pause_frames=2, min_speech_frames=3)) == expected


def test_segments_with_the_documented_constants():
    pause = vad.MAX_PAUSE_MS // vad.FRAME_MS  # 10 frames = 300 ms bridged
    shortest = -(-vad.MIN_SPEECH_MS // vad.FRAME_MS)  # 3 frames = 90 ms kept
    assert (pause, shortest) == (10, 3)
    speech = "#" * 20 + "." * 10 + "#" * 20 + "." * 11 + "#" * 2 + "." * 40 + "#" * 3
    assert list(vad.segments(flags(speech), pause, shortest)) == [(0, 50), (103, 106)]


def test_segments_stream():
    """One pass over a generator, yielding as it goes (a long recording's decisions are
    never all held)."""

    def endless():
        while True:
            yield from flags("####......")

    first = next(vad.segments(endless(), 2, 3))
    assert first == (0, 4)


# --- header checks and rates -------------------------------------------------------------


def riff(channels=1, bits=16, rate=16000, fmt_tag=1, magic=b"RIFF", data=b"\0" * 960) -> bytes:
    align = channels * bits // 8
    return (
        struct.pack(
            "<4sI4s4sIHHIIHH4sI",
            magic,
            36 + len(data),
            b"WAVE",
            b"fmt ",
            16,
            fmt_tag,
            channels,
            rate,
            rate * align,
            align,
            bits,
            b"data",
            len(data),
        )
        + data
    )


# Headers that neither the example nor the runtime takes, by test id.
BAD_HEADERS = {
    "stereo": riff(channels=2),
    "8-bit": riff(bits=8),
    "float": riff(fmt_tag=3),
    "big-endian": riff(magic=b"RIFX"),
    "short": b"RIFF",
    "empty": b"",
}


@pytest.mark.parametrize(
    "blob",
    [*BAD_HEADERS.values(), b"ID3\x03" + bytes(100)],
    ids=[*BAD_HEADERS, "mp3"],
)
def test_anything_but_a_pcm16_mono_wav_is_skipped_with_the_reason(blob):
    result = vad.analyze(io.BytesIO(blob))
    assert set(result) == {"skipped"}
    assert result["skipped"].startswith("not a PCM16 mono WAV")


@pytest.mark.parametrize("rate", [11025, 22050, 24000, 44100])
def test_a_rate_webrtcvad_does_not_take_is_skipped_and_says_so(rate):
    pcm = bytes(2 * rate)  # one second
    result = vad.analyze(io.BytesIO(wav_bytes(pcm, rate)))
    assert result == {
        "sample_rate": rate,
        "duration_seconds": 1.0,
        "skipped": f"webrtcvad supports 8000, 16000, 32000, 48000 Hz, not {rate} Hz",
    }


def test_an_empty_recording_has_no_speech():
    result = vad.analyze(io.BytesIO(wav.header(16000, 0)))
    assert (result["duration_seconds"], result["speech_seconds"], result["speech_ratio"], result["segments"]) == (
        0.0,
        0.0,
        0.0,
        [],
    )


def test_silence_has_no_speech_at_every_rate():
    for rate in vad.RATES:
        result = vad.analyze(io.BytesIO(wav_bytes(bytes(2 * rate * 2), rate)), mode=0)
        assert (result["sample_rate"], result["segments"], result["speech_ratio"]) == (rate, [], 0.0)


# --- the analysis on real speech ---------------------------------------------------------


def test_speech_between_silences_is_found_and_the_silence_is_not():
    pcm, rate = sample_pcm()
    silence = bytes(2 * rate * 3)  # 3 s either side
    stream = Trickle(wav_bytes(silence + pcm + silence, rate), most=70_001)
    result = vad.analyze(stream, mode=2)
    speech_start, speech_end = 3.0, 3.0 + len(pcm) / (2 * rate)
    assert result["sample_rate"] == 16000 and result["frame_ms"] == 30 and result["aggressiveness"] == 2
    assert result["duration_seconds"] == round(speech_end + 3.0, 3)
    spans = result["segments"]
    assert spans, result
    assert spans[0]["start"] >= speech_start - 0.03 and spans[-1]["end"] <= speech_end + 0.03
    assert spans[0]["start"] < speech_start + 0.5 and spans[-1]["end"] > speech_end - 1.0
    # The sample is continuous speech with short pauses: most of it is covered.
    assert result["speech_seconds"] > 0.8 * (speech_end - speech_start)
    assert result["speech_seconds"] == round(sum(s["end"] - s["start"] for s in spans), 3)
    assert result["speech_ratio"] == round(result["speech_seconds"] / result["duration_seconds"], 4)
    for a, b in pairwise(spans):
        assert b["start"] - a["end"] > vad.MAX_PAUSE_MS / 1000  # bridged otherwise
    assert all(s["end"] - s["start"] >= vad.MIN_SPEECH_MS / 1000 - 1e-9 for s in spans)


def test_the_analysis_is_deterministic_and_the_mode_matters():
    pcm, rate = sample_pcm()
    blob = wav_bytes(pcm, rate)
    runs = [vad.analyze(io.BytesIO(blob), mode=3) for _ in range(2)]
    assert runs[0] == runs[1]
    assert vad.analyze(io.BytesIO(blob), mode=0)["speech_seconds"] >= runs[0]["speech_seconds"]


# --- settings, names, events -------------------------------------------------------------


def test_settings_from_the_environment():
    assert vad.Settings.from_env({}) == vad.Settings() == vad.Settings(aggressiveness=2)
    assert vad.DEFAULT_AGGRESSIVENESS == 2
    assert vad.Settings.from_env({"VAD_AGGRESSIVENESS": ""}).aggressiveness == 2
    assert vad.Settings.from_env({"VAD_AGGRESSIVENESS": "3"}).aggressiveness == 3
    for bad in ("4", "-1", "high", "2.0"):
        with pytest.raises(vad.SettingsError, match="VAD_AGGRESSIVENESS"):
            vad.Settings.from_env({"VAD_AGGRESSIVENESS": bad})


@pytest.fixture
def fresh_instance():
    vad.instance_settings.cache_clear()
    yield
    vad.instance_settings.cache_clear()


def test_an_instance_reads_its_settings_once(fresh_instance, monkeypatch):
    monkeypatch.setenv("VAD_AGGRESSIVENESS", "3")
    assert vad.instance_settings() == vad.Settings(aggressiveness=3)
    monkeypatch.setenv("VAD_AGGRESSIVENESS", "1")
    assert vad.instance_settings().aggressiveness == 3  # read once, on first use
    vad.instance_settings.cache_clear()  # a new instance
    assert vad.instance_settings().aggressiveness == 1


def test_a_bad_setting_fails_the_event_naming_it(fresh_instance, monkeypatch):
    """Raised, not acknowledged: redelivered until the setting is fixed (Terraform's
    validation keeps a deployed value within 0-3)."""
    monkeypatch.setenv("VAD_AGGRESSIVENESS", "5")
    event = {"bucket": "b", "name": "recordings/u1/2025-01-02/x.wav"}
    with pytest.raises(vad.SettingsError, match="VAD_AGGRESSIVENESS='5'"):
        vad.handle_event(pubsub_event(json.dumps(event).encode()))


def test_the_sidecar_sits_next_to_the_wav():
    name = "recordings/u1/2025-01-02/20250102T030405.678Z.wav"
    assert vad.sidecar_name(name) == "recordings/u1/2025-01-02/20250102T030405.678Z.vad.json"
    late = "recordings/u1/2025-01-02/20250102T030405.678Z-late-abc.wav"
    assert vad.sidecar_name(late).endswith("-late-abc.vad.json")


def pubsub_event(data: bytes) -> CloudEvent:
    message = {"data": base64.b64encode(data).decode(), "attributes": {}, "messageId": "1"}
    return CloudEvent(
        {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "test"},
        {"message": message, "subscription": "s"},
    )


def test_the_usage_line_for_anything_but_gs_uris(capsys):
    assert vad.main([]) == 2 and vad.main(["recordings/u/d/x.wav"]) == 2
    assert capsys.readouterr().err.count("usage: python vad_consumer.py gs://BUCKET/recordings/") == 2


def test_decode_a_finished_recording_event():
    event = {"uid": "u1", "bucket": "b", "name": "recordings/u1/2025-01-02/x.wav", "sample_rate": 16000}
    assert vad.decode(pubsub_event(json.dumps(event).encode())) == ("b", "recordings/u1/2025-01-02/x.wav")


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"recordings/x.wav"',
        b"{}",
        b'{"bucket": "b"}',
        b'{"name": "recordings/u/d/x.wav"}',
        b'{"bucket": "b", "name": 7}',
        b'{"bucket": "", "name": "recordings/u/d/x.wav"}',
        b'{"bucket": "b", "name": "state/u1.json"}',
        b'{"bucket": "b", "name": "recordings/u/d/x.vad.json"}',
    ],
)
def test_a_bad_event_is_logged_and_acknowledged(data, capsys):
    with pytest.raises(vad.BadEvent):
        vad.decode(pubsub_event(data))
    assert vad.handle_event(pubsub_event(data)) is None  # returns: no retry
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (line["severity"], line["event"]) == ("ERROR", "vad_bad_event")


def test_an_event_without_a_message_is_bad(capsys):
    assert vad.handle_event(CloudEvent({"type": "t", "source": "s"}, {"nothing": 1})) is None
    assert vad.handle_event(None) is None
    assert [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()] == ["vad_bad_event"] * 2


# --- the receiver's contract, as the self-contained example restates it -----------------


def test_the_example_names_recordings_as_the_assembler_does():
    assert vad.RECORDINGS_PREFIX == recording.RECORDINGS_PREFIX
    for suffix in ("", "-late-abc"):
        name = recording.recording_name("u1", 1_735_787_045_678_000, suffix)
        event = {"uid": "u1", "uri": f"gs://b/{name}", "bucket": "b", "name": name}
        assert vad.decode(pubsub_event(json.dumps(event).encode())) == ("b", name)
        assert vad.sidecar_name(name) == name.removesuffix(".wav") + ".vad.json"


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 48000])
@pytest.mark.parametrize("data_bytes", [0, 2, 960, 115_200_000])
def test_the_example_reads_the_header_the_runtime_writes(rate, data_bytes):
    assert vad.HEADER_BYTES == wav.HEADER_BYTES
    assert (
        vad.parse_header(wav.header(rate, data_bytes))
        == wav.parse_header(wav.header(rate, data_bytes))
        == (rate, data_bytes)
    )


@pytest.mark.parametrize(
    "blob",
    [*BAD_HEADERS.values(), wav.header(16000, 960)[:4] + struct.pack("<I", 0) + wav.header(16000, 960)[8:]],
    ids=[*BAD_HEADERS, "wrong-riff-size"],
)
def test_the_example_refuses_the_headers_the_runtime_refuses(blob):
    for parse in (vad.parse_header, wav.parse_header):
        with pytest.raises(ValueError):
            parse(blob)


# --- compacted recordings (the receiver's optional compaction) ----------------------------


def test_the_example_knows_the_files_compaction_writes():
    assert set(vad.COMPACTED_SUFFIXES) == {f.suffix for f in Format if f is not Format.OFF}
    assert vad.SOURCE_GENERATION == compactor.SOURCE_GENERATION


def _compacted(pcm: bytes, rate: int, fmt) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"x{fmt.suffix}"
        codec.encode(io.BytesIO(wav_bytes(pcm, rate)), path, fmt)
        return path.read_bytes()


def test_a_flac_is_analyzed_exactly_as_its_wav():
    pcm, rate = sample_pcm()
    silence = bytes(2 * rate)
    audio = silence + pcm + silence
    assert vad.analyze_compacted(io.BytesIO(_compacted(audio, rate, Format.FLAC)), mode=2) == vad.analyze(
        io.BytesIO(wav_bytes(audio, rate)), mode=2
    )


def test_an_opus_is_analyzed_close_to_its_wav():
    pcm, rate = sample_pcm()
    silence = bytes(2 * rate)
    audio = silence + pcm + silence
    opus = vad.analyze_compacted(io.BytesIO(_compacted(audio, rate, Format.OPUS)), mode=2)
    original = vad.analyze(io.BytesIO(wav_bytes(audio, rate)), mode=2)
    assert (opus["sample_rate"], opus["duration_seconds"]) == (original["sample_rate"], original["duration_seconds"])
    assert abs(opus["speech_seconds"] - original["speech_seconds"]) < 0.05 * original["speech_seconds"]
    assert abs(opus["segments"][0]["start"] - original["segments"][0]["start"]) < 0.1


def test_a_compacted_file_that_does_not_decode_is_skipped():
    assert vad.analyze_compacted(io.BytesIO(b"fLaC not really"))["skipped"].startswith("does not decode")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # cffi prints it: the point
def test_a_read_error_inside_the_decoder_is_raised_not_taken_for_the_end():
    """libsndfile calls back into Python to read; soundfile turns an exception there into
    end of file. The consumer must see the NotFound of an object deleted mid-read."""
    pcm, rate = sample_pcm()
    blob = _compacted(pcm, rate, Format.FLAC)

    class Vanishing(io.BytesIO):
        def readinto(self, buffer):  # what soundfile calls
            if self.tell() > len(blob) // 2:
                raise exceptions.NotFound("deleted")
            return super().readinto(buffer)

    with pytest.raises(exceptions.NotFound):
        vad.analyze_compacted(Vanishing(blob))
