"""deployment_size (infra/sizing.tf): each size renders functions Cloud Run accepts, "team" is the
sizing of every release before it, "fleet" is bench/cost.py's plan for 10,000 users, and every
per-function variable set overrides its size's value. Also the recordings bucket's Autoclass
(infra/storage.tf) and chunk_encoding's way to the functions.

Rendered with tf_config/hcl_eval like test_terraform.py (Terraform itself does not run here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import provider_schema
import pytest
import tf_config
from test_terraform import MIB, config, failing, functions, instances, service_config, the, validations

REPO = Path(__file__).resolve().parents[2]
BEFORE = json.loads((REPO / "tests" / "data" / "infra" / "sizing-before-issue-15.json").read_text())
SIZES = ("personal", "team", "fleet")

# A service_config argument by the setting of a size that sets it.
ARGUMENT = {
    "cpu": "available_cpu",
    "memory": "available_memory",
    "concurrency": "max_instance_request_concurrency",
    "min_instances": "min_instance_count",
    "max_instances": "max_instance_count",
}


def sized(size: str, **overrides) -> dict[str, dict]:
    """ingest's and the assembler's service_config for a size."""
    fns = functions(deployment_size=size, **overrides)
    return {key: service_config(fns[key]) for key in ("ingest", "assembler")}


def _mib(quantity: str) -> int:
    number = int(re.match(r"\d+", quantity).group())
    return number * (1024 if quantity.endswith("Gi") else 1)


@pytest.mark.parametrize("vad", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_every_size_passes_every_precondition(size, vad):
    assert all(validations("deployment_size", size))
    assert not failing(deployment_size=size, vad_consumer_enabled=vad)


def test_personal_is_the_default_and_an_unknown_size_is_refused():
    assert functions() == functions(deployment_size="personal")
    # The values refused: test_terraform.py's BAD_VALUES.
    [validation] = config().variables["deployment_size"].blocks_named("validation")
    message = tf_config.ConfigResolver(config()).evaluate(validation.attributes["error_message"])
    assert message == 'deployment_size must be "personal", "team" or "fleet".'


def test_personal_runs_fractional_cpus_one_request_at_a_time():
    """Cloud Run gives an instance less than one vCPU only at concurrency 1; the sender posts a
    user's chunks one after another, so one device needs no more."""
    sc = sized("personal")
    for key in ("ingest", "assembler"):
        assert float(sc[key]["available_cpu"]) < 1, key
        assert sc[key]["max_instance_request_concurrency"] == 1, key
        assert sc[key]["min_instance_count"] == 0, f"{key}: scales to zero"
    assert (sc["ingest"]["available_cpu"], sc["ingest"]["available_memory"]) == ("0.167", "256Mi")
    assert sc["ingest"]["max_instance_count"] == 3
    assert (sc["assembler"]["available_cpu"], sc["assembler"]["available_memory"]) == ("0.333", "512Mi")
    env = sc["assembler"]["environment_variables"]
    assert (env["ASSEMBLER_SHARDS"], env["MAX_PASS_BYTES"], env["FLUSH_WORKERS"]) == ("1", str(128 * MIB), "4")
    # One shard: one chunk topic and subscription, named exactly as before sizes.
    assert len(instances("google_pubsub_topic", "chunks")) == 1


def test_team_is_the_sizing_of_the_release_before_sizes():
    sc = sized("team")
    for key, before in BEFORE["functions"].items():
        before = dict(before)
        env = before.pop("environment_variables")
        assert {arg: sc[key][arg] for arg in before} == before, key
        assert {name: sc[key]["environment_variables"][name] for name in env} == env, key
    topics = instances("google_pubsub_topic", "chunks", deployment_size="team")
    assert len(topics) == BEFORE["chunk_topics"]


