"""`.local/stack.env` (written by `make up`) holds the ingest token in INGEST_URL: only its
owner may read it, from the first byte on."""

from __future__ import annotations

import os
import stat

from omi_receiver.devtools import stack

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
