"""The one functions-framework launcher (omi_receiver.devtools.functions), on ingest: a served
function stops within a couple of seconds, its worker's exit hooks run to the end (ingest
writes the refusals it only counted), and nothing of its process group is left.

Each stop comes right as the client closes its kept-alive connection: with gunicorn's quick
shutdown (SIGINT to the master), the worker's SIGQUIT handler then deadlocked about one stop
in 30 on the lock ThreadPoolExecutor.submit() held, until SIGKILL, and the exit hooks' lines
were lost. Signalling the whole group made the worker run the handler twice: one stop in four
hung.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import requests

from omi_receiver.devtools.emulators import free_port, group_members
from omi_receiver.devtools.functions import STOP_GRACE_SECONDS, FunctionServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_stop_is_quick_and_the_worker_flushes_its_exit_hooks(stack_config, tmp_path):
    env = {
        **os.environ,
        "GOOGLE_CLOUD_PROJECT": stack_config.google_cloud_project,
        "CHUNKS_TOPIC": stack_config.chunks_topic,
        "INGEST_TOKENS": stack_config.ingest_tokens,
    }
    for attempt in range(6):
        server = FunctionServer(
            "receive_chunk", ROOT / "main.py", free_port(), tmp_path / f"ingest-{attempt}.log", env
        ).start(timeout=30)
        with requests.Session() as http:
            for _ in range(5):
                answer = http.post(f"{server.url}/nope?sample_rate=16000&uid=u1", data=b"\0\0", timeout=15)
                assert answer.status_code == 401
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < STOP_GRACE_SECONDS
        assert group_members(server.pid) == set()  # running ones: a zombie waits for init
        entries = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
        counts = [(e["error"], e["count"]) for e in entries if e.get("event") == "chunk_rejected"]
        assert counts == [("unauthorized", 1), ("unauthorized", 4)], server.log.read_text()[-2000:]
