"""infra/vad.tf, the optional example consumer (analyze_recording): off by default, built
from examples/vad alone into a zip of its own, fed by the recordings topic with retries, and
its identity reads recordings and writes sidecars, nothing more. The function itself is
google_cloudfunctions2_function.this["vad"] (functions.tf). Checked on infra/ rendered with
vad_consumer_enabled off and on (test_terraform.py's helpers); the zip is listed by
tests/source_zips.py."""

from __future__ import annotations

import re

import pytest
import source_zips
import vad_consumer as vad
from hcl_eval import Unknown
from test_checkov import scan
from test_terraform import (
    INFRA,
    MEMBER,
    PROJECT,
    REPO,
    SA_EMAIL,
    config,
    default,
    everything,
    functions,
    grants,
    instances,
    members_of,
    outputs,
    resolver,
    service_config,
    the,
    validations,
)

EXAMPLE = REPO / "examples" / "vad"
ON = {"vad_consumer_enabled": True}

# What switching the consumer on adds: its resource instances, and its zip.
ITS_INSTANCES = {
    "google_storage_bucket_object.vad_source[0]",
    "google_service_account.vad[0]",
    'google_storage_bucket_iam_member.vad["reads_recordings"]',
    'google_storage_bucket_iam_member.vad["writes_sidecars"]',
    'google_cloudfunctions2_function.this["vad"]',
    'google_cloud_run_service_iam_member.trigger_invokes["vad"]',
}


def function() -> dict:
    return functions(**ON)["vad"]


def test_off_by_default_and_everything_it_adds_follows_the_switch():
    variable = config().variables["vad_consumer_enabled"]
    r = resolver()
    assert variable.attributes["type"].src.strip() == "bool"
    assert (r.evaluate(variable.attributes["default"]), r.evaluate(variable.attributes["nullable"])) == (False, False)
    # Its zip is built only when it is on.
    for enabled, count in ((False, 0), (True, 1)):
        zips = resolver(vad_consumer_enabled=enabled).data("archive_file", "vad")
        assert len(zips) == count, enabled
    # Switched on or off, everything else renders the same (and off, nothing refers to it).
    assert set(functions()) == {"ingest", "assembler"}
    rendered_off, rendered_on = everything(), everything(**ON)
    assert set(rendered_off) <= set(rendered_on) and set(rendered_on) - set(rendered_off) == ITS_INSTANCES
    assert set(everything(vad_consumer_enabled=False)) == set(rendered_off)
    for address, body in rendered_off.items():
        assert rendered_on[address] == body, f"{address} changes with vad_consumer_enabled"


def test_triggered_by_the_recordings_topic_with_retries():
    [trigger] = function()["event_trigger"]
    assert trigger == {
        "trigger_region": default("region"),
        "event_type": "google.cloud.pubsub.topic.v1.messagePublished",
        "pubsub_topic": Unknown('google_pubsub_topic.this["recordings"].id'),
        "retry_policy": "RETRY_POLICY_RETRY",
        # Eventarc delivers as the existing trigger account, which may invoke the function.
        "service_account_email": Unknown(SA_EMAIL["trigger"]),
    }
    invokers = instances("google_cloud_run_service_iam_member", "trigger_invokes", **ON)
    invoker = invokers['google_cloud_run_service_iam_member.trigger_invokes["vad"]']
    assert invoker == {
        "project": PROJECT,
        "location": default("region"),
        "service": function()["name"],
        "role": "roles/run.invoker",
        "member": MEMBER["trigger"],
    }


def test_built_from_its_own_source_and_served_internally_as_its_own_account():
    fn = function()
    [build] = fn["build_config"]
    assert build["entry_point"] == "analyze_recording"
    assert re.search(
        r"^def analyze_recording\(cloud_event\):\n    vad_consumer\.handle_event\(cloud_event\)$",
        (EXAMPLE / "main.py").read_text(),
        re.M,
    )
    assert build["runtime"] == "python312"
    assert build["service_account"] == Unknown('google_service_account.this["build"].id')
    own_object = the_object()
    assert build["source"] == [
        {"storage_source": [{"bucket": the("google_storage_bucket", "source")["name"], "object": own_object["name"]}]}
    ]
    sc = service_config(fn)
    assert sc["ingress_settings"] == "ALLOW_INTERNAL_ONLY"
    assert sc["service_account_email"] == Unknown(SA_EMAIL["vad"])
    assert sc["max_instance_request_concurrency"] == 1
    assert sc["secret_environment_variables"] == []
    assert fn["name"] == "omi-analyze-recording"
    assert functions(name_prefix="x1", **ON)["vad"]["name"] == "x1-analyze-recording"
    account = the_account()
    assert account["account_id"] == "omi-vad" and account["project"] == PROJECT


