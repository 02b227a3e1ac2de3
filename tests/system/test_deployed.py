"""Against a real deployment (skipped unless configured):

    OMI_SYSTEM_WEBHOOK_URL=$(terraform -chdir=infra output -raw webhook_url) \
    OMI_SYSTEM_BUCKET=$(terraform -chdir=infra output -raw bucket) \
    .venv/bin/python -m pytest tests/system

Streams 20 seconds of audio as a current sender and waits (up to 4 minutes: one tick,
the settle window and a pass) for the recording to hold exactly those bytes.
"""

from __future__ import annotations

import io
import os
import time
import uuid
import wave

import numpy as np
import pytest

from omi_receiver.devtools import simulate

URL = os.environ.get("OMI_SYSTEM_WEBHOOK_URL")
BUCKET = os.environ.get("OMI_SYSTEM_BUCKET")

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(not (URL and BUCKET), reason="set OMI_SYSTEM_WEBHOOK_URL and OMI_SYSTEM_BUCKET"),
]


def test_a_stream_becomes_a_byte_identical_recording():
    from google.cloud import storage

    uid = f"system-{uuid.uuid4().hex[:10]}"
    pcm = np.random.default_rng(1).integers(-3000, 3000, 16000 * 20, dtype=np.int16).tobytes()
    summary = simulate.stream(pcm, 16000, URL, uid, simulate.Options(mode="current", interval=5, fast=True))
    assert summary.ok, summary.line()
    client = storage.Client()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        blobs = list(client.list_blobs(BUCKET, prefix=f"recordings/{uid}/"))
        if blobs and sum(b.size - 44 for b in blobs) >= len(pcm):
            break
        time.sleep(10)
    [blob] = blobs
    with wave.open(io.BytesIO(blob.download_as_bytes())) as w:
        assert w.getframerate() == 16000
        assert w.readframes(w.getnframes()) == pcm
