"""infra/vad.tf, the optional example consumer (analyze_recording): off by default, built
from examples/vad alone into a zip of its own, fed by the recordings topic with retries, and
its identity reads recordings and writes sidecars, nothing more. Parsed with python-hcl2 like
test_terraform.py, whose helpers it uses; the zip is listed by tests/source_zips.py."""

from __future__ import annotations

import json
import os
import re
import subprocess

import hcl2
import pytest
import source_zips
import vad_consumer as vad
from test_checkov import BUILD_HINT, CHECKOV
from test_terraform import (
    INFRA,
    REPO,
    _norm,
    block,
    locals_,
    named_blocks,
    refs,
    resource,
    resources_,
)

EXAMPLE = REPO / "examples" / "vad"

ENABLED = "${var.vad_consumer_enabled ? 1 : 0}"


def vad_file_blocks(kind: str = "resource") -> dict[tuple[str, str], dict]:
    with (INFRA / "vad.tf").open() as fh:
        doc = _norm(hcl2.load(fh))
    return {
        (rtype, name): body for b in doc.get(kind, []) for rtype, named in b.items() for name, body in named.items()
    }


def function() -> dict:
    return resource("google_cloudfunctions2_function", "vad")


def test_off_by_default_and_every_resource_follows_the_switch():
    variable = named_blocks("variable")["vad_consumer_enabled"]
    assert (variable["type"], variable["default"], variable.get("nullable")) == ("bool", False, False)
    own = vad_file_blocks()
    assert set(own) == {
        ("google_storage_bucket_object", "vad_source"),
        ("google_service_account", "vad"),
        ("google_storage_bucket_iam_member", "vad"),
        ("google_cloudfunctions2_function", "vad"),
        ("google_cloud_run_service_iam_member", "trigger_invokes_vad"),
    }
    assert set(vad_file_blocks("data")) == {("archive_file", "vad")}
    for (rtype, name), body in {**own, **vad_file_blocks("data")}.items():
        if "for_each" in body:
            assert body["for_each"] == "${var.vad_consumer_enabled ? local.vad_grants : {}}", (rtype, name)
        else:
            assert body["count"] == ENABLED, (rtype, name)
    # Nothing outside vad.tf names the consumer's resources but the outputs (by instance).
    for path in INFRA.glob("*.tf"):
        if path.name not in ("vad.tf", "outputs.tf"):
            text = path.read_text()
            for own_name in (
                "google_service_account.vad",
                "google_cloudfunctions2_function.vad",
                "google_storage_bucket_object.vad_source",
                "data.archive_file.vad",
            ):
                assert own_name not in text, (path.name, own_name)