def test_fleet_is_the_bench_plan_for_10000_users():
    from bench import cost
    from bench.common import read_result

    plan = cost.plan(10_000, read_result("assembler"), read_result("scale")["summary"])
    sc = sized("fleet")
    env = sc["assembler"]["environment_variables"]
    assert int(env["ASSEMBLER_SHARDS"]) == plan["shards"]
    assert _mib(sc["assembler"]["available_memory"]) == plan["memory_gib"] * 1024
    assert int(env["MAX_PASS_BYTES"]) == plan["max_pass_bytes_mib"] * MIB
    assert int(env["FLUSH_WORKERS"]) == plan["flush_workers"]
    assert sc["assembler"]["max_instance_count"] == plan["max_instances"]
    assert sc["ingest"]["environment_variables"]["ASSEMBLER_SHARDS"] == env["ASSEMBLER_SHARDS"]
    assert sc["ingest"]["max_instance_request_concurrency"] == 80
    # Every shard gets its topic, subscription, Scheduler job and grants.
    for rtype, name in [
        ("google_pubsub_topic", "chunks"),
        ("google_pubsub_subscription", "chunks"),
        ("google_cloud_scheduler_job", "assembler_tick"),
        ("google_pubsub_topic_iam_member", "ingest_publishes_chunks"),
        ("google_pubsub_subscription_iam_member", "assembler_pulls_chunks"),
    ]:
        assert len(instances(rtype, name, deployment_size="fleet")) == plan["shards"], f"{rtype}.{name}"


@pytest.mark.parametrize("size", SIZES)
def test_the_cost_model_prices_each_size_as_terraform_sizes_it(size):
    """bench/cost.py's SIZES: (vCPU, GiB) of each function, as deployment_size renders them."""
    from bench import cost

    sc = sized(size)
    for key, (vcpu, gib) in cost.SIZES[size].items():
        assert float(sc[key]["available_cpu"]) == vcpu, f"{size} {key}"
        assert _mib(sc[key]["available_memory"]) == gib * 1024, f"{size} {key}"
    assert set(cost.SIZES) == set(SIZES)


# An override of every sized setting, each unlike every size's value and valid on its own,
# with what it renders as: (function, service_config argument or env var, rendered value).
OVERRIDES = {
    "ingest_cpu": ("2", "ingest", "available_cpu", "2"),
    "ingest_memory": ("768Mi", "ingest", "available_memory", "768Mi"),
    "ingest_concurrency": (7, "ingest", "max_instance_request_concurrency", 7),
    "ingest_min_instances": (2, "ingest", "min_instance_count", 2),
    "ingest_max_instances": (9, "ingest", "max_instance_count", 9),
    "assembler_cpu": ("2", "assembler", "available_cpu", "2"),
    "assembler_memory": ("3Gi", "assembler", "available_memory", "3Gi"),
    "assembler_concurrency": (2, "assembler", "max_instance_request_concurrency", 2),
    "assembler_min_instances": (1, "assembler", "min_instance_count", 1),
    "assembler_shards": (5, "assembler", "ASSEMBLER_SHARDS", "5"),
    "max_pass_bytes": (64 * MIB, "assembler", "MAX_PASS_BYTES", str(64 * MIB)),
    "flush_workers": (8, "assembler", "FLUSH_WORKERS", "8"),
}


@pytest.mark.parametrize("size", SIZES)
def test_each_variable_set_overrides_its_size(size):
    values = {var: value for var, (value, *_rest) in OVERRIDES.items()}
    for var, value in values.items():
        assert config().variables[var].attributes["default"].src.strip() == "null", f"var.{var}: null by default"
        assert all(validations(var, value)), var
    assert not failing(deployment_size=size, **values), "the overrides together must be a valid sizing"
    sc = sized(size, **values)
    base = sized(size)
    for var, (_value, fn, arg, rendered) in OVERRIDES.items():
        got = sc[fn][arg] if arg in sc[fn] else sc[fn]["environment_variables"][arg]
        was = base[fn][arg] if arg in base[fn] else base[fn]["environment_variables"][arg]
        assert got == rendered != was, f"{size}: var.{var} renders {got!r} (the size's: {was!r})"
    # Shards reach ingest too, and the instances follow them unless set.
    assert sc["ingest"]["environment_variables"]["ASSEMBLER_SHARDS"] == "5"
    assert sized(size, assembler_shards=5)["assembler"]["max_instance_count"] == 6


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"ingest_concurrency": 2}, "ingest: a concurrency above 1 needs at least 1 vCPU"),
        ({"ingest_memory": "1Gi"}, "ingest: too much memory for its CPU"),
        ({"assembler_memory": "1Gi"}, "assembler: too much memory for its CPU"),
        ({"max_pass_bytes": 256 * MIB + 1}, "max_pass_bytes (times assembler_concurrency) must be at most half"),
    ],
)
def test_an_override_the_personal_size_cannot_take_fails_a_precondition(overrides, message):
    """Below 1 vCPU Cloud Run takes concurrency 1 and at most 512 MiB (below 0.5 vCPU); the
    plan says so instead of the apply. The same overrides on "team" pass."""
    assert any(message in m for m in failing(**overrides)), failing(**overrides)
    assert not failing(deployment_size="team", **overrides)


