"""infra/'s expressions evaluated (hcl_eval, via tf_config.ConfigResolver) instead of matched as
text: what a plan would compute for the names, messages and lists the code depends on.

Each test says which string-matching test of test_terraform.py it replaced; those were
deleted there (test_terraform.py now renders infra/ the same way)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import hcl_eval
import pytest
import tf_config

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"


@pytest.fixture(scope="module")
def config() -> tf_config.Config:
    return tf_config.load(INFRA)


def _resource_values(config, address: str, attr: str, overrides: dict) -> list:
    """attr of every instance of a counted resource."""
    rtype, name = address.split(".")
    instances = tf_config.ConfigResolver(config, overrides).resource(rtype, name)
    assert isinstance(instances, list), f"{address} has no count"
    return [hcl_eval.get_attr(i, attr) for i in instances]


@pytest.mark.parametrize("shards", [1, 2, 3, 64])
@pytest.mark.parametrize(
    "topic_base, sub_base", [("audio-chunks", "audio-chunks-assembler"), ("chunks.v2", "chunks.v2-assembler")]
)
def test_shard_names_are_the_ones_the_code_uses(config, shards, topic_base, sub_base):
    """Replaces test_shard_names_are_the_ones_the_code_uses / test_one_chunk_topic_and_one_
    subscription_per_shard's expression text: the names Terraform creates, evaluated, are
    Config.shard_topic(i) and Config.shard_subscription(i), and subscription i is on topic i."""
    from omi_receiver.runtime.config import Config

    code = Config(assembler_shards=shards, chunks_topic=topic_base, chunks_subscription=sub_base)
    overrides = {"assembler_shards": shards, "chunks_topic": topic_base, "chunks_subscription": sub_base}
    topics = _resource_values(config, "google_pubsub_topic.chunks", "name", overrides)
    subs = _resource_values(config, "google_pubsub_subscription.chunks", "name", overrides)
    assert topics == [code.shard_topic(i) for i in range(shards)]
    assert subs == [code.shard_subscription(i) for i in range(shards)]
    on = _resource_values(config, "google_pubsub_subscription.chunks", "topic", overrides)
    assert [t.label for t in on] == [f"google_pubsub_topic.chunks[{i}].id" for i in range(shards)]


@pytest.mark.parametrize("shards", [1, 3])
def test_each_tick_names_its_shard(config, shards):
    """Replaces test_ticks_drive_the_assembler_without_retries' comparison of the data
    expression's text: job i publishes {"shard": i, "shards": N}."""
    data = _resource_values(
        config, "google_cloud_scheduler_job.assembler_tick", "pubsub_target", {"assembler_shards": shards}
    )
    messages = [json.loads(base64.b64decode(hcl_eval.get_attr(t[0], "data"))) for t in data]
    assert messages == [{"shard": i, "shards": shards} for i in range(shards)]


@pytest.mark.parametrize("base", ["audio-chunks-assembler", "audio.chunks~x%y_z", "ab+c"])
def test_monitoring_covers_every_shard_subscription(config, base):
    """Replaces test_monitoring_covers_every_shard_subscription and
    test_chunks_subscription_regex_matches_exactly_the_shard_subscriptions (which re-implement
    the escaping in Python): the filters the dashboard and the backlog alert render, with 12
    shards, full-match exactly the 12 subscriptions Terraform creates."""
    import api_types

    overrides = {"assembler_shards": 12, "chunks_subscription": base}
    names = _resource_values(config, "google_pubsub_subscription.chunks", "name", overrides)
    covering = []
    for q in api_types.queries(config, overrides):
        m = re.search(r'subscription_id=monitoring\.regex\.full_match\("((?:[^"\\]|\\.)*)"\)', q.text)
        if not m:
            continue
        covering.append(q.where)
        pattern = m.group(1)
        for n in names:
            assert re.fullmatch(pattern, n), f"{q.where}: {n} not matched"
        # names only an unescaped pattern would match ("." any character, "b+" one or more b)
        near = {"audio.chunks~x%y_z": ["audioxchunks~x%y_z-1"], "ab+c": ["abbc-1", "abc-1"]}.get(base, [])
        for other in [base, f"{base}-12", f"{base}-1x", f"x{base}-1", *near]:
            if other not in names:
                assert not re.fullmatch(pattern, other), f"{q.where}: also matches {other}"
    assert any("dashboard" in w for w in covering) and any("chunks_backlog" in w for w in covering), covering


def test_outputs_list_every_shard_topic_and_subscription(config):
    """Replaces test_outputs_list_every_shard_topic_and_subscription's text comparison."""
    resolver = tf_config.ConfigResolver(config, {"assembler_shards": 3})
    topics = resolver.evaluate(config.outputs["topics"].attributes["value"])
    subs = resolver.evaluate(config.outputs["subscriptions"].attributes["value"])
    assert topics["chunks"] == _resource_values(config, "google_pubsub_topic.chunks", "name", {"assembler_shards": 3})
    assert subs["chunks"] == _resource_values(
        config, "google_pubsub_subscription.chunks", "name", {"assembler_shards": 3}
    )
    assert len(topics["chunks"]) == len(subs["chunks"]) == 3


@pytest.mark.parametrize(
    "memory, expected", [("512Mi", 512 * 2**20), ("1Gi", 2**30), ("2Gi", 2 * 2**30), ("1536Mi", 1536 * 2**20)]
)
def test_assembler_memory_in_bytes(config, memory, expected):
    """Replaces test_assembler_preconditions' search for 1073741824 and 1048576 in the text."""
    resolver = tf_config.ConfigResolver(config, {"assembler_memory": memory})
    assert resolver.local("assembler_memory_bytes") == expected


def test_ingest_tokens_are_the_primary_then_the_extra_ones_once(config):
    """Replaces test_ingest_token_secret's string checks on the locals."""
    primary, extra = "p" * 20, ["e" * 20, "p" * 20, "e" * 20, "f" * 20]
    resolver = tf_config.ConfigResolver(config, {"ingest_token": primary, "extra_ingest_tokens": extra})
    assert resolver.local("ingest_tokens") == [primary, "e" * 20, "f" * 20]
    version = config.resources[("google_secret_manager_secret_version", "ingest_token")]
    assert resolver.evaluate(version.attributes["secret_data"]) == ",".join([primary, "e" * 20, "f" * 20])
    generated = tf_config.ConfigResolver(config).local("ingest_token")
    assert isinstance(generated, hcl_eval.Unknown) and generated.label == "random_password.ingest_token.result"


@pytest.mark.parametrize("email, channels", [(None, 0), ("ops@example.com", 1)])
def test_alerts_notify_the_channel_only_when_an_address_is_set(config, email, channels):
    """Replaces test_alert_policies' comparison of the count expression's text."""
    resolver = tf_config.ConfigResolver(config, {"alert_email": email})
    assert len(resolver.resource("google_monitoring_notification_channel", "email")) == channels
    for (rtype, name), block in config.resources.items():
        if rtype == "google_monitoring_alert_policy":
            value = resolver.evaluate(block.attributes["notification_channels"])
            assert len(value) == channels, f"{rtype}.{name}"
