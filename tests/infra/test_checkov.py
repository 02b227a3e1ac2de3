"""checkov over infra/: no failed check, and every skip says why.

checkov lives in its own virtualenv (.venv-checkov, from requirements-checkov.txt): it
depends on bc-python-hcl2, which installs the same module name `hcl2` as the python-hcl2
that tests/infra/test_terraform.py uses, and the two overwrite each other in one venv.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
BUILD_HINT = "python3 -m venv .venv-checkov && .venv-checkov/bin/pip install -r requirements-checkov.txt"


def _pinned_version() -> str:
    text = (REPO / "requirements-checkov.txt").read_text()
    m = re.search(r"^checkov==([0-9.]+)\s*$", text, re.M)
    assert m, "requirements-checkov.txt must pin checkov==X.Y.Z"
    return m.group(1)


@pytest.fixture(scope="module")
def report() -> dict:
    return scan()


def scan(var_file: Path | None = None) -> dict:
    """checkov's terraform report over infra/ (with `var_file`'s settings, when given)."""
    # `make test` builds it; a missing scanner is a failure, never a silent skip.
    assert CHECKOV.exists(), f"{CHECKOV} not found; `make test` builds it, or: {BUILD_HINT}"
    # Not --quiet: with it the JSON holds only the failed checks, and the skipped ones (with
    # their reasons) are needed too. --skip-download: no call to the Prisma Cloud API
    # (offline here; it only adds guideline links).
    proc = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            "infra",
            "--framework",
            "terraform",
            *(["--var-file", str(var_file)] if var_file else []),
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
    assert proc.returncode in (0, 1), f"checkov crashed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    data = json.loads(proc.stdout)
    reports = data if isinstance(data, list) else [data]
    terraform = [r for r in reports if r.get("check_type") == "terraform"]
    assert len(terraform) == 1, f"expected one terraform report, got {[r.get('check_type') for r in reports]}"
    return terraform[0]


@pytest.mark.slow
@pytest.mark.checkov
def test_checkov_scanned_infra_with_the_pinned_version(report):
    summary = report["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] > 0 and summary["passed"] > 0
    assert summary["checkov_version"] == _pinned_version()


@pytest.mark.checkov
def test_no_failed_checks(report):
    failed = report["results"].get("failed_checks", [])
    lines = [f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})" for c in failed]
    assert not failed, "checkov failures (fix, or skip inline with a reason):\n" + "\n".join(lines)


@pytest.mark.checkov
def test_every_skip_has_a_reason(report):
    skipped = report["results"].get("skipped_checks", [])
    assert skipped, "expected the documented inline skips (see infra/*.tf #checkov:skip=...)"
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment") or ""
        assert reason.strip() and reason.strip() != "No comment provided", (
            f"{check['check_id']} on {check['resource']} is skipped without a reason"
        )


def test_skip_comments_name_their_reason_in_the_source():
    """Also catch skips checkov would not report (a skip for a check that no longer applies
    still needs a reason, or should go)."""
    for path in sorted((REPO / "infra").glob("*.tf")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            m = re.search(r"#\s*checkov:skip=([A-Z0-9_]+)(:(.*))?$", line)
            if m:
                assert (m.group(3) or "").strip(), f"{path.name}:{number}: skip of {m.group(1)} has no reason"
