"""`.local/stack.env` (written by `make up`) holds the ingest token in INGEST_URL: only its
owner may read it, from the first byte on. The local tools' settings (ports, tick, where
`.local` is) are read once, typed, and a bad one is named."""

from __future__ import annotations

import os
import stat

import pytest

from omi_receiver.devtools import stack
from omi_receiver.devtools.settings import ROOT, LocalSettings
from omi_receiver.runtime.config import ConfigError

VALUES = {"INGEST_URL": "http://127.0.0.1:8080/secret-token", "RECORDINGS_BUCKET": "omi-recordings-local"}


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_env_file_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "stack.env"
    old_umask = os.umask(0o022)  # the usual umask, which makes files world-readable
    try:
        stack.write_env(path, VALUES)
    finally:
        os.umask(old_umask)
    assert mode(path) == 0o600
    assert path.read_text() == "INGEST_URL=http://127.0.0.1:8080/secret-token\nRECORDINGS_BUCKET=omi-recordings-local\n"


def test_an_existing_world_readable_env_file_is_replaced_not_reused(tmp_path):
    path = tmp_path / "stack.env"
    path.write_text("INGEST_URL=http://127.0.0.1:8080/old-token\n")
    path.chmod(0o644)
    with open(path) as opened_before:  # someone who could read the old file keeps this
        stack.write_env(path, VALUES)
        assert "secret-token" not in opened_before.read()
    assert mode(path) == 0o600 and "secret-token" in path.read_text()


# --- the local tools' settings: read once, typed, checked -------------------------------


def test_local_settings_defaults_and_values_from_the_environment(tmp_path):
    assert LocalSettings.from_env({}) == LocalSettings()
    assert LocalSettings().ports == {"PUBSUB_PORT": 8085, "GCS_PORT": 4443, "INGEST_PORT": 8080, "ASSEMBLER_PORT": 8081}
    assert LocalSettings().local_dir == ROOT / ".local"
    local = LocalSettings.from_env(
        {
            "INGEST_PORT": "9080",
            "TICK_SECONDS": "1.5",
            "OMI_LOCAL_DIR": str(tmp_path),
            "SESSION_GAP_SECONDS": "30",
            "GCS_PORT": "",
        }
    )
    assert (local.ingest_port, local.gcs_port, local.tick_seconds) == (9080, 4443, 1.5)
    assert (local.env_file, local.pid_file, local.logs_dir) == (
        tmp_path / "stack.env",
        tmp_path / "stack.pids",
        tmp_path / "logs",
    )


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"PUBSUB_PORT": "eighty"}, "PUBSUB_PORT"),
        ({"INGEST_PORT": "70000"}, "INGEST_PORT"),
        ({"ASSEMBLER_PORT": "8080"}, "ports must differ"),
        ({"TICK_SECONDS": "0"}, "TICK_SECONDS"),
    ],
)
def test_a_bad_local_setting_names_the_variable(environ, named):
    with pytest.raises(ConfigError, match=named):
        LocalSettings.from_env(environ)


def test_make_up_refuses_a_bad_port_with_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMI_LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("GCS_PORT", "not-a-port")
    stack.settings.cache_clear()
    try:
        assert stack.main(["up"]) == 1
    finally:
        stack.settings.cache_clear()
    assert capsys.readouterr().err == "error: GCS_PORT='not-a-port' is not a valid int\n"
    assert not (tmp_path / "stack.pids").exists()