def test_triggered_by_the_recordings_topic_with_retries():
    trigger = block(function(), "event_trigger")
    assert trigger["event_type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert trigger["pubsub_topic"] == '${google_pubsub_topic.this["recordings"].id}'
    assert trigger["retry_policy"] == "RETRY_POLICY_RETRY"
    assert trigger["trigger_region"] == "${var.region}"
    # Eventarc delivers as the existing trigger account, which may invoke the function.
    assert trigger["service_account_email"] == '${google_service_account.this["trigger"].email}'
    invoker = resource("google_cloud_run_service_iam_member", "trigger_invokes_vad")
    assert invoker["service"] == "${google_cloudfunctions2_function.vad[0].name}"
    assert (invoker["role"], invoker["member"]) == ("roles/run.invoker", '${local.members["trigger"]}')


def test_built_from_its_own_source_and_served_internally_as_its_own_account():
    build = block(function(), "build_config")
    assert build["entry_point"] == "analyze_recording"
    assert re.search(
        r"^def analyze_recording\(cloud_event\):\n    vad_consumer\.handle_event\(cloud_event\)$",
        (EXAMPLE / "main.py").read_text(),
        re.M,
    )
    assert build["runtime"] == "${local.runtime}"
    assert build["service_account"] == '${google_service_account.this["build"].id}'
    source = block(block(build, "source"), "storage_source")
    assert source == {
        "bucket": "${google_storage_bucket.source.name}",
        "object": "${google_storage_bucket_object.vad_source[0].name}",
    }
    service = block(function(), "service_config")
    assert service["ingress_settings"] == "ALLOW_INTERNAL_ONLY"
    assert service["service_account_email"] == "${google_service_account.vad[0].email}"
    assert service["max_instance_request_concurrency"] == 1
    assert function()["labels"] == "${local.labels}"
    assert function()["name"] == "${local.vad_function_name}"
    assert locals_()["vad_function_name"] == "${var.name_prefix}-analyze-recording"


def test_its_source_object_is_named_by_the_hash_of_its_own_zip():
    obj = resource("google_storage_bucket_object", "vad_source")
    assert obj["name"] == "vad-source-${data.archive_file.vad[0].output_md5}.zip"
    assert obj["source"] == "${data.archive_file.vad[0].output_path}"
    assert (obj["bucket"], obj["content_type"]) == ("${google_storage_bucket.source.name}", "application/zip")
    # Its own zip file and object name: neither can overwrite the other functions' zip.
    other = resource("google_storage_bucket_object", "source")
    assert not obj["name"].startswith(other["name"].split("$")[0])
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
    assert set(own) == {"functions-framework", "google-cloud-storage", "webrtcvad-wheels"}
    runtime = pins(REPO / "requirements.txt")
    assert "webrtcvad-wheels" not in runtime  # ingest and the assembler do not load it
    shared = own.keys() & runtime.keys()
    assert shared == {"functions-framework", "google-cloud-storage"}
    assert {name: own[name] for name in shared} == {name: runtime[name] for name in shared}
    # The development environment installs them (the tests import the consumer).
    assert "-r examples/vad/requirements.txt" in (REPO / "requirements-dev.txt").read_text().splitlines()


def test_its_one_setting_comes_from_a_variable_with_the_code_default():
    assert block(function(), "service_config")["environment_variables"] == {
        "VAD_AGGRESSIVENESS": "${tostring(var.vad_aggressiveness)}"
    }
    variable = named_blocks("variable")["vad_aggressiveness"]
    assert variable["default"] == vad.DEFAULT_AGGRESSIVENESS == vad.Settings().aggressiveness
    assert vad.VAD_AGGRESSIVENESS == "VAD_AGGRESSIVENESS"
    assert "contains([0, 1, 2, 3], var.vad_aggressiveness)" in block(variable, "validation")["condition"]


def allows(expression: str, object_name: str, bucket: str = "b") -> bool:
    """Evaluate the conditions vad.tf uses (startsWith/endsWith clauses joined by &&) on
    an object of the recordings bucket."""
    objects = f"projects/_/buckets/{bucket}/objects/"
    assert locals_()["recordings_objects"] == "projects/_/buckets/${local.recordings_bucket_name}/objects/"
    text = expression.replace('\\"', '"').replace("${local.recordings_objects}", objects)
    name = objects + object_name
    results = []
    for clause in text.split(" && "):
        m = re.fullmatch(r'resource\.name\.(startsWith|endsWith)\("([^"\\]*)"\)', clause.strip())
        assert m, f"unexpected condition clause {clause!r}"
        results.append(name.startswith(m.group(2)) if m.group(1) == "startsWith" else name.endswith(m.group(2)))
    return all(results)


def test_its_account_reads_recordings_and_writes_only_sidecars():
    grant = resource("google_storage_bucket_iam_member", "vad")
    assert grant["bucket"] == "${google_storage_bucket.recordings.name}"
    assert grant["member"] == "serviceAccount:${google_service_account.vad[0].email}"
    assert (grant["role"], block(grant, "condition")["expression"]) == (
        "${each.value.role}",
        "${each.value.expression}",
    )
    grants = locals_()["vad_grants"]
    assert {g["role"] for g in grants.values()} == {"roles/storage.objectViewer", "roles/storage.objectUser"}
    viewer = next(g["expression"] for g in grants.values() if g["role"] == "roles/storage.objectViewer")
    user = next(g["expression"] for g in grants.values() if g["role"] == "roles/storage.objectUser")
    wav_name = f"{vad.RECORDINGS_PREFIX}u1/2025-01-02/20250102T030405.678Z.wav"
    sidecar = vad.sidecar_name(wav_name)
    assert allows(viewer, wav_name) and allows(viewer, sidecar)
    assert allows(user, sidecar) and not allows(user, wav_name)
    for other in ("state/u1.json", "leases/shard-0.json", "work/u1/r/data-1", "x.vad.json", "work/u1/r/p.vad.json"):
        assert not allows(viewer, other) and not allows(user, other), other
    assert not allows(user, f"{sidecar}.wav")
    # The bucket has uniform access, which IAM conditions need.
    assert resource("google_storage_bucket", "recordings")["uniform_bucket_level_access"] is True


def test_its_account_is_granted_nothing_else():
    for (rtype, name), body in resources_().items():
        if (rtype, name) == ("google_storage_bucket_iam_member", "vad"):
            continue
        if rtype.endswith("_iam_member") or rtype.endswith("_iam_binding"):
            text = refs(body.get("member", "")) + refs(body.get("members", "")) + refs(body.get("for_each", ""))
            assert "google_service_account.vad" not in text, f"{rtype}.{name} grants the VAD account more"


def test_outputs_name_the_consumer_when_it_exists():
    outputs = named_blocks("output")
    assert '{for f in google_cloudfunctions2_function.vad : "vad" => f.name}' in outputs["functions"]["value"]
    assert '{for sa in google_service_account.vad : "vad" => sa.email}' in outputs["service_accounts"]["value"]


def test_tfvars_example_shows_how_to_turn_it_on():
    text = (INFRA / "terraform.tfvars.example").read_text()
    assert re.search(r"^# vad_consumer_enabled = true$", text, re.M)


@pytest.mark.slow
@pytest.mark.checkov
def test_checkov_passes_with_the_consumer_on(tmp_path):
    """The default run (test_checkov.py) sees the consumer's counted resources switched off;
    scan them switched on too."""
    assert CHECKOV.exists(), f"{CHECKOV} not found; `make test` builds it, or: {BUILD_HINT}"
    var_file = tmp_path / "on.tfvars"
    var_file.write_text('project_id = "my-omi-project"\nvad_consumer_enabled = true\n')
    proc = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            "infra",
            "--framework",
            "terraform",
            "--var-file",
            str(var_file),
            "-o",
            "json",
            "--compact",
            "--skip-download",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    [report] = [r for r in (data if isinstance(data, list) else [data]) if r.get("check_type") == "terraform"]
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"].get("failed_checks", [])]
    assert not failed, failed
    checked = {c["resource"] for c in report["results"].get("passed_checks", [])}
    assert "google_cloudfunctions2_function.vad[0]" in checked, "the switched-on function was not scanned"
