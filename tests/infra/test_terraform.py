"""Static checks of infra/*.tf, parsed with python-hcl2 (Terraform itself does not run here).

The code is the reference: every setting the functions read comes from
`omi_receiver.runtime.config.ENV_VARS`, its defaults from `DEFAULTS`, and the Pub/Sub shape from
`omi_receiver.devtools.resources` (the local mirror of what infra/ declares).

python-hcl2 8.1.4 keeps the quotes of string literals and block labels
(`"\"google_storage_bucket\""`); `_norm` strips them and the parser's bookkeeping keys, and
works unchanged on the unquoted output of checkov's bc-python-hcl2.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from pathlib import Path

import hcl2
import pytest
import source_zips

from omi_receiver.devtools import resources
from omi_receiver.runtime.config import DEFAULTS, ENV_VARS, Config

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"

# Config fields that have no Terraform variable of their own, and where their value comes from.
NOT_VARIABLES = {
    "GOOGLE_CLOUD_PROJECT": "var.project_id",
    "INGEST_TOKENS": "the Secret Manager secret (secret env var)",
    "RECORDINGS_BUCKET": "google_storage_bucket.recordings.name",
    # The subscriptions' ack deadline is fixed in pubsub.tf (a local), and the assembler
    # is told it so it knows when a dead pass's chunks are back.
    "ACK_DEADLINE_SECONDS": "local.ack_deadline_seconds",
}

# Resource types that take labels, and the argument that holds them.
LABELLED = {
    "google_artifact_registry_repository": "labels",
    "google_cloudfunctions2_function": "labels",
    "google_monitoring_alert_policy": "user_labels",
    "google_monitoring_notification_channel": "user_labels",
    "google_pubsub_subscription": "labels",
    "google_pubsub_topic": "labels",
    "google_secret_manager_secret": "labels",
    "google_storage_bucket": "labels",
}
# Resource types that have no labels argument (a new type must be put in one of the two).
UNLABELLED = {
    "google_artifact_registry_repository_iam_member",
    "google_cloud_run_service_iam_member",
    "google_cloud_scheduler_job",
    "google_kms_crypto_key_iam_member",
    "google_logging_metric",
    "google_logging_project_exclusion",
    "google_monitoring_dashboard",
    "google_project_iam_member",
    "google_project_service",
    "google_pubsub_subscription_iam_member",
    "google_pubsub_topic_iam_member",
    "google_secret_manager_secret_iam_member",
    "google_secret_manager_secret_version",
    "google_service_account",
    "google_service_account_iam_member",
    "google_storage_bucket_iam_member",
    "google_storage_bucket_object",
    "random_password",
}

VERSION_RANGE = re.compile(r"^>=\s*\d+(\.\d+)*\s*,\s*<\s*\d+(\.\d+)*$")


# --------------------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------------------


def _unquote(value):
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _norm(obj):
    """Strip literal quotes from keys and strings and drop the parser's bookkeeping keys."""
    if isinstance(obj, dict):
        return {_unquote(k): _norm(v) for k, v in obj.items() if not str(k).startswith("__")}
    if isinstance(obj, list):
        return [_norm(v) for v in obj]
    return _unquote(obj)


@functools.cache
def _documents() -> dict[str, list]:
    merged: dict[str, list] = {}
    for path in sorted(INFRA.glob("*.tf")):
        with path.open() as fh:
            doc = _norm(hcl2.load(fh))
        for key, blocks in doc.items():
            merged.setdefault(key, []).extend(blocks)
    return merged


def _labelled_blocks(kind: str) -> dict[tuple[str, str], dict]:
    """resource/data blocks by (type, name)."""
    out = {}
    for block in _documents().get(kind, []):
        for rtype, named in block.items():
            for name, body in named.items():
                out[(rtype, name)] = body
    return out


def resources_() -> dict[tuple[str, str], dict]:
    return _labelled_blocks("resource")


def resource(rtype: str, name: str) -> dict:
    found = resources_().get((rtype, name))
    assert found is not None, f"infra/ declares no {rtype}.{name}"
    return found


def named_blocks(kind: str) -> dict[str, dict]:
    out = {}
    for block in _documents().get(kind, []):
        out.update(block)
    return out


def locals_() -> dict:
    out = {}
    for block in _documents().get("locals", []):
        out.update(block)
    return out


def block(body: dict, name: str) -> dict:
    """The single nested block `name` of body."""
    blocks = body.get(name)
    assert isinstance(blocks, list) and len(blocks) == 1, f"expected one {name} block, got {blocks!r}"
    return blocks[0]


def refs(value) -> str:
    """An expression's text, for looking for references in it."""
    return value if isinstance(value, str) else repr(value)


def resolve_name(expr: str) -> str:
    """Follow `google_X.Y.name` / `google_pubsub_topic.this["k"].name` to the expression that
    sets the name, so env vars can be traced back to the variable behind them."""
    m = re.fullmatch(r'\$\{google_pubsub_topic\.this\["(\w+)"\]\.name\}', expr)
    if m:
        return locals_()["topics"][m.group(1)]
    m = re.fullmatch(r"\$\{(google_\w+)\.(\w+)\.name\}", expr)
    if m:
        return resource(m.group(1), m.group(2))["name"]
    return expr


def _config_sections() -> dict[str, str]:
    """Config field env var -> section ("shared", "ingest", "assembler") from the comments
    that group the fields in omi_receiver/config.py."""
    section = None
    out = {}
    fields = {f.name for f in dataclasses.fields(Config)}
    for line in inspect.getsource(Config).splitlines():
        m = re.match(r"\s*#\s*---\s*(\w+)\s*---", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"\s*(\w+)\s*:", line)
        if m and m.group(1) in fields:
            out[m.group(1).upper()] = section
    return out


def ingest_function() -> dict:
    return resource("google_cloudfunctions2_function", "ingest")


def assembler_function() -> dict:
    return resource("google_cloudfunctions2_function", "assembler")


