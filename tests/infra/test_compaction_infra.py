"""infra/compaction.tf, the optional compaction of finished recordings (compact_recording):
off by default, built from the main source zip, fed by the recordings topic with retries,
its identity reads recordings and state objects, writes the chosen format's files and
deletes WAVs, nothing more. The function is google_cloudfunctions2_function.this["compactor"]
(functions.tf). Rendered with recordings_compaction off, flac and opus (test_terraform.py's
helpers)."""

from __future__ import annotations

import re

import pytest
import source_zips
from hcl_eval import Unknown
from test_terraform import (
    MEMBER,
    REPO,
    SA_EMAIL,
    config,
    default,
    everything,
    failing,
    functions,
    grants,
    instances,
    members_of,
    resolver,
    service_config,
    the,
    validations,
)
from test_vad_consumer import USER, VIEWER, allows

from omi_receiver.runtime.compaction import Format, Settings, compactor
from omi_receiver.runtime.compaction.settings import COMPACTION_FORMAT

# What switching compaction on adds, whatever the format: its resource instances.
ITS_INSTANCES = {
    "google_service_account.compactor[0]",
    *(
        f'google_storage_bucket_iam_member.compactor["{g}"]'
        for g in ("reads_recordings", "reads_states", "writes_compacted", "deletes_wavs")
    ),
    'google_cloudfunctions2_function.this["compactor"]',
    'google_cloud_run_service_iam_member.trigger_invokes["compactor"]',
}


def test_off_by_default_and_everything_it_adds_follows_the_switch():
    variable = config().variables["recordings_compaction"]
    r = resolver()
    assert variable.attributes["type"].src.strip() == "string"
    assert default("recordings_compaction") == "off" == Settings().format.value
    assert r.evaluate(variable.attributes["nullable"]) is False
    assert set(functions()) == {"ingest", "assembler"}
    rendered_off = everything()
    for fmt in ("flac", "opus"):
        rendered_on = everything(recordings_compaction=fmt)
        assert set(rendered_off) <= set(rendered_on) and set(rendered_on) - set(rendered_off) == ITS_INSTANCES, fmt
        # Switched on, everything else renders the same.
        for address, body in rendered_off.items():
            assert rendered_on[address] == body, f"{address} changes with recordings_compaction = {fmt}"


def test_the_setting_takes_exactly_what_the_code_takes():
    for value in ("off", "flac", "opus"):
        assert all(validations("recordings_compaction", value)), value
        assert Settings.from_env({COMPACTION_FORMAT: value}).format is Format(value)
    for value in ("", "FLAC ", "mp3", "wav"):
        assert not all(validations("recordings_compaction", value)), value


@pytest.mark.parametrize("fmt", ["flac", "opus"])
def test_the_function_runs_the_main_zips_entry_with_its_setting_and_a_retried_trigger(fmt):
    fn = functions(recordings_compaction=fmt)["compactor"]
    [build] = fn["build_config"]
    assert build["entry_point"] == "compact_recording"
    assert re.search(
        r"^def compact_recording\(cloud_event\):\n    compaction\.handle_event\(cloud_event\)$",
        (REPO / "main.py").read_text(),
        re.M,
    )
    main_zip = the("google_storage_bucket_object", "source")["name"]
    assert build["source"][0]["storage_source"][0]["object"] == main_zip
    sc = service_config(fn)
    assert sc["environment_variables"] == {COMPACTION_FORMAT: fmt}
    assert sc["service_account_email"] == Unknown(SA_EMAIL["compactor"])
    assert sc["ingress_settings"] == "ALLOW_INTERNAL_ONLY"
    assert (sc["available_memory"], sc["available_cpu"], sc["timeout_seconds"]) == ("1Gi", "1", 540)
    assert sc["max_instance_request_concurrency"] == 1 and sc["min_instance_count"] == 0
    assert fn["name"] == "omi-compact-recording"
    [trigger] = fn["event_trigger"]
    assert trigger["pubsub_topic"] == Unknown('google_pubsub_topic.this["recordings"].id')
    assert trigger["retry_policy"] == "RETRY_POLICY_RETRY"
    assert trigger["event_type"] == "google.cloud.pubsub.topic.v1.messagePublished"


def test_the_main_zip_holds_the_compaction_package():
    files = source_zips.zip_files("src")
    assert {f"omi_receiver/runtime/compaction/{m}.py" for m in ("__init__", "settings", "codec", "compactor")} <= set(
        files
    )


@pytest.mark.parametrize("fmt", ["flac", "opus"])
def test_its_account_reads_recordings_and_states_writes_its_format_and_deletes_wavs(fmt):
    bucket = the("google_storage_bucket", "recordings", recordings_compaction=fmt)["name"]
    given = instances("google_storage_bucket_iam_member", "compactor", recordings_compaction=fmt)
    assert {g["member"] for g in given.values()} == {MEMBER["compactor"]}
    assert {g["bucket"] for g in given.values()} == {bucket}
    by_role: dict[str, list[str]] = {}
    for g in given.values():
        by_role.setdefault(g["role"], []).append(g["condition"][0]["expression"])

    def may(role: str, name: str) -> bool:
        return any(allows(expression, name, bucket) for expression in by_role.get(role, []))

    wav = "recordings/u1/2025-01-02/20250102T030405.678Z.wav"
    mine = compactor.compacted_name(wav, Format(fmt))
    other = compactor.compacted_name(wav, Format("opus" if fmt == "flac" else "flac"))
    assert may(VIEWER, wav) and may(VIEWER, "state/u1.json") and may(VIEWER, mine)
    assert may(USER, mine) and may(USER, wav)  # write its own format; delete the WAV
    assert not may(USER, other) and not may(USER, wav.removesuffix(".wav") + ".vad.json")
    for name in ("state/u1.json", "leases/shard-0.json", "work/u1/r/data-1", "x.wav", "work/u1/r/p.flac"):
        assert not may(USER, name), name
    for name in ("leases/shard-0.json", "work/u1/r/data-1"):
        assert not may(VIEWER, name), name
    assert set(by_role) == {VIEWER, USER}


def test_its_account_is_granted_nothing_else():
    every = grants(recordings_compaction="opus", vad_consumer_enabled=True, recordings_subscription_name="rec-sub")
    to_it = {address for address, (_t, body) in every.items() if MEMBER["compactor"] in members_of(body)}
    assert to_it == {a for a in ITS_INSTANCES if a.startswith("google_storage_bucket_iam_member.compactor[")}


def test_opus_refuses_recordings_longer_than_it_can_encode_in_time():
    """libopus needs ~215 CPU s per audio hour: 2 h fit the function's 540 s."""
    assert compactor.MAX_SECONDS[Format.OPUS] == 7200
    assert failing("compactor", recordings_compaction="opus", max_recording_seconds=7200) == []
    assert failing("compactor", recordings_compaction="flac", max_recording_seconds=14400) == []
    [message] = failing("compactor", recordings_compaction="opus", max_recording_seconds=7201)
    assert "max_recording_seconds <= 7200" in message and message.endswith("the function's 540 s.")
