"""Transient Cloud Storage errors (429/503), before and after the request took effect.

fake-gcs-server never fails, so a fault proxy (omi_receiver.devtools.faultproxy) sits between
the storage client and the emulator and fails a share of requests.
"""

from __future__ import annotations

import pytest
from assembly import Clock, audio_of, drain, joined, publish, recordings, stream
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from omi_receiver.devtools.faultproxy import FaultProxy
from omi_receiver.runtime.assembler import Assembler

FAST_RETRY = DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.1).with_deadline(60)


@pytest.fixture
def faulty_storage(gcs_emulator, monkeypatch):
    proxy = FaultProxy(gcs_emulator, error_rate=0.25, mode="mixed", seed=1234).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    client = storage.Client(project="omi-test", credentials=AnonymousCredentials())
    yield proxy, client
    proxy.stop()


def test_flushes_survive_injected_429_and_503(stack_config, faulty_storage):
    proxy, client = faulty_storage
    clock = Clock()
    start = clock.now - 25 * 1_000_000
    first = stream("flaky", 20, start_us=start)
    second = stream("flaky", 5, start_us=first[-1].received_at_us + 200 * 1_000_000, seed=1)
    assembler = Assembler(stack_config, clock=clock, storage_client=client, storage_retry=FAST_RETRY)
    for i in range(0, 20, 4):
        publish(stack_config, first[i : i + 4] + first[i : i + 1])  # with a redelivered duplicate
        drain(assembler)
    clock.advance(230)
    publish(stack_config, second)
    drain(assembler)
    assert sum(proxy.injected.values()) >= 10, proxy.injected
    assert any(k.endswith(("after:429", "after:503")) for k in proxy.injected)
    recs = recordings(stack_config, "flaky")
    assert [audio_of(b, 16000) for _, b, _ in recs] == [joined(first), joined(second)]
    assert [m["chunks"] for _, _, m in recs] == ["20", "5"]