def env_of(function: dict) -> dict[str, str]:
    return block(function, "service_config").get("environment_variables", {})


def secret_env_of(function: dict) -> dict[str, dict]:
    return {s["key"]: s for s in block(function, "service_config").get("secret_environment_variables", [])}


# --------------------------------------------------------------------------------------
# Versions, backend, variables, outputs
# --------------------------------------------------------------------------------------


def test_all_files_parse_and_the_expected_ones_exist():
    names = {p.name for p in INFRA.glob("*.tf")}
    expected = {
        "versions.tf",
        "variables.tf",
        "main.tf",
        "storage.tf",
        "pubsub.tf",
        "functions.tf",
        "iam.tf",
        "secrets.tf",
        "scheduler.tf",
        "monitoring.tf",
        "outputs.tf",
    }
    assert expected <= names
    assert (INFRA / "terraform.tfvars.example").is_file()
    assert resources_(), "no resources parsed"


def test_gcs_backend_and_version_ranges():
    terraform = _documents()["terraform"]
    assert len(terraform) == 1
    tf = terraform[0]
    backends = {name for b in tf.get("backend", []) for name in b}
    assert backends == {"gcs"}, "state must live in a GCS backend (bucket via -backend-config)"
    assert VERSION_RANGE.match(tf["required_version"]), tf["required_version"]
    assert tf["required_version"].startswith(">= 1.5")

    providers = block(tf, "required_providers")
    used = {rtype.split("_", 1)[0] for rtype, _ in resources_()} | {
        rtype.split("_", 1)[0] for rtype, _ in _labelled_blocks("data")
    }
    assert used <= set(providers), f"providers used but not pinned: {used - set(providers)}"
    for name, spec in providers.items():
        assert spec["source"] == f"hashicorp/{name}"
        assert VERSION_RANGE.match(spec["version"]), f"{name}: {spec['version']!r} is not a >= x, < y range"


def test_every_variable_has_description_and_type_and_no_empty_string_defaults():
    variables = named_blocks("variable")
    assert variables
    for name, body in variables.items():
        assert body.get("description"), f"variable {name} has no description"
        assert body.get("type"), f"variable {name} has no type"
        assert body.get("default", None) != "", f"variable {name}: use null, not \"\", for 'not set'"


def test_region_and_sizes_are_validated():
    variables = named_blocks("variable")
    for name in (
        "project_id",
        "region",
        "name_prefix",
        "labels",
        "ingest_memory",
        "assembler_memory",
        "ingest_cpu",
        "assembler_cpu",
        "max_chunk_bytes",
        "pass_seconds",
        "assembler_schedule",
        "assembler_shards",
        "max_pass_bytes",
        "lease_seconds",
        "ingest_token",
        "extra_ingest_tokens",
    ):
        assert variables[name].get("validation"), f"variable {name} needs a validation block"
    assert variables["ingest_token"].get("sensitive") is True
    assert variables["extra_ingest_tokens"].get("sensitive") is True


def test_every_output_has_a_description_and_secret_ones_are_sensitive():
    outputs = named_blocks("output")
    assert {"webhook_url", "bucket", "topics", "subscriptions", "functions"} <= set(outputs)
    secret_refs = ("local.ingest_token", "random_password.", "var.ingest_token", "var.extra_ingest_tokens")
    for name, body in outputs.items():
        assert body.get("description"), f"output {name} has no description"
        if any(r in refs(body["value"]) for r in secret_refs):
            assert body.get("sensitive") is True, f"output {name} exposes a token: mark it sensitive"
    assert outputs["webhook_url"]["sensitive"] is True
    assert "local.ingest_token" in outputs["webhook_url"]["value"]
    assert "google_cloudfunctions2_function.ingest" in outputs["webhook_url"]["value"]


def test_nothing_project_or_region_specific_is_hard_coded():
    for path in INFRA.glob("*.tf"):
        text = path.read_text()
        if path.name != "variables.tf":
            assert not re.search(r'"(us|europe|asia|australia|northamerica|southamerica|me|africa)-[a-z]+\d+"', text), (
                f"{path.name}: a region literal; use var.region"
            )
        assert "compute@developer.gserviceaccount.com" not in text
        assert "@cloudbuild.gserviceaccount.com" not in text


def test_labels_on_every_labelable_resource():
    assert "app" in refs(locals_()["labels"]) and "var.labels" in refs(locals_()["labels"])
    for (rtype, name), body in resources_().items():
        assert rtype in LABELLED or rtype in UNLABELLED, (
            f"{rtype} is new: add it to LABELLED (with its labels argument) or UNLABELLED in this test"
        )
        if rtype in LABELLED:
            assert body.get(LABELLED[rtype]) == "${local.labels}", (
                f"{rtype}.{name} lacks {LABELLED[rtype]} = local.labels"
            )


def test_apis_enabled_without_disabling_on_destroy():
    apis = resource("google_project_service", "apis")
    assert apis["disable_on_destroy"] is False
    listed = set(re.findall(r'"([a-z]+\.googleapis\.com)"', refs(locals_()["apis"])))
    needed = {
        f"{s}.googleapis.com"
        for s in (
            "cloudfunctions",
            "run",
            "cloudbuild",
            "artifactregistry",
            "eventarc",
            "pubsub",
            "storage",
            "cloudscheduler",
            "secretmanager",
            "logging",
            "monitoring",
            "iam",
        )
    }
    assert needed <= listed, f"APIs not enabled: {needed - listed}"


# --------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------


def test_recordings_bucket_is_private_and_keeps_no_overwritten_copies():
    bucket = resource("google_storage_bucket", "recordings")
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["uniform_bucket_level_access"] is True
    assert block(bucket, "soft_delete_policy")["retention_duration_seconds"] == 0
    versioning = bucket.get("versioning", [])
    assert not versioning or versioning[0].get("enabled") is False, "versioning must be off or absent"
    # Recordings survive `terraform destroy` unless explicitly asked for.
    assert bucket["force_destroy"] == "${var.recordings_force_destroy}"
    assert named_blocks("variable")["recordings_force_destroy"]["default"] is False
    # No retention policy: it would forbid the assembler's overwrites and deletes.
    assert "retention_policy" not in bucket


