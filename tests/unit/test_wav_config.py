"""The WAV header and the settings object."""

from __future__ import annotations

import io
import wave

import pytest
import soundfile

from omi_receiver.runtime import wav
from omi_receiver.runtime.config import DEFAULTS, ENV_VARS, Config, ConfigError


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_header_is_read_by_wave_and_soundfile(rate):
    data = bytes(range(256)) * 10
    blob = wav.header(rate, len(data)) + data
    with wave.open(io.BytesIO(blob)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (rate, 1, 2, len(data) // 2)
    samples, sr = soundfile.read(io.BytesIO(blob), dtype="int16")
    assert sr == rate and samples.tobytes() == data
    assert wav.parse_header(blob) == (rate, len(data))


def test_header_rejects_odd_sizes():
    with pytest.raises(ValueError):
        wav.header(16000, 3)


def test_config_reads_env_with_types():
    config = Config.from_env({"SESSION_GAP_SECONDS": "30", "SETTLE_SECONDS": "2.5", "INGEST_TOKENS": "a, b,"})
    assert config.session_gap_seconds == 30 and config.settle_seconds == 2.5
    assert config.tokens == ("a", "b")


@pytest.mark.parametrize(
    "raw, value",
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ("no", False),
        (" False ", False),
    ],
)
def test_config_reads_booleans(raw, value):
    assert Config.from_env({"LOG_ACCEPTED_CHUNKS": raw}).log_accepted_chunks is value


def test_config_refuses_a_boolean_it_cannot_read():
    # Python's bool("off") is True: a typo must not turn a setting on.
    with pytest.raises(ConfigError, match="LOG_ACCEPTED_CHUNKS='off' is not a valid boolean"):
        Config.from_env({"LOG_ACCEPTED_CHUNKS": "off"})


def test_config_errors_name_the_variable():
    with pytest.raises(ConfigError, match="MAX_CHUNK_BYTES"):
        Config.from_env({"MAX_CHUNK_BYTES": "lots"})
    with pytest.raises(ConfigError, match="RECORDINGS_BUCKET"):
        Config().require("recordings_bucket")
    with pytest.raises(ConfigError, match="LEASE_SECONDS"):
        Config.from_env({"LEASE_SECONDS": "10", "PASS_SECONDS": "45"})


def test_env_var_names_and_defaults_are_exported():
    assert "SESSION_GAP_SECONDS" in ENV_VARS and DEFAULTS["SESSION_GAP_SECONDS"] == 120


def test_allowed_uids_are_read_as_a_set_and_checked():
    assert Config.from_env({}).uid_allow_list is None
    assert Config.from_env({"ALLOWED_UIDS": " alice, bob_2 ,,"}).uid_allow_list == {"alice", "bob_2"}
    with pytest.raises(ConfigError, match="ALLOWED_UIDS"):
        Config.from_env({"ALLOWED_UIDS": "alice,carol/2026-11-29"})


@pytest.mark.parametrize("raw", ["0", "-1", "61", "nan"])
def test_body_read_seconds_is_bounded(raw):
    with pytest.raises(ConfigError, match="BODY_READ_SECONDS"):
        Config.from_env({"BODY_READ_SECONDS": raw})
