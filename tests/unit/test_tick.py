"""A tick says which shard's pass to run: Cloud Scheduler's message `{"shard": i}`."""

from __future__ import annotations

import json

from cloudevents.http import CloudEvent

from omi_receiver.devtools.ticker import tick_event
from omi_receiver.runtime.assembler import shard_of_tick


def as_cloud_event(headers: dict[str, str], body: bytes) -> CloudEvent:
    attributes = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
    return CloudEvent(attributes, json.loads(body))


def test_the_ticker_names_the_shard():
    assert shard_of_tick(as_cloud_event(*tick_event("projects/p/topics/t", 3, 4))) == 3


def test_a_tick_without_a_shard_runs_shard_0():
    event = CloudEvent({"type": "t", "source": "s"}, {"message": {"data": "bm90IGpzb24="}})  # "not json"
    assert shard_of_tick(event) == 0
    assert shard_of_tick(None) == 0
