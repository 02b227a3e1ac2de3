"""Static checks of cloudbuild.yaml (parsed with PyYAML; Cloud Build itself does not run here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLOUDBUILD = REPO / "cloudbuild.yaml"
SUBSTITUTION = re.compile(r"\$\{?(_[A-Z0-9_]+)")


@pytest.fixture(scope="module")
def build() -> dict:
    with CLOUDBUILD.open() as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def steps(build) -> dict[str, dict]:
    return {step["id"]: step for step in build["steps"]}


def _text(step: dict) -> str:
    return " ".join(str(a) for a in step.get("args", [])) + " " + str(step.get("entrypoint", ""))


def test_every_step_has_a_unique_id_and_wait_for(build):
    ids = [step.get("id") for step in build["steps"]]
    assert all(ids), "every step needs an id"
    assert len(ids) == len(set(ids)), "step ids must be unique"
    for step in build["steps"]:
        assert "waitFor" in step, f"step {step['id']} has no waitFor"
        for dep in step["waitFor"]:
            assert dep == "-" or dep in ids, f"step {step['id']} waits for unknown step {dep}"


def test_expected_steps(steps):
    assert {"install-and-test", "checkov", "fmt", "init", "validate", "plan", "apply"} <= set(steps)


def test_every_image_is_pinned(build):
    for step in build["steps"]:
        image = step["name"]
        if "@sha256:" in image:
            continue
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"step {step['id']}: image {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"step {step['id']}: image {image} is not pinned to a version"


def test_checkov_image_matches_the_pinned_checkov(steps):
    pin = re.search(r"^checkov==([0-9.]+)", (REPO / "requirements-checkov.txt").read_text(), re.M).group(1)
    assert steps["checkov"]["name"].endswith(f":{pin}")
    assert "infra" in _text(steps["checkov"]) and "terraform" in _text(steps["checkov"])


def test_terraform_steps(steps):
    for sid in ("fmt", "init", "validate", "plan", "apply"):
        assert steps[sid]["name"].startswith("hashicorp/terraform:"), sid
    assert "fmt -check -recursive infra" in _text(steps["fmt"])
    assert "-backend-config=bucket=${_TF_STATE_BUCKET}" in _text(steps["init"])
    plan = _text(steps["plan"])
    assert "plan" in plan and "-out=tfplan" in plan
    assert "project_id=$PROJECT_ID" in plan and "region=${_REGION}" in plan
    assert "init" in steps["validate"]["waitFor"] and "validate" in steps["plan"]["waitFor"]


def test_tests_run_the_unit_and_infra_tiers(steps):
    text = _text(steps["install-and-test"])
    assert "requirements-dev.txt" in text
    assert "pytest" in text and "tests/unit" in text and "tests/infra" in text


def test_apply_is_gated_on_apply_flag_tests_checkov_and_plan(steps):
    apply = steps["apply"]
    assert {"install-and-test", "checkov", "plan"} <= set(apply["waitFor"])
    script = _text(apply)
    assert re.search(r'if \[ "\$\{_APPLY\}" = "true" \]', script), "apply must run only when _APPLY is true"
    assert "apply" in script and "tfplan" in script
    # Nothing but the apply step may change the project.
    for sid, step in steps.items():
        if sid != "apply":
            assert not re.search(r"\bapply\b", " ".join(str(a) for a in step.get("args", []))), sid


def test_substitutions_have_defaults_and_are_used(build):
    subs = build["substitutions"]
    assert {"_REGION", "_TF_STATE_BUCKET", "_APPLY"} <= set(subs)
    assert subs["_REGION"] == "us-central1"
    assert subs["_APPLY"] == "false"
    for key, value in subs.items():
        assert re.fullmatch(r"_[A-Z0-9_]+", key), key
        assert value not in (None, ""), f"substitution {key} has no default"
    used = set(SUBSTITUTION.findall(CLOUDBUILD.read_text().split("\nsubstitutions:")[0]))
    assert used == set(subs), f"used {sorted(used)} vs declared {sorted(subs)}"
    if any("${PROJECT_ID}" in str(v) for v in subs.values()):
        assert build.get("options", {}).get("dynamicSubstitutions") is True


def test_timeout_and_logging(build):
    assert re.fullmatch(r"\d+s", build["timeout"]) and int(build["timeout"][:-1]) >= 600
    assert build["options"]["logging"] == "CLOUD_LOGGING_ONLY"


def test_lint_runs_the_pinned_ruff_and_gates_apply(steps):
    """Cloud Build lints and checks formatting as `make test` does, with the same ruff."""
    script = _text(steps["lint"])
    assert "requirements-dev.txt" in script and "ruff check ." in script and "ruff format --check ." in script
    assert re.search(r"^ruff==[0-9.]+$", (REPO / "requirements-dev.txt").read_text(), re.M)
    assert "lint" in steps["apply"]["waitFor"]