def the_object() -> dict:
    [obj] = instances("google_storage_bucket_object", "vad_source", **ON).values()
    return obj


def the_account() -> dict:
    [account] = instances("google_service_account", "vad", **ON).values()
    return account


def test_its_source_object_is_named_by_the_hash_of_its_own_zip():
    obj = the_object()
    assert obj["name"] == "vad-source-<data.archive_file.vad[0].output_md5>.zip"
    [zip_] = resolver(**ON).data("archive_file", "vad")
    assert obj["source"] == zip_.attr("output_path")
    assert (obj["bucket"], obj["content_type"]) == (the("google_storage_bucket", "source")["name"], "application/zip")
    # Its own zip file and object name: neither can overwrite the other functions' zip.
    other = the("google_storage_bucket_object", "source", **ON)
    assert obj["name"] != other["name"] and obj["source"] != other["source"]
    assert not obj["name"].startswith(other["name"].split("<")[0])
    assert source_zips.archive("vad")["output_path"] != source_zips.archive("src")["output_path"]


def test_its_zip_is_the_example_folder_s_three_files():
    """The zip Terraform would build: main.py, vad_consumer.py and requirements.txt of
    examples/vad at the zip's root, where the Python runtime looks for them."""
    assert source_zips.zip_files("vad") == {
        name: EXAMPLE / name for name in ("main.py", "vad_consumer.py", "requirements.txt")
    }
    assert source_zips.empty_globs("vad") == []