def test_chunk_encoding_reaches_both_functions():
    for value in ("flac", "pcm"):
        fns = functions(chunk_encoding=value)
        for key in ("ingest", "assembler"):
            assert service_config(fns[key])["environment_variables"]["CHUNK_ENCODING"] == value, key
    assert service_config(functions()["ingest"])["environment_variables"]["CHUNK_ENCODING"] == "flac"
    # The values refused: test_terraform.py's BAD_VALUES.


@pytest.mark.parametrize("retention", [None, 30])
def test_recordings_bucket_autoclass_ends_in_archive_and_no_rule_sets_a_class(retention):
    bucket = the("google_storage_bucket", "recordings", recordings_retention_days=retention)
    assert bucket["autoclass"] == [{"enabled": True, "terminal_storage_class": "ARCHIVE"}]
    assert bucket["storage_class"] == "STANDARD"
    # Autoclass refuses SetStorageClass actions and storage-class conditions; Delete and
    # AbortIncompleteMultipartUpload are allowed.
    for rule in bucket["lifecycle_rule"]:
        [action] = rule["action"]
        assert action["type"] in ("Delete", "AbortIncompleteMultipartUpload"), action
        [condition] = rule["condition"]
        assert "matches_storage_class" not in condition, condition


def test_recordings_autoclass_off_is_written_as_disabled():
    """Off is `enabled = false` in the block, not its absence: the provider sends nothing for a
    removed block, so Autoclass would stay on."""
    bucket = the("google_storage_bucket", "recordings", recordings_autoclass=False)
    assert bucket["autoclass"] == [{"enabled": False, "terminal_storage_class": None}]
    assert config().variables["recordings_autoclass"].attributes["default"].src.strip() == "true"


def test_autoclass_block_is_in_the_pinned_provider_schema():
    schema = provider_schema.assembly("hashicorp/google").class_schema("resource", "google_storage_bucket")
    assert "autoclass" in schema.blocks and schema.blocks["autoclass"].single
    autoclass = schema.nested("autoclass")
    assert set(autoclass.arguments) == {"enabled", "terminal_storage_class"}
    assert autoclass.arguments["enabled"].required and not autoclass.arguments["terminal_storage_class"].required


def _readme_sizing_rows() -> dict[str, list[str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("### Sizing", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        name = cells[0].split(" ")[0]
        if name in SIZES:
            rows[name] = cells
    return rows


def test_readme_sizing_table_shows_what_each_size_renders():
    rows = _readme_sizing_rows()
    assert set(rows) == set(SIZES), "README, Sizing: one row per size"
    for size, cells in rows.items():
        sc = sized(size)
        ing, asm = sc["ingest"], sc["assembler"]
        env = asm["environment_variables"]
        expected = [
            f"{ing['available_cpu']} / {ing['available_memory']} / {ing['max_instance_request_concurrency']}",
            f"{ing['min_instance_count']}-{ing['max_instance_count']}",
            f"{asm['available_cpu']} / {asm['available_memory']}",
            env["ASSEMBLER_SHARDS"],
            f"{int(env['MAX_PASS_BYTES']) // MIB} MiB",
        ]
        assert cells[1:6] == expected, f"README, Sizing, {size}: {cells[1:6]} != {expected}"
