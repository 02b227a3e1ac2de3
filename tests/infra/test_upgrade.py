"""An existing deployment upgrades in place: every resource instance a deployment made with
the last release holds is still declared, or moved to its new address by a `moved` block,
or replaced on purpose for a reason written here. Anything else, `terraform apply` would
destroy and create again (a function, a subscription with its backlog, a grant).

tests/data/infra/deployed-before-issue-14.json lists the instances of two deployments made
with the release before infra/ declared the functions in one resource (b8e2d42), written by
tests/infra/addresses.py from that commit's infra/.
"""

from __future__ import annotations

import json
from pathlib import Path

import addresses
import pytest

REPO = Path(__file__).resolve().parents[2]
BEFORE = json.loads((REPO / "tests" / "data" / "infra" / "deployed-before-issue-14.json").read_text())

# Instances an upgrade replaces or removes on purpose, and why.
REPLACED_ON_PURPOSE = {
    # Cloud Logging cannot change a log-based metric's value type: the refusals counter of
    # earlier releases gives way to google_logging_metric.ingest_rejections, a distribution.
    "google_logging_metric.chunk_rejected",
    # Least privilege: Eventarc needs roles/eventarc.eventReceiver only for events other than
    # direct Pub/Sub messages, and the triggers here carry only those.
    'google_project_iam_member.this["trigger_receives_events"]',
}


@pytest.mark.parametrize("deployment", BEFORE["deployments"], ids=[d["name"] for d in BEFORE["deployments"]])
def test_every_instance_of_the_last_release_is_kept_or_moved(deployment):
    now = addresses.instance_addresses(REPO / "infra", deployment["variables"])
    moved = dict(addresses.moves(REPO / "infra"))
    lost = []
    for address in deployment["instances"]:
        target = address
        while target in moved and target not in now:  # moves may chain
            target = moved[target]
        if target not in now and address not in REPLACED_ON_PURPOSE:
            lost.append(address)
    assert not lost, f"an upgrade would destroy and re-create these (add a moved block): {lost}"


def test_moved_blocks_lead_to_declared_instances():
    """A `moved` whose target is not declared would be an error at plan time; check it
    with every optional resource switched on, as the richer deployment above has them."""
    variables = BEFORE["deployments"][-1]["variables"]
    now = addresses.instance_addresses(REPO / "infra", variables)
    for source, target in addresses.moves(REPO / "infra"):
        assert target in now, f"moved from {source} to {target}, which is not declared"
        assert source not in now, f"moved from {source}, which is still declared"


def test_the_functions_are_moved_into_the_one_resource():
    moved = dict(addresses.moves(REPO / "infra"))
    assert moved["google_cloudfunctions2_function.ingest"] == 'google_cloudfunctions2_function.this["ingest"]'
    assert moved["google_cloudfunctions2_function.assembler"] == 'google_cloudfunctions2_function.this["assembler"]'
    assert moved["google_cloudfunctions2_function.vad[0]"] == 'google_cloudfunctions2_function.this["vad"]'