def pins(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not an exact pin"
            out[name.lower()] = version
    return out


def test_its_requirements_are_its_own_exact_pins_at_the_repository_s_versions():
    own = pins(EXAMPLE / "requirements.txt")
    # soundfile (and numpy, which it imports) decode compacted recordings (.flac, .opus).
    assert set(own) == {"functions-framework", "google-cloud-storage", "webrtcvad-wheels", "soundfile", "numpy"}
    runtime = pins(REPO / "requirements.txt")
    assert "webrtcvad-wheels" not in runtime  # ingest and the assembler do not load it
    shared = own.keys() & runtime.keys()
    assert shared == {"functions-framework", "google-cloud-storage", "soundfile", "numpy"}
    assert {name: own[name] for name in shared} == {name: runtime[name] for name in shared}
    # The development environment installs them (the tests import the consumer).
    assert "-r examples/vad/requirements.txt" in (REPO / "requirements-dev.txt").read_text().splitlines()


@pytest.mark.parametrize("aggressiveness", [None, 0, 3])
def test_its_one_setting_comes_from_a_variable_with_the_code_default(aggressiveness):
    overrides = {} if aggressiveness is None else {"vad_aggressiveness": aggressiveness}
    expected = vad.DEFAULT_AGGRESSIVENESS if aggressiveness is None else aggressiveness
    env = service_config(functions(**ON, **overrides)["vad"])["environment_variables"]
    assert env == {vad.VAD_AGGRESSIVENESS: str(expected)}
    assert vad.VAD_AGGRESSIVENESS == "VAD_AGGRESSIVENESS"
    assert vad.Settings.from_env(env).aggressiveness == expected  # what the consumer reads from it
    assert default("vad_aggressiveness") == vad.DEFAULT_AGGRESSIVENESS == vad.Settings().aggressiveness
    for value in (0, 1, 2, 3):
        assert all(validations("vad_aggressiveness", value)), value
    for value in (-1, 4, 2.5):
        assert not all(validations("vad_aggressiveness", value)), value


def allows(expression: str, object_name: str, bucket: str) -> bool:
    """Evaluate the IAM conditions vad.tf renders (CEL: startsWith/endsWith clauses joined by
    &&) on an object of the recordings bucket."""
    name = f"projects/_/buckets/{bucket}/objects/{object_name}"
    results = []
    for clause in expression.split(" && "):
        m = re.fullmatch(r'resource\.name\.(startsWith|endsWith)\("([^"\\]*)"\)', clause.strip())
        assert m, f"unexpected condition clause {clause!r}"
        results.append(name.startswith(m.group(2)) if m.group(1) == "startsWith" else name.endswith(m.group(2)))
    return all(results)


VIEWER, USER = "roles/storage.objectViewer", "roles/storage.objectUser"


@pytest.mark.parametrize("bucket_name", [None, "own.bucket-name"])
def test_its_account_reads_recordings_and_writes_only_sidecars(bucket_name):
    overrides = {**ON, "recordings_bucket_name": bucket_name}
    bucket = the("google_storage_bucket", "recordings", **overrides)
    assert bucket["name"] == (bucket_name or f"{PROJECT}-omi-recordings")
    given = instances("google_storage_bucket_iam_member", "vad", **overrides)
    assert len(given) == 2
    for g in given.values():
        assert (g["bucket"], g["member"]) == (bucket["name"], MEMBER["vad"])
    conditions = {g["role"]: g["condition"][0]["expression"] for g in given.values()}
    assert set(conditions) == {VIEWER, USER}
    viewer, user = conditions[VIEWER], conditions[USER]
    wav_name = f"{vad.RECORDINGS_PREFIX}u1/2025-01-02/20250102T030405.678Z.wav"
    sidecar = vad.sidecar_name(wav_name)
    assert allows(viewer, wav_name, bucket["name"]) and allows(viewer, sidecar, bucket["name"])
    assert allows(user, sidecar, bucket["name"]) and not allows(user, wav_name, bucket["name"])
    for other in ("state/u1.json", "leases/shard-0.json", "work/u1/r/data-1", "x.vad.json", "work/u1/r/p.vad.json"):
        assert not allows(viewer, other, bucket["name"]) and not allows(user, other, bucket["name"]), other
    assert not allows(user, f"{sidecar}.wav", bucket["name"])
    # Another bucket's objects of the same name are not the recordings bucket's.
    assert not allows(viewer, wav_name, "other-bucket")
    # The bucket has uniform access, which IAM conditions need.
    assert bucket["uniform_bucket_level_access"] is True


def test_its_account_is_granted_nothing_else():
    every = grants(**ON, recordings_subscription_name="rec-sub", assembler_shards=2, alert_email="ops@example.com")
    to_vad = {address for address, (_t, body) in every.items() if MEMBER["vad"] in members_of(body)}
    assert to_vad == {a for a in ITS_INSTANCES if a.startswith("google_storage_bucket_iam_member.vad[")}


def test_outputs_name_the_consumer_when_it_exists():
    for enabled in (False, True):
        rendered = outputs(vad_consumer_enabled=enabled)
        names = {key: fn["name"] for key, fn in functions(vad_consumer_enabled=enabled).items()}
        assert rendered["functions"] == names
        accounts = {"ingest", "assembler", "trigger", "build"} | ({"vad"} if enabled else set())
        assert set(rendered["service_accounts"]) == accounts
        if enabled:
            assert names["vad"] == "omi-analyze-recording"
            assert rendered["service_accounts"]["vad"] == Unknown(SA_EMAIL["vad"])


def test_tfvars_example_shows_how_to_turn_it_on():
    text = (INFRA / "terraform.tfvars.example").read_text()
    assert re.search(r"^# vad_consumer_enabled = true$", text, re.M)


@pytest.mark.slow
@pytest.mark.checkov
def test_checkov_passes_with_the_consumer_and_compaction_on(tmp_path):
    """The default run (test_checkov.py) sees the consumer's and the compactor's counted
    resources switched off; scan them switched on too. checkov does not expand the functions' for_each (a map built
    from references), so it scans google_cloudfunctions2_function.this as one block either way."""
    var_file = tmp_path / "on.tfvars"
    var_file.write_text('project_id = "my-omi-project"\nvad_consumer_enabled = true\nrecordings_compaction = "flac"\n')
    report = scan(var_file)
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"].get("failed_checks", [])]
    assert not failed, failed
    checked = {c["resource"] for kind in ("passed_checks", "skipped_checks") for c in report["results"].get(kind, [])}
    assert "google_cloudfunctions2_function.this" in checked, "the functions were not scanned"
    assert any(r.startswith("google_storage_bucket_iam_member.vad") for r in checked), "its grants were not scanned"
    assert any(r.startswith("google_storage_bucket_iam_member.compactor") for r in checked), "the compactor's neither"