def test_recordings_bucket_expires_leftover_work_objects():
    bucket = resource("google_storage_bucket", "recordings")
    rules = [r for r in bucket.get("lifecycle_rule", []) if block(r, "condition").get("matches_prefix") == ["work/"]]
    assert len(rules) == 1, "one lifecycle rule for work/ objects"
    assert block(rules[0], "action")["type"] == "Delete"
    assert named_blocks("variable")["work_objects_max_age_days"]["default"] == 14
    for rule in bucket.get("lifecycle_rule", []):
        prefixes = block(rule, "condition").get("matches_prefix", [])
        assert "state/" not in prefixes and "" not in prefixes, "state/ objects must never expire"


def test_source_zip_object_name_carries_the_archive_hash():
    obj = resource("google_storage_bucket_object", "source")
    assert "${data.archive_file.src.output_md5}" in obj["name"]
    assert obj["source"] == "${data.archive_file.src.output_path}"
    for function in (ingest_function(), assembler_function()):
        storage_source = block(block(block(function, "build_config"), "source"), "storage_source")
        assert storage_source["object"] == "${google_storage_bucket_object.source.name}"
        assert storage_source["bucket"] == "${google_storage_bucket.source.name}"
    source_bucket = resource("google_storage_bucket", "source")
    assert source_bucket["public_access_prevention"] == "enforced"
    assert source_bucket["uniform_bucket_level_access"] is True
    assert source_bucket.get("lifecycle_rule"), "the source bucket needs a lifecycle rule"


def test_source_zip_is_main_requirements_and_the_runtime_package_and_nothing_else():
    """The zip Terraform would build (the allow-list in storage.tf, evaluated against the
    repository) holds exactly the files the two functions run."""
    zipped = source_zips.zip_files("src")
    runtime = {p.relative_to(REPO).as_posix() for p in (REPO / "omi_receiver" / "runtime").rglob("*.py")}
    assert runtime and set(zipped) == {"main.py", "requirements.txt", "omi_receiver/__init__.py"} | runtime
    # The allow-list takes the runtime's modules only: a data file there would be left out.
    others = [
        p
        for p in (REPO / "omi_receiver" / "runtime").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert not others, f"{others}: add them to local.function_source.files in infra/storage.tf"
    assert all(path == REPO / name for name, path in zipped.items())  # the zip mirrors the repository
    assert source_zips.empty_globs("src") == []  # the archive's precondition
    for _name, path in zipped.items():
        path.read_bytes().decode("utf-8")  # file() reads UTF-8 text only
    src = source_zips.archive("src")
    assert src["output_path"].startswith("${path.module}/.build/")


def test_source_zip_globs_are_read_as_fileset_reads_them(tmp_path):
    for rel in ("a/x.py", "a/b/c/y.py", "a/x.pyc", "a/__pycache__/x.cpython-311.pyc", "ab/z.py", "t.txt", "a/t.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    (tmp_path / "a" / "d.py").mkdir()  # a folder, not a file
    assert source_zips.fileset(tmp_path, "a/**/*.py") == {"a/x.py", "a/b/c/y.py"}  # `**/` may match no folder
    assert source_zips.fileset(tmp_path, "a/*.py") == {"a/x.py"}
    assert source_zips.fileset(tmp_path, "*.txt") == {"t.txt"}  # `*` stays in its folder
    assert source_zips.fileset(tmp_path, "**/*.txt") == {"t.txt", "a/t.txt"}
    assert source_zips.fileset(tmp_path, "t.txt") == {"t.txt"}
    assert source_zips.fileset(tmp_path, "missing.py") == set() == source_zips.fileset(tmp_path, "a/d.py")
    assert source_zips.fileset(tmp_path, "?.txt") == {"t.txt"}


# --------------------------------------------------------------------------------------
# Pub/Sub
# --------------------------------------------------------------------------------------


def test_pubsub_shape_matches_the_local_mirror():
    loc = locals_()
    assert loc["ack_deadline_seconds"] == DEFAULTS["ACK_DEADLINE_SECONDS"]
    assert loc["max_delivery_attempts"] == resources.MAX_DELIVERY_ATTEMPTS
    assert loc["ticks_topic"] == resources.TICKS_TOPIC
    # The chunk topics are counted per shard (google_pubsub_topic.chunks), not in the map.
    assert set(loc["topics"]) == {"dead_letter", "ticks", "recordings"}
    assert loc["topics"]["dead_letter"] == "${var.dead_letter_topic}"
    assert loc["topics"]["recordings"] == "${var.recordings_topic}"
    # The hold subscription's name follows the same rule as Config.dead_letter_hold_subscription.
    assert loc["dead_letter_hold_subscription"] == "${var.dead_letter_topic}-hold"
    assert Config().dead_letter_hold_subscription == f"{DEFAULTS['DEAD_LETTER_TOPIC']}-hold"


def test_erase_markers_outlive_every_path_a_chunk_from_before_the_erase_can_take():
    from omi_receiver.runtime.assembler import ERASE_MARKER_KEEP_US

    def seconds(duration):
        value = locals_()[duration.removeprefix("${local.").removesuffix("}")]
        return int(value.removesuffix("s"))

    chunk_s = seconds(resource("google_pubsub_subscription", "chunks")["message_retention_duration"])
    hold_s = seconds(resource("google_pubsub_subscription", "dead_letter_hold")["message_retention_duration"])
    # Chunk subscription, hold subscription, then the chunk subscription again after a replay.
    assert ERASE_MARKER_KEEP_US > (2 * chunk_s + hold_s) * 1_000_000


def test_chunks_subscriptions_are_unordered_and_dead_letter_after_10_attempts():
    sub = resource("google_pubsub_subscription", "chunks")
    assert sub["topic"] == "${google_pubsub_topic.chunks[count.index].id}"
    # Ordering made a pass flush each user many times per tick (design change: batching).
    assert sub["enable_message_ordering"] is False
    assert sub["ack_deadline_seconds"] == "${local.ack_deadline_seconds}" and locals_()["ack_deadline_seconds"] == 120
    assert sub["message_retention_duration"] == "${local.seven_days}" and locals_()["seven_days"] == "604800s"
    assert sub["retain_acked_messages"] is False
    assert block(sub, "expiration_policy")["ttl"] == ""
    dlp = block(sub, "dead_letter_policy")
    assert dlp["dead_letter_topic"] == '${google_pubsub_topic.this["dead_letter"].id}'
    assert dlp["max_delivery_attempts"] == "${local.max_delivery_attempts}"
    assert locals_()["max_delivery_attempts"] == 10
    retry = block(sub, "retry_policy")
    assert retry["minimum_backoff"] and retry["maximum_backoff"]


SHARD_NAME = re.compile(r'\$\{var\.assembler_shards == 1 \? var\.(\w+) : "\$\{var\.(\w+)\}-\$\{count\.index\}"\}')


def render_shard_name(expr: str, base: str, shards: int, index: int) -> str:
    """Evaluate a counted resource's name expression (the one form infra/ uses) for shard
    `index` of `shards`, with the base-name variable set to `base`."""
    m = SHARD_NAME.fullmatch(expr)
    assert m and m.group(1) == m.group(2), f"unexpected shard name expression: {expr}"
    return base if shards == 1 else f"{base}-{index}"


def test_one_chunk_topic_and_one_subscription_per_shard():
    topic = resource("google_pubsub_topic", "chunks")
    sub = resource("google_pubsub_subscription", "chunks")
    assert topic["count"] == sub["count"] == "${var.assembler_shards}"
    # One shard: exactly chunks_topic / chunks_subscription. Several: <name>-<i>.
    assert topic["name"] == '${var.assembler_shards == 1 ? var.chunks_topic : "${var.chunks_topic}-${count.index}"}'
    assert sub["name"] == (
        '${var.assembler_shards == 1 ? var.chunks_subscription : "${var.chunks_subscription}-${count.index}"}'
    )
    # Subscription i is on topic i.
    assert sub["topic"] == "${google_pubsub_topic.chunks[count.index].id}"
    variable = named_blocks("variable")["assembler_shards"]
    assert variable["default"] == 1 and variable.get("validation")
    assert "var.assembler_shards <= 64" in block(variable, "validation")["condition"]


@pytest.mark.parametrize("shards, indexes", [(1, [0]), (2, [0, 1]), (3, [0, 2]), (64, [0, 9, 10, 63])])
@pytest.mark.parametrize(
    "topic_base, sub_base",
    [
        (DEFAULTS["CHUNKS_TOPIC"], DEFAULTS["CHUNKS_SUBSCRIPTION"]),
        ("chunks.v2", "chunks.v2-assembler"),
    ],
)
def test_shard_names_are_the_ones_the_code_uses(shards, indexes, topic_base, sub_base):
    """Ingest publishes to Config.shard_topic(i) and the assembler pulls from
    Config.shard_subscription(i): Terraform must create exactly those names."""
    config = Config(assembler_shards=shards, chunks_topic=topic_base, chunks_subscription=sub_base)
    topic_expr = resource("google_pubsub_topic", "chunks")["name"]
    sub_expr = resource("google_pubsub_subscription", "chunks")["name"]
    assert "var.chunks_topic" in topic_expr and "var.chunks_subscription" in sub_expr
    for i in indexes:
        assert render_shard_name(topic_expr, topic_base, shards, i) == config.shard_topic(i)
        assert render_shard_name(sub_expr, sub_base, shards, i) == config.shard_subscription(i)


def test_no_subscription_filters():
    """Pub/Sub bills the messages a filter drops as delivered, and the emulator ignores
    filters: shards are separate topics instead."""
    for (rtype, name), body in resources_().items():
        if rtype == "google_pubsub_subscription":
            assert "filter" not in body, f"subscription {name} has a filter"
    assert "attributes." not in (INFRA / "pubsub.tf").read_text()


def test_functions_get_the_base_names():
    # Both are base names; the code derives each shard's topic and subscription from them.
    for function in (ingest_function(), assembler_function()):
        assert env_of(function)["CHUNKS_TOPIC"] == "${var.chunks_topic}"
    assert env_of(assembler_function())["CHUNKS_SUBSCRIPTION"] == "${var.chunks_subscription}"
    # No reference to the topics any more, so ingest waits for them and its grant explicitly.
    depends = refs(ingest_function()["depends_on"])
    assert "${google_pubsub_topic.chunks}" in depends
    assert "${google_pubsub_topic_iam_member.ingest_publishes_chunks}" in depends


def test_upgrades_keep_the_single_chunk_topic_and_its_grant():
    moves = {m["from"]: m["to"] for m in _documents().get("moved", [])}
    assert moves['${google_pubsub_topic.this["chunks"]}'] == "${google_pubsub_topic.chunks[0]}"
    assert moves['${google_pubsub_topic_iam_member.this["ingest_publishes_chunks"]}'] == (
        "${google_pubsub_topic_iam_member.ingest_publishes_chunks[0]}"
    )
    for grant in ("assembler_pulls_chunks", "pubsub_agent_acks_chunks"):
        assert moves[f'${{google_pubsub_subscription_iam_member.this["{grant}"]}}'] == (
            f"${{google_pubsub_subscription_iam_member.{grant}[0]}}"
        )
    # Every target exists (a moved block to an undeclared resource is an error).
    for target in moves.values():
        m = re.fullmatch(r"\$\{(\w+)\.(\w+)\[0\]\}", target)
        assert m, target
        resource(m.group(1), m.group(2))


def test_outputs_list_every_shard_topic_and_subscription():
    outputs = named_blocks("output")
    assert "chunks = google_pubsub_topic.chunks[*].name" in outputs["topics"]["value"]
    assert "chunks = google_pubsub_subscription.chunks[*].name" in refs(outputs["subscriptions"]["value"])


def test_counted_resources_are_only_referenced_by_instance():
    """`google_x.y.attr` on a resource with count/for_each is an error Terraform would
    report; it cannot run here, so look for it in the text."""
    counted = [(rtype, name) for (rtype, name), body in resources_().items() if "count" in body or "for_each" in body]
    assert ("google_pubsub_subscription", "chunks") in counted
    assert ("google_pubsub_topic", "chunks") in counted
    for path in INFRA.glob("*.tf"):
        text = path.read_text()
        for rtype, name in counted:
            bad = re.findall(rf"\b{rtype}\.{name}\.\w+", text)
            assert not bad, f"{path.name}: {bad[0]} needs an index ([count.index], [0], [*], [each.key])"


def test_every_subscription_but_the_hold_has_a_dead_letter_policy_and_none_expires():
    subs = {name: body for (rtype, name), body in resources_().items() if rtype == "google_pubsub_subscription"}
    assert {"chunks", "dead_letter_hold"} <= set(subs)
    for name, body in subs.items():
        assert block(body, "expiration_policy")["ttl"] == "", f"subscription {name} must never expire"
        if name == "dead_letter_hold":
            assert "dead_letter_policy" not in body
            assert body["topic"] == '${google_pubsub_topic.this["dead_letter"].id}'
            assert body["message_retention_duration"] == "${local.seven_days}"
            # The local stack provisions the same deadline (resources.provision).
            assert body["ack_deadline_seconds"] == resources.HOLD_ACK_DEADLINE_SECONDS
        else:
            assert body.get("dead_letter_policy"), f"subscription {name} has no dead-letter policy"


def test_ingest_publishes_to_every_shard_topic_and_nothing_else_on_pubsub():
    grant = resource("google_pubsub_topic_iam_member", "ingest_publishes_chunks")
    assert grant["count"] == resource("google_pubsub_topic", "chunks")["count"] == "${var.assembler_shards}"
    assert grant["topic"] == "${google_pubsub_topic.chunks[count.index].name}"
    assert grant["role"] == "roles/pubsub.publisher"
    assert grant["member"] == '${local.members["ingest"]}'
    # A topic replaced under the same name loses its IAM policy; rewrite the grant with it.
    assert block(grant, "lifecycle")["replace_triggered_by"] == ["${google_pubsub_topic.chunks[count.index].id}"]
    # No other Pub/Sub grant names the ingest account.
    ingest = 'local.members["ingest"]'
    for (rtype, name), body in resources_().items():
        if rtype.startswith("google_pubsub_") and rtype.endswith("_iam_member") and name != "ingest_publishes_chunks":
            assert ingest not in refs(body.get("member", "")) + refs(body.get("for_each", "")), (
                f"{rtype}.{name} grants the ingest account more on Pub/Sub"
            )


def test_assembler_publishes_only_recordings_and_dead_letters():
    grants = resource("google_pubsub_topic_iam_member", "this")["for_each"]
    assembler = '${local.members["assembler"]}'
    assert sorted(g["topic"] for g in grants.values() if g["member"] == assembler) == ["dead_letter", "recordings"]
    assert {g["topic"] for g in grants.values()} <= set(locals_()["topics"])


def test_pubsub_service_agent_can_dead_letter():
    agent = "serviceAccount:${local.pubsub_service_agent}"
    assert "gcp-sa-pubsub.iam.gserviceaccount.com" in locals_()["pubsub_service_agent"]
    topic_grants = resource("google_pubsub_topic_iam_member", "this")
    assert topic_grants["role"] == "roles/pubsub.publisher"
    assert {"topic": "dead_letter", "member": agent} in topic_grants["for_each"].values()
    agent_grant = resource("google_pubsub_subscription_iam_member", "pubsub_agent_acks_chunks")
    assert agent_grant["member"] == agent


@pytest.mark.parametrize(
    "grant, member",
    [
        ("assembler_pulls_chunks", '${local.members["assembler"]}'),
        ("pubsub_agent_acks_chunks", "serviceAccount:${local.pubsub_service_agent}"),
    ],
)
def test_every_shard_subscription_gets_the_subscriber_grants(grant, member):
    body = resource("google_pubsub_subscription_iam_member", grant)
    assert body["count"] == resource("google_pubsub_subscription", "chunks")["count"] == "${var.assembler_shards}"
    assert body["subscription"] == "${google_pubsub_subscription.chunks[count.index].name}"
    assert body["role"] == "roles/pubsub.subscriber"
    assert body["member"] == member
    # A replaced subscription loses its IAM policy; the grant must be rewritten with it.
    assert block(body, "lifecycle")["replace_triggered_by"] == ["${google_pubsub_subscription.chunks[count.index].id}"]
    assert f"google_pubsub_subscription_iam_member.{grant}" in refs(assembler_function()["depends_on"])


# --------------------------------------------------------------------------------------
# Functions, identities, access
# --------------------------------------------------------------------------------------


def test_each_function_runs_as_its_own_service_account():
    accounts = locals_()["service_accounts"]
    assert {"ingest", "assembler", "trigger", "build"} <= set(accounts)
    ingest_sa = block(ingest_function(), "service_config")["service_account_email"]
    assembler_sa = block(assembler_function(), "service_config")["service_account_email"]
    assert ingest_sa == '${google_service_account.this["ingest"].email}'
    assert assembler_sa == '${google_service_account.this["assembler"].email}'
    for function in (ingest_function(), assembler_function()):
        assert block(function, "build_config")["service_account"] == '${google_service_account.this["build"].id}'
    trigger = block(assembler_function(), "event_trigger")
    assert trigger["service_account_email"] == '${google_service_account.this["trigger"].email}'


def test_only_ingest_is_public():
    public = []
    for (rtype, name), body in resources_().items():
        text = refs(body.get("member", "")) + refs(body.get("members", "")) + refs(body.get("for_each", ""))
        if "allUsers" in text or "allAuthenticatedUsers" in text:
            public.append((rtype, name))
    assert public == [("google_cloud_run_service_iam_member", "ingest_public")]
    binding = resource("google_cloud_run_service_iam_member", "ingest_public")
    assert binding["role"] == "roles/run.invoker"
    assert binding["service"] == "${google_cloudfunctions2_function.ingest.name}"
    invoker = resource("google_cloud_run_service_iam_member", "trigger_invokes_assembler")
    assert invoker["service"] == "${google_cloudfunctions2_function.assembler.name}"
    assert invoker["member"] == '${local.members["trigger"]}'


def test_ingress():
    assert block(ingest_function(), "service_config")["ingress_settings"] == "ALLOW_ALL"
    assert block(assembler_function(), "service_config")["ingress_settings"] == "ALLOW_INTERNAL_ONLY"


def test_grants_are_for_each_maps():
    for rtype in (
        "google_pubsub_topic_iam_member",
        "google_pubsub_subscription_iam_member",
        "google_storage_bucket_iam_member",
        "google_project_iam_member",
    ):
        assert "for_each" in resource(rtype, "this"), f"{rtype}.this should grant with for_each over a map"
    bucket_grants = resource("google_storage_bucket_iam_member", "this")["for_each"]
    assert bucket_grants["assembler_writes_recordings"]["role"] == "roles/storage.objectAdmin"
    assert bucket_grants["assembler_writes_recordings"]["bucket"] == "${google_storage_bucket.recordings.name}"
    secret = resource("google_secret_manager_secret_iam_member", "ingest_reads_token")
    assert secret["role"] == "roles/secretmanager.secretAccessor"
    assert secret["member"] == '${local.members["ingest"]}'


def test_assembler_gets_every_config_env_var_but_the_tokens():
    env = env_of(assembler_function())
    missing = set(ENV_VARS) - {"INGEST_TOKENS"} - set(env)
    assert not missing, f"assembler lacks env vars the code reads: {sorted(missing)}"
    assert "INGEST_TOKENS" not in env and "INGEST_TOKENS" not in secret_env_of(assembler_function())
    assert set(env) <= set(ENV_VARS), f"unknown env vars on the assembler: {set(env) - set(ENV_VARS)}"


def test_ingest_gets_its_env_vars_and_the_tokens_as_a_secret():
    sections = _config_sections()
    assert set(sections) == set(ENV_VARS) and {"shared", "ingest"} <= set(sections.values()), (
        "omi_receiver/config.py no longer groups Config fields under '# --- shared/ingest/assembler ---'"
    )
    wanted = {name for name, section in sections.items() if section in ("shared", "ingest")} - {"INGEST_TOKENS"}
    env = env_of(ingest_function())
    assert wanted <= set(env), f"ingest lacks env vars: {sorted(wanted - set(env))}"
    assert set(env) <= set(ENV_VARS), f"unknown env vars on ingest: {set(env) - set(ENV_VARS)}"
    assert "INGEST_TOKENS" not in env, "the tokens must come from Secret Manager, not a plain env var"
    secret = secret_env_of(ingest_function())["INGEST_TOKENS"]
    assert secret["secret"] == "${google_secret_manager_secret.ingest_token.secret_id}"
    # Pinned to the version Terraform wrote, so a token change rolls a new revision.
    assert secret["version"] == "${google_secret_manager_secret_version.ingest_token.version}"


def test_both_functions_know_the_shard_count():
    for function in (ingest_function(), assembler_function()):
        assert env_of(function)["ASSEMBLER_SHARDS"] == "${tostring(var.assembler_shards)}"
    assert env_of(assembler_function())["MAX_PASS_BYTES"] == "${tostring(var.max_pass_bytes)}"
    # The base name; the assembler derives each shard's subscription from it.
    assert env_of(assembler_function())["CHUNKS_SUBSCRIPTION"] == "${var.chunks_subscription}"


def test_assembler_preconditions():
    conditions = [p["condition"] for p in block(assembler_function(), "lifecycle")["precondition"]]

    def has(*parts):
        return any(all(part in c for part in parts) for c in conditions)

    assert has("var.lease_seconds > var.pass_seconds")
    # A crashed pass's users stay leased until its batch is redelivered.
    assert has("var.lease_seconds > local.ack_deadline_seconds")
    assert DEFAULTS["LEASE_SECONDS"] > locals_()["ack_deadline_seconds"]
    assert has("var.pass_seconds < local.ack_deadline_seconds")
    assert has("local.assembler_max_instances", ">= var.assembler_shards")
    assert has("var.max_pass_bytes", "local.assembler_memory_bytes / 2")
    memory = locals_()["assembler_memory_bytes"]
    assert "var.assembler_memory" in memory and "1073741824" in memory and "1048576" in memory
    # The defaults pass: 256 MiB of audio in a 1 GiB instance.
    assert DEFAULTS["MAX_PASS_BYTES"] <= 2**30 // 2
    assert named_blocks("variable")["max_pass_bytes"]["default"] == DEFAULTS["MAX_PASS_BYTES"]
    assert "16777216" in block(named_blocks("variable")["max_pass_bytes"], "validation")["condition"]


def test_suggested_scaling_settings_pass_the_memory_precondition():
    # docs/performance.md suggests settings for 10,000 users (bench/cost.plan, from the committed
    # bench results); a user who applies them must not meet a failing precondition.
    from bench import cost
    from bench.common import read_result

    conditions = [p["condition"] for p in block(assembler_function(), "lifecycle")["precondition"]]
    assert any(f"local.assembler_memory_bytes / {round(1 / cost.MAX_PASS_SHARE_OF_MEMORY)}" in c for c in conditions), (
        "bench/cost.py's share must be the one infra/functions.tf checks"
    )
    scale = read_result("scale")
    assert scale is not None, "bench/results/scale.json is committed"
    plan = cost.plan(10_000, read_result("assembler"), scale["summary"])
    for option in plan["options"]:
        memory_bytes = option["memory_gib"] * 2**30
        assert option["max_pass_bytes_mib"] * 2**20 <= memory_bytes / 2, option
        assert option["max_pass_bytes_mib"] * 2**20 >= 16 * 2**20, option


def test_env_values_come_from_the_variable_of_the_same_name():
    variables = named_blocks("variable")
    for function in (ingest_function(), assembler_function()):
        for key, value in env_of(function).items():
            expr = resolve_name(value)
            if key in NOT_VARIABLES:
                expected = NOT_VARIABLES[key]
                assert expected in refs(value) or expected in refs(expr), f"{key} = {value}"
            else:
                assert key.lower() in variables, f"no variable {key.lower()} for env var {key}"
                assert f"var.{key.lower()}" in refs(expr), f"{key} = {value} does not come from var.{key.lower()}"


def test_variable_defaults_equal_the_code_defaults():
    variables = named_blocks("variable")
    without = {name for name in ENV_VARS if name.lower() not in variables}
    assert without == set(NOT_VARIABLES), (
        f"Config fields without a Terraform variable: {sorted(without)}; expected only {sorted(NOT_VARIABLES)}"
    )
    for name in ENV_VARS:
        if name in NOT_VARIABLES:
            continue
        default = variables[name.lower()].get("default")
        code = DEFAULTS[name]
        if isinstance(default, list):  # a list variable the function gets comma-joined
            assert env_of(ingest_function())[name] == f'${{join(",", var.{name.lower()})}}', name
            assert ",".join(default) == code, f"var.{name.lower()} default {default!r} != code default {code!r}"
        elif isinstance(code, str):
            assert default == code, f"var.{name.lower()} default {default!r} != code default {code!r}"
        else:
            assert isinstance(default, (int, float)) and float(default) == float(code), (
                f"var.{name.lower()} default {default!r} != code default {code!r}"
            )


def test_function_sizing_defaults():
    v = {name: body.get("default") for name, body in named_blocks("variable").items()}
    assert (v["ingest_memory"], v["ingest_cpu"], v["ingest_concurrency"]) == ("512Mi", "1", 80)
    assert (v["ingest_timeout_seconds"], v["ingest_max_instances"]) == (30, 20)
    assert (v["assembler_memory"], v["assembler_cpu"], v["assembler_concurrency"]) == ("1Gi", "1", 1)
    assert v["assembler_timeout_seconds"] == 120 and v["assembler_shards"] == 1
    # The timeout covers a whole pass plus the finalization after it.
    assert v["assembler_timeout_seconds"] > DEFAULTS["PASS_SECONDS"]
    assert v["assembler_max_instances"] is None
    assert locals_()["assembler_max_instances"] == (
        "${coalesce(var.assembler_max_instances, var.assembler_shards + 1)}"
    )
    for function in (ingest_function(), assembler_function()):
        assert block(function, "build_config")["runtime"] == "${local.runtime}"
    assert locals_()["runtime"] == "python312"
    assert block(ingest_function(), "build_config")["entry_point"] == "receive_chunk"
    assert block(assembler_function(), "build_config")["entry_point"] == "assemble_recordings"


def test_ticks_drive_the_assembler_without_retries():
    trigger = block(assembler_function(), "event_trigger")
    assert trigger["event_type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert trigger["pubsub_topic"] == '${google_pubsub_topic.this["ticks"].id}'
    assert trigger["retry_policy"] == "RETRY_POLICY_DO_NOT_RETRY"
    job = resource("google_cloud_scheduler_job", "assembler_tick")
    assert job["count"] == "${var.assembler_shards}"
    assert job["schedule"] == "${var.assembler_schedule}"
    assert block(job, "retry_config")["retry_count"] == 0
    target = block(job, "pubsub_target")
    assert target["topic_name"] == '${google_pubsub_topic.this["ticks"].id}'
    # Job i's tick tells the pass which shard's subscription to drain.
    assert target["data"] == "${base64encode(jsonencode({shard = count.index, shards = var.assembler_shards}))}"
    assert named_blocks("variable")["assembler_schedule"]["default"] == "* * * * *"


def test_ingest_token_secret():
    password = resource("random_password", "ingest_token")
    assert password["length"] == 40 and password["special"] is False
    assert (
        "var.ingest_token" in locals_()["ingest_token"]
        and "random_password.ingest_token.result" in locals_()["ingest_token"]
    )
    assert "var.extra_ingest_tokens" in locals_()["ingest_tokens"]
    version = resource("google_secret_manager_secret_version", "ingest_token")
    assert version["secret_data"] == '${join(",", local.ingest_tokens)}'
    assert block(version, "lifecycle")["create_before_destroy"] is True
    assert named_blocks("variable")["ingest_token"]["default"] is None


# --------------------------------------------------------------------------------------
# Monitoring
# --------------------------------------------------------------------------------------


def test_log_based_metrics_match_the_logged_events():
    metrics = {name: body for (rtype, name), body in resources_().items() if rtype == "google_logging_metric"}
    # Accepted chunks come from Cloud Run's request_count: ingest logs none by default.
    assert set(metrics) == {"chunk_rejected", "chunks_assembled", "duplicates_dropped"}
    for event, body in metrics.items():
        assert f'jsonPayload.event=\\"{event}\\"' in body["filter"] or f'jsonPayload.event="{event}"' in body["filter"]
    assert metrics["chunk_rejected"]["label_extractors"] == {"reason": "EXTRACT(jsonPayload.error)"}
    # Refusal lines are bounded per instance and carry the refusals they stand for.
    assert metrics["chunk_rejected"]["value_extractor"] == "EXTRACT(jsonPayload.count)"
    assert block(metrics["chunk_rejected"], "metric_descriptor")["value_type"] == "DISTRIBUTION"
    assert metrics["chunks_assembled"]["value_extractor"] == "EXTRACT(jsonPayload.chunks)"
    assert block(metrics["chunks_assembled"], "metric_descriptor")["value_type"] == "DISTRIBUTION"
    assert metrics["duplicates_dropped"]["value_extractor"] == "EXTRACT(jsonPayload.duplicates)"


def test_alert_policies():
    policies = {name: body for (rtype, name), body in resources_().items() if rtype == "google_monitoring_alert_policy"}
    assert set(policies) == {"dead_letters", "chunks_backlog", "chunks_rejected", "ingest_5xx"}
    for _name, body in policies.items():
        assert body["notification_channels"] == "${local.notification_channels}"
        assert block(body, "documentation")["content"]
    rejected = block(block(policies.pop("chunks_rejected"), "conditions"), "condition_prometheus_query_language")
    assert rejected["query"] == '${format(local.rejected_by_reason, "5m")} > ${var.ingest_rejections_alert_threshold}'
    assert "sum by (reason)" in locals_()["rejected_by_reason"]
    filters = {name: block(block(body, "conditions"), "condition_threshold") for name, body in policies.items()}
    assert "num_undelivered_messages" in filters["dead_letters"]["filter"]
    assert "local.hold_subscription_filter" in filters["dead_letters"]["filter"]
    assert filters["dead_letters"]["threshold_value"] == 0
    assert "oldest_unacked_message_age" in filters["chunks_backlog"]["filter"]
    # Every shard's subscription, not one named subscription.
    assert "local.chunks_subscription_filter" in filters["chunks_backlog"]["filter"]
    assert "cross_series_reducer" not in block(filters["chunks_backlog"], "aggregations"), (
        "a reducer would merge the shards' series: one lagging shard must alert on its own"
    )
    assert filters["chunks_backlog"]["threshold_value"] == "${var.oldest_unacked_alert_seconds}"
    assert named_blocks("variable")["oldest_unacked_alert_seconds"]["default"] == 300
    assert "5xx" in filters["ingest_5xx"]["filter"]
    assert "local.ingest_requests_filter" in filters["ingest_5xx"]["filter"]
    channel = resource("google_monitoring_notification_channel", "email")
    assert channel["count"] == "${var.alert_email == null ? 0 : 1}"
    assert named_blocks("variable")["alert_email"]["default"] is None


def test_ingest_request_logs_are_not_stored_by_default():
    # Their URLs hold the token; the metrics the alerts use do not come from logs.
    exclusion = resource("google_logging_project_exclusion", "ingest_request_logs")
    assert exclusion["count"] == "${var.keep_ingest_request_logs ? 0 : 1}"
    assert named_blocks("variable")["keep_ingest_request_logs"]["default"] is False
    assert "${local.ingest_logs}" in exclusion["filter"]
    assert "logs/run.googleapis.com%2Frequests" in exclusion["filter"]
    assert "run.googleapis.com/request_count" in locals_()["ingest_requests_filter"]


def test_dashboard_exists():
    dashboard = resource("google_monitoring_dashboard", "main")
    assert "jsonencode(" in dashboard["dashboard_json"]


def test_monitoring_covers_every_shard_subscription():
    loc = locals_()
    assert "monitoring.regex.full_match" in loc["chunks_subscription_filter"]
    assert "local.chunks_subscription_regex" in loc["chunks_subscription_filter"]
    # Built from all the subscriptions, not from a name.
    assert "for s in google_pubsub_subscription.chunks" in loc["chunks_subscription_regex"]
    widgets = refs(loc["dashboard_widgets"])
    for metric in ("oldest_unacked_message_age", "num_undelivered_messages"):
        assert f"subscription/{metric}" in widgets
    assert widgets.count("local.chunks_subscription_filter") == 2
    text = (INFRA / "monitoring.tf").read_text()
    assert 'subscription_id=\\"${google_pubsub_subscription.chunks' not in text


def test_chunks_subscription_regex_matches_exactly_the_shard_subscriptions():
    """The same escaping as local.chunks_subscription_regex, run in Python (RE2 and re
    agree on this subset), on names with the two metacharacters a subscription ID allows."""
    expr = locals_()["chunks_subscription_regex"]
    assert 'replace(s.name, "/([.+])/", "[$1]")' in expr and 'join("|"' in expr
    # base name -> a name that only an unescaped pattern would match ("." any character,
    # "b+" one or more b).
    cases = {"audio-chunks-assembler": None, "audio.chunks~x%y_z": "audioxchunks~x%y_z", "ab+c": "abbc"}
    for base, near in cases.items():
        names = [f"{base}-{i}" for i in range(12)]
        pattern = "|".join(re.sub(r"([.+])", r"[\1]", n) for n in names)
        for n in names:
            assert re.fullmatch(pattern, n)
        others = [base, f"{base}-12", f"{base}-1x", f"x{base}-1"] + ([f"{near}-1"] if near else [])
        for other in others:
            assert not re.fullmatch(pattern, other), other


@pytest.mark.parametrize("name", ["terraform.tfvars.example"])
def test_tfvars_example_only_sets_declared_variables(name):
    variables = named_blocks("variable")
    with (INFRA / name).open() as fh:
        example = _norm(hcl2.load(fh))
    assert "project_id" in example
    for key in example:
        assert key in variables, f"{name} sets an undeclared variable {key}"
    for line in (INFRA / name).read_text().splitlines():
        m = re.match(r"#\s*([a-z_]+)\s*=", line)
        if m:
            assert m.group(1) in variables, f"{name} mentions an undeclared variable {m.group(1)}"
