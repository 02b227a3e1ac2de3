"""Checks of infra/*.tf on what a plan would compute (Terraform itself does not run here).

infra/ is parsed by tf_config and its expressions are evaluated by hcl_eval:
`tf_config.ConfigResolver(config, variables)` renders resource instances with count and
for_each expanded, `each`/`count` and dynamic blocks resolved, and attributes known only
after apply left as `hcl_eval.Unknown` (shown as `<google_x.y.attr>` inside a string). So
these tests compare what Terraform would send to Google for given variables, not the text
of the expressions; a check on a reference or a meta-argument (depends_on, provider) reads
the parsed expression.

The code is the reference: every setting the functions read comes from
`omi_receiver.runtime.config.ENV_VARS`, its defaults from `DEFAULTS`, and the Pub/Sub shape from
`omi_receiver.devtools.resources` (the local mirror of what infra/ declares).

Covered elsewhere, and so not here: the dashboard's JSON, the metrics and log events the
monitoring names (test_api_types.py); argument and block names, required arguments and
references to counted resources (test_provider_schema.py); shard names, the shard
subscription regex, the tick messages, the outputs' shard lists, the token list and the
notification channel's count (test_rendered_infra.py); moved blocks against an earlier
release's instances (test_upgrade.py).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
from pathlib import Path

import addresses
import hcl_eval
import provider_schema
import pytest
import source_zips
import tf_config
from hcl_eval import Unknown

from omi_receiver.devtools import resources
from omi_receiver.runtime.config import DEFAULTS, ENV_VARS, Config

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"

# project_id has no default; the tests render with the tfvars example's.
PROJECT = "my-omi-project"

# Config fields that have no Terraform variable of their own, and where their value comes from
# (test_env_values_come_from_the_variable_of_the_same_name checks each).
NOT_VARIABLES = {
    "GOOGLE_CLOUD_PROJECT": "var.project_id",
    "INGEST_TOKENS": "the Secret Manager secret (secret env var)",
    "RECORDINGS_BUCKET": "google_storage_bucket.recordings.name",
    # The subscriptions' ack deadline is fixed in pubsub.tf (a local), and the assembler
    # is told it so it knows when a dead pass's chunks are back.
    "ACK_DEADLINE_SECONDS": "local.ack_deadline_seconds",
}

# Config fields deployment_size sets (infra/sizing.tf), by their variable (and local): the
# variable defaults to null, "the size's value", and the code's defaults are the "team" size's,
# the defaults of every release before sizes (test_sizes.py checks the sizes).
SIZED = {"ASSEMBLER_SHARDS": "assembler_shards", "MAX_PASS_BYTES": "max_pass_bytes", "FLUSH_WORKERS": "flush_workers"}

MIB = 2**20

VERSION_RANGE = re.compile(r"^>=\s*\d+(\.\d+)*\s*,\s*<\s*\d+(\.\d+)*$")
REGION_LITERAL = re.compile(r"\b(us|europe|asia|australia|northamerica|southamerica|me|africa)-[a-z]+\d+\b")

# Service accounts, as rendered references: e-mails are known only after apply.
SA_EMAIL = {
    "ingest": 'google_service_account.this["ingest"].email',
    "assembler": 'google_service_account.this["assembler"].email',
    "trigger": 'google_service_account.this["trigger"].email',
    "build": 'google_service_account.this["build"].email',
    "vad": "google_service_account.vad[0].email",
    "compactor": "google_service_account.compactor[0].email",
    "pubsub_agent": "google_project_service_identity.pubsub.email",
    "eventarc_agent": "google_project_service_identity.eventarc.email",
}
MEMBER = {k: f"serviceAccount:<{v}>" for k, v in SA_EMAIL.items()}


# --------------------------------------------------------------------------------------
# Rendering helpers (cached per set of variables: the resolver is quick, the tests many)
# --------------------------------------------------------------------------------------


@functools.cache
def config() -> tf_config.Config:
    return tf_config.load(INFRA)


def _key(overrides: dict) -> str:
    return json.dumps({"project_id": PROJECT, **overrides}, sort_keys=True)


@functools.cache
def _resolver(key: str) -> tf_config.ConfigResolver:
    return tf_config.ConfigResolver(config(), json.loads(key))


def resolver(**overrides) -> tf_config.ConfigResolver:
    """A resolver for the defaults, project_id = PROJECT, and `overrides`."""
    return _resolver(_key(overrides))


@functools.cache
def _instances(rtype: str, name: str, key: str) -> dict[str, dict]:
    r = _resolver(key)
    return {address: tf_config.plain(inst) for address, inst in r.instances(rtype, name).items()}


def instances(rtype: str, name: str, **overrides) -> dict[str, dict]:
    """Every instance of a resource, by address, as a dict of what is written in it, rendered."""
    return _instances(rtype, name, _key(overrides))


def the(rtype: str, name: str, **overrides) -> dict:
    """The one instance of a resource without count or for_each, rendered."""
    [(address, body)] = instances(rtype, name, **overrides).items()
    assert address == f"{rtype}.{name}", f"{address}: expected a single instance"
    return body


def functions(**overrides) -> dict[str, dict]:
    """google_cloudfunctions2_function.this, rendered, by function key (ingest, assembler, vad, compactor)."""
    prefix = "google_cloudfunctions2_function.this"
    return {
        json.loads(address[len(prefix) + 1 : -1]): body
        for address, body in instances("google_cloudfunctions2_function", "this", **overrides).items()
    }


def service_config(fn: dict) -> dict:
    [sc] = fn["service_config"]
    return sc


@functools.cache
def _everything(key: str) -> dict[str, tuple[str, dict]]:
    out = {}
    for rtype, name in config().resources:
        for address, body in _instances(rtype, name, key).items():
            out[address] = (rtype, body)
    return out


def everything(**overrides) -> dict[str, tuple[str, dict]]:
    """Every resource instance, by address: (type, rendered body)."""
    return _everything(_key(overrides))


def grants(**overrides) -> dict[str, tuple[str, dict]]:
    """Every IAM member/binding instance: (type, rendered body)."""
    return {a: (t, b) for a, (t, b) in everything(**overrides).items() if re.search(r"_iam_(member|binding)$", t)}


def members_of(body: dict) -> list[str]:
    out = [body["member"]] if "member" in body else []
    return out + list(body.get("members", []))


def lifecycle(rtype: str, name: str, address: str | None = None, **overrides) -> dict:
    """The rendered lifecycle block of one instance (of the only one without `address`)."""
    r = resolver(**overrides)
    found = r.instances(rtype, name)
    inst = found[address] if address else next(iter(found.values()))
    [block] = hcl_eval.get_attr(inst, "lifecycle")
    return tf_config.plain(block)


def preconditions(**overrides) -> dict[str, list[tuple[object, str]]]:
    """Each function's preconditions, rendered: (condition, error_message)."""
    r = resolver(**overrides)
    out = {}
    for key, inst in r.resource("google_cloudfunctions2_function", "this").items():
        [block] = hcl_eval.get_attr(inst, "lifecycle")
        out[key] = [(p["condition"], p["error_message"]) for p in tf_config.plain(block)["precondition"]]
    return out


def failing(function: str | None = None, **overrides) -> list[str]:
    """The preconditions that do not hold (condition not True), as "key: error_message", of
    every function or only of `function`."""
    return [
        f"{key}: {message}"
        for key, conds in preconditions(**overrides).items()
        if function in (None, key)
        for condition, message in conds
        if condition is not True
    ]


def validations(variable: str, value) -> list[bool]:
    """The variable's validation conditions, rendered with the variable set to value."""
    block = config().variables[variable]
    r = tf_config.ConfigResolver(config(), {variable: value})
    results = [r.evaluate(v.attributes["condition"]) for v in block.blocks_named("validation")]
    for result in results:
        assert isinstance(result, bool), f"var.{variable}: a validation renders to {result!r}"
    return results


def refs(attr: tf_config.Attribute) -> set[str]:
    """The references an expression makes (`time_sleep.x`, `google_x.y`), as text."""
    return {ref.text() for ref in hcl_eval.references(attr.expr)}


def resource_block(rtype: str, name: str) -> tf_config.Block:
    block = config().resources.get((rtype, name))
    assert block is not None, f"infra/ declares no {rtype}.{name}"
    return block


def default(variable: str):
    return resolver().var(variable)


def strings(value):
    """Every string in a rendered value (unknowns as their placeholder)."""
    if isinstance(value, Unknown):
        yield value.placeholder()
    elif isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def _config_sections() -> dict[str, str]:
    """Config field env var -> section ("shared", "ingest", "assembler") from the comments
    that group the fields in omi_receiver/runtime/config.py."""
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


# --------------------------------------------------------------------------------------
# Versions, backend, providers, variables, outputs
# --------------------------------------------------------------------------------------


def test_all_files_parse_and_the_expected_ones_exist():
    names = {p.name for p in INFRA.glob("*.tf")}
    expected = {
        "versions.tf",
        "variables.tf",
        "main.tf",
        "agents.tf",
        "storage.tf",
        "pubsub.tf",
        "functions.tf",
        "iam.tf",
        "secrets.tf",
        "scheduler.tf",
        "monitoring.tf",
        "vad.tf",
        "compaction.tf",
        "sizing.tf",
        "outputs.tf",
    }
    assert expected <= names
    assert set(config().texts) == names  # every file parsed
    assert (INFRA / "terraform.tfvars.example").is_file()
    assert config().resources, "no resources parsed"


def _provider_of(block: tf_config.Block) -> str:
    attr = block.attributes.get("provider")
    if attr is not None:
        [ref] = hcl_eval.references(attr.expr)
        return ref.root
    return block.labels[0].split("_", 1)[0]


def test_gcs_backend_and_version_ranges():
    cfg = config()
    [tf] = cfg.of_type("terraform")
    assert [b.labels for b in tf.blocks_named("backend")] == [["gcs"]], (
        "state must live in a GCS backend (bucket via -backend-config)"
    )
    required = resolver().evaluate(tf.attributes["required_version"])
    assert VERSION_RANGE.match(required) and required.startswith(">= 1.5"), required

    providers = cfg.required_providers
    used = {_provider_of(b) for b in [*cfg.resources.values(), *cfg.data_sources.values()]}
    assert {"google", "google-beta", "time"} <= used
    assert used <= set(providers), f"providers used but not pinned: {used - set(providers)}"
    for name, spec in providers.items():
        assert spec["source"] == f"hashicorp/{name}"
        assert VERSION_RANGE.match(spec["version"]), f"{name}: {spec['version']!r} is not a >= x, < y range"


def test_every_variable_has_description_and_type_and_no_empty_string_defaults():
    variables = config().variables
    assert variables
    r = resolver()
    for name, block in variables.items():
        assert "description" in block.attributes and r.evaluate(block.attributes["description"]), name
        assert "type" in block.attributes, f"variable {name} has no type"
        if "default" in block.attributes:
            assert r.evaluate(block.attributes["default"]) != "", f"variable {name}: use null, not \"\", for 'not set'"


# Values Terraform must refuse at plan time, by variable: each fails at least one validation.
# A variable without a validation block fails here.
BAD_VALUES = {
    "project_id": ["My Project", "123456789012", "short", "my-omi-project-"],
    "region": ["us-central1-a", "us", "EU", "mars-north1", "us-south9"],
    "name_prefix": ["Omi", "omi-", "1omi", "a-prefix-too-long"],
    "labels": [{"Env": "prod"}, {"env": "Prod"}, {"e n v": "x"}],
    "ingest_memory": ["512MB", "0Mi", "1.5Gi", "512"],
    "assembler_memory": ["1 Gi", "1GB"],
    "ingest_cpu": ["1.0.0", "one", ".5", "-1"],
    "assembler_cpu": ["1/2", ""],
    "max_chunk_bytes": [3, 0, 10_000_002],
    "pass_seconds": [0, 120],
    "assembler_schedule": ["* * * *", "every minute", "* * * * * *"],
    "assembler_shards": [0, 65, 1.5],
    "max_pass_bytes": [1000, 16 * 2**20 - 2],
    "lease_seconds": [0, 1.5],
    "ingest_token": ["short", "x" * 19, "a" * 20 + " ", "a" * 20 + ",b", "a" * 129],
    "extra_ingest_tokens": [["short"], ["a" * 20, "with space " + "x" * 20]],
    "assembler_max_instances": [0, 2.5],
    "ingest_concurrency": [0, 1001],
    "assembler_timeout_seconds": [541],
    "vad_aggressiveness": [4, -1],
    "alert_email": ["not-an-address"],
    "deployment_size": ["Personal", "large", "", None],
    "chunk_encoding": ["opus", "FLAC", "", None],
    "flush_workers": [0, 257, 1.5],
    "ingest_min_instances": [-1, 0.5],
}
# Values to accept (besides the defaults).
GOOD_VALUES = {
    "project_id": [PROJECT, "abcdef", "a" * 30],
    "region": ["europe-west1", "asia-northeast1", "us-east4"],
    "ingest_cpu": ["0.5", "0.083", "2"],
    "ingest_token": ["a" * 20, "A-b_9" * 20],
    "extra_ingest_tokens": [[], ["a" * 20, "b" * 128]],
    "max_pass_bytes": [16 * 2**20],
    "assembler_schedule": ["*/2 * * * *"],
    "deployment_size": ["team", "fleet"],
    "chunk_encoding": ["pcm"],
    "assembler_shards": [1, 64],
    "flush_workers": [1, 256],
    "ingest_min_instances": [0, 2],
}


@pytest.mark.parametrize("variable", sorted(BAD_VALUES))
def test_variables_refuse_bad_values_and_take_their_defaults(variable):
    assert config().variables[variable].blocks_named("validation"), f"variable {variable} needs a validation block"
    for value in BAD_VALUES[variable]:
        assert not all(validations(variable, value)), f"var.{variable} = {value!r} passes its validations"
    good = GOOD_VALUES.get(variable, [])
    if "default" in config().variables[variable].attributes:
        good = [default(variable), *good]
    assert good
    for value in good:
        assert all(validations(variable, value)), f"var.{variable} = {value!r} fails its validations"


def test_region_outside_the_list_of_regions_where_everything_runs_is_refused():
    """The region must be one where Cloud Run functions, Eventarc Pub/Sub triggers and Cloud
    Scheduler all run: a well-formed region outside that list fails a validation of its own."""
    variable = config().variables["region"]
    assert len(variable.blocks_named("validation")) >= 2
    assert all(validations("region", default("region")))
    for region in ("mars-north1", "us-south9", "europe-north9"):
        results = validations("region", region)
        assert any(results) and not all(results), f"{region}: well-formed, so only the list may refuse it: {results}"


def test_tokens_are_sensitive():
    r = resolver()
    for name in ("ingest_token", "extra_ingest_tokens"):
        assert r.evaluate(config().variables[name].attributes["sensitive"]) is True, name


TOKEN = "T0kenForTheTestsOnly_" + "x" * 10
EXTRA = "Extra0TokenForTheTests_" + "y" * 10


def outputs(**overrides) -> dict[str, object]:
    """Every output's value, rendered."""
    r = resolver(**overrides)
    return {name: tf_config.plain(r.evaluate(block.attributes["value"])) for name, block in config().outputs.items()}


def test_every_output_has_a_description_and_secret_ones_are_sensitive():
    blocks = config().outputs
    assert {"webhook_url", "ingest_url", "bucket", "topics", "subscriptions", "functions"} <= set(blocks)
    r = resolver()
    for name, block in blocks.items():
        assert "description" in block.attributes and r.evaluate(block.attributes["description"]), name
    secret = {"ingest_token": TOKEN, "extra_ingest_tokens": [EXTRA], "vad_consumer_enabled": True}
    exposed = set()
    for overrides, marks in ((secret, (TOKEN, EXTRA)), ({}, ("<random_password.ingest_token.result>",))):
        for name, value in outputs(**overrides).items():
            if any(mark in s for s in strings(value) for mark in marks):
                exposed.add(name)
    assert "webhook_url" in exposed
    for name in exposed:
        sensitive = blocks[name].attributes.get("sensitive")
        assert sensitive is not None and r.evaluate(sensitive) is True, (
            f"output {name} exposes a token: mark it sensitive"
        )
    uri = '<google_cloudfunctions2_function.this["ingest"].service_config[0].uri>'
    assert outputs(**secret)["webhook_url"] == f"{uri}/{TOKEN}"
    assert outputs()["webhook_url"] == f"{uri}/<random_password.ingest_token.result>"
    assert outputs()["ingest_url"] == Unknown(uri[1:-1])


def test_nothing_project_or_region_specific_is_hard_coded():
    """Rendered with a project and a region of their own, every project and location Terraform
    would send is those, and no other region, default compute or Cloud Build account, or
    hand-built service agent address appears anywhere."""
    project, region = "sentinel-project", "zz-sentinel9"
    overrides = {
        "project_id": project,
        "region": region,
        "vad_consumer_enabled": True,
        "assembler_shards": 2,
        "recordings_subscription_name": "rec-sub",
        "alert_email": "ops@example.com",
        "kms_key_name": "projects/p/locations/l/keyRings/r/cryptoKeys/k",
    }
    seen = set()

    def walk(address, value):
        if isinstance(value, dict):
            for k, v in value.items():
                if k in ("project", "project_id") and not isinstance(v, Unknown):
                    assert v == project, f"{address}: {k} = {v!r}"
                    seen.add(k)
                if k in ("region", "location", "trigger_region") and not isinstance(v, Unknown):
                    assert v == region, f"{address}: {k} = {v!r}"
                    seen.add(k)
                walk(address, v)
        elif isinstance(value, list):
            for v in value:
                walk(address, v)

    for address, (_rtype, body) in everything(**overrides).items():
        walk(address, body)
        for s in strings(body):
            assert not REGION_LITERAL.search(s), f"{address}: a region literal in {s!r}; use var.region"
            for account in ("compute@developer.gserviceaccount.com", "@cloudbuild.gserviceaccount.com", "gcp-sa-"):
                assert account not in s, f"{address}: {s!r} names {account}"
    assert {"project", "region", "location", "trigger_region"} <= seen


def _schema(block: tf_config.Block):
    local = _provider_of(block)
    asm = provider_schema.assembly(config().required_providers[local]["source"])
    assert asm is not None, f"no schema package for provider {local}"
    schema = asm.class_schema("resource", block.labels[0])
    assert schema is not None, f"{block.labels[0]}.{block.labels[1]}: provider {local} has no such resource type"
    return schema


def test_labels_come_from_the_providers_default_labels():
    """Which types take labels is read from the provider's schema: a type whose resource has
    terraform_labels gets the provider's default_labels, so none may set labels by hand; a
    type with user_labels (alert policies, notification channels), which default_labels do
    not reach, sets them to local.labels."""
    cfg = config()
    extra = {"env": "prod", "owner": "me"}
    overrides = {"labels": extra, "alert_email": "ops@example.com", "vad_consumer_enabled": True}
    labels = {**extra, "app": "omi-receiver"}
    r = resolver(**overrides)
    assert r.local("labels") == labels
    assert resolver().local("labels") == {"app": "omi-receiver"}

    # Every provider whose schema has default_labels sets them to local.labels.
    with_default_labels = []
    for local, spec in cfg.required_providers.items():
        schema = provider_schema.assembly(spec["source"]).class_schema("provider", local)
        if schema is not None and "default_labels" in schema.arguments:
            with_default_labels.append(local)
            blocks = [b for b in cfg.of_type("provider") if b.labels == [local]]
            assert blocks, f'no provider "{local}" block sets default_labels'
            for b in blocks:
                assert "default_labels" in b.attributes, f'provider "{local}" sets no default_labels'
                assert r.evaluate(b.attributes["default_labels"]) == labels, local
    assert {"google", "google-beta"} <= set(with_default_labels)

    by_default, by_hand = set(), set()
    rendered = everything(**overrides)
    for (rtype, name), block in cfg.resources.items():
        schema = _schema(block)
        if schema.read.get("terraform_labels") is not None:
            by_default.add(rtype)
            assert "labels" not in block.attributes, (
                f"{rtype}.{name} sets labels by hand: they come from the providers' default_labels"
            )
        if "user_labels" in schema.arguments:
            by_hand.add(rtype)
            bodies = [b for a, (t, b) in rendered.items() if a.split("[")[0] == f"{rtype}.{name}"]
            assert bodies, f"{rtype}.{name}: no instance rendered"
            for body in bodies:
                assert body.get("user_labels") == labels, f"{rtype}.{name} lacks user_labels = local.labels"
    assert {"google_cloudfunctions2_function", "google_storage_bucket", "google_pubsub_topic"} <= by_default
    assert by_hand == {"google_monitoring_alert_policy", "google_monitoring_notification_channel"}


NEEDED_APIS = {
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


def test_apis_enabled_without_disabling_on_destroy():
    apis = instances("google_project_service", "apis")
    services = {body["service"] for body in apis.values()}
    assert NEEDED_APIS <= services, f"APIs not enabled: {NEEDED_APIS - services}"
    for address, body in apis.items():
        assert body["disable_on_destroy"] is False, address
        assert address == f'google_project_service.apis["{body["service"]}"]'


# --------------------------------------------------------------------------------------
# Google's service agents and the first apply's waits (agents.tf)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", ["pubsub", "eventarc"])
def test_service_agents_are_created_with_google_beta_and_get_their_roles(agent):
    block = resource_block("google_project_service_identity", agent)
    assert _provider_of(block) == "google-beta"
    assert config().required_providers["google-beta"]["source"] == "hashicorp/google-beta"
    body = the("google_project_service_identity", agent)
    assert body == {"project": PROJECT, "service": f"{agent}.googleapis.com"}
    assert body["service"] in {b["service"] for b in instances("google_project_service", "apis").values()}
    assert "google_project_service.apis" in refs(block.attributes["depends_on"])
    grant = instances("google_project_iam_member", "service_agents")[
        f'google_project_iam_member.service_agents["{agent}"]'
    ]
    assert grant == {"project": PROJECT, "role": f"roles/{agent}.serviceAgent", "member": MEMBER[f"{agent}_agent"]}


def test_the_pubsub_service_agent_is_the_created_identity_and_gets_what_dead_lettering_needs():
    """Every grant to the Pub/Sub service agent names the identity agents.tf creates, so
    Terraform creates it before granting it anything (its e-mail is known only then)."""
    assert resolver().local("pubsub_service_agent") == Unknown(SA_EMAIL["pubsub_agent"])
    overrides = {"assembler_shards": 3, "recordings_subscription_name": "rec-sub"}
    to_agent = {
        address: body
        for address, (_t, body) in grants(**overrides).items()
        if MEMBER["pubsub_agent"] in members_of(body)
    }
    subs = [b["name"] for b in instances("google_pubsub_subscription", "chunks", **overrides).values()]
    dead_letter_name = instances("google_pubsub_topic", "this")['google_pubsub_topic.this["dead_letter"]']["name"]
    got = sorted(
        (
            (b["role"], b.get("topic") or b.get("subscription") or b.get("service_account_id"))
            for b in to_agent.values()
            if b["role"] != "roles/pubsub.serviceAgent"
        ),
        key=str,
    )
    expected = sorted(
        [("roles/pubsub.publisher", dead_letter_name)]
        + [("roles/pubsub.subscriber", s) for s in [*subs, "rec-sub"]]
        + [("roles/iam.serviceAccountTokenCreator", Unknown('google_service_account.this["trigger"].name'))],
        key=str,
    )
    assert got == expected


def test_every_function_waits_for_the_build_grants_and_the_service_agents():
    sleeps = {name: the("time_sleep", name) for name in ("build_grants", "service_agents")}
    assert sleeps == {"build_grants": {"create_duration": "60s"}, "service_agents": {"create_duration": "60s"}}
    # depends_on is the resource's, so it holds for every function of the for_each.
    fn = resource_block("google_cloudfunctions2_function", "this")
    assert {"time_sleep.build_grants", "time_sleep.service_agents"} <= refs(fn.attributes["depends_on"])
    assert set(functions(vad_consumer_enabled=True)) == {"ingest", "assembler", "vad"}
    # The agents' wait starts after their grants; the build's after every grant to the build account.
    assert refs(resource_block("time_sleep", "service_agents").attributes["depends_on"]) == {
        "google_project_iam_member.service_agents"
    }
    build_waits_for = refs(resource_block("time_sleep", "build_grants").attributes["depends_on"])
    to_build = {
        address.split("[")[0]
        for address, (_t, body) in grants(vad_consumer_enabled=True).items()
        if MEMBER["build"] in members_of(body)
    }
    assert len(to_build) >= 3
    assert to_build <= build_waits_for, f"the build's wait does not cover {to_build - build_waits_for}"


# --------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("force_destroy", [False, True])
def test_recordings_bucket_is_private_and_keeps_no_overwritten_copies(force_destroy):
    bucket = the("google_storage_bucket", "recordings", recordings_force_destroy=force_destroy)
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["soft_delete_policy"] == [{"retention_duration_seconds": 0}]
    assert bucket.get("versioning", []) in ([], [{"enabled": False}]), "versioning must be off or absent"
    # Recordings survive `terraform destroy` unless explicitly asked for.
    assert bucket["force_destroy"] is force_destroy
    assert default("recordings_force_destroy") is False
    # No retention policy: it would forbid the assembler's overwrites and deletes.
    assert "retention_policy" not in bucket
    assert bucket["name"] == f"{PROJECT}-omi-recordings"
    assert the("google_storage_bucket", "recordings", recordings_bucket_name="my-bucket")["name"] == "my-bucket"


@pytest.mark.parametrize("retention", [None, 30])
def test_recordings_bucket_expires_leftover_work_objects_and_never_state(retention):
    rules = the(
        "google_storage_bucket", "recordings", work_objects_max_age_days=7, recordings_retention_days=retention
    )["lifecycle_rule"]

    def matching(prefix):
        return [r for r in rules if r["condition"][0].get("matches_prefix") == [prefix]]

    [work] = matching("work/")
    assert work["action"] == [{"type": "Delete"}] and work["condition"][0]["age"] == 7
    assert default("work_objects_max_age_days") == 14
    if retention is None:
        assert not matching("recordings/")
    else:
        [kept] = matching("recordings/")
        assert kept["action"] == [{"type": "Delete"}] and kept["condition"][0]["age"] == retention
    for rule in rules:
        if rule["action"][0]["type"] == "Delete":
            prefixes = rule["condition"][0].get("matches_prefix")
            assert prefixes and not any("state/".startswith(p) for p in prefixes), (
                f"state/ objects must never expire: {rule}"
            )


def test_source_zip_object_name_carries_the_archive_hash():
    obj = the("google_storage_bucket_object", "source")
    assert obj["name"] == "source-<data.archive_file.src.output_md5>.zip"
    assert obj["source"] == hcl_eval.get_attr(resolver().data("archive_file", "src"), "output_path")
    assert obj["source"].startswith("./.build/")
    source_bucket = the("google_storage_bucket", "source")
    assert obj["bucket"] == source_bucket["name"]
    for key, fn in functions().items():
        [build] = fn["build_config"]
        assert build["source"] == [{"storage_source": [{"bucket": source_bucket["name"], "object": obj["name"]}]}], key
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


def _topic_names(**overrides) -> dict[str, str]:
    prefix = "google_pubsub_topic.this"
    return {
        json.loads(a[len(prefix) + 1 : -1]): b["name"]
        for a, b in instances("google_pubsub_topic", "this", **overrides).items()
    }


def test_pubsub_shape_matches_the_local_mirror():
    names = {"dead_letter_topic": "dl-x.y", "recordings_topic": "recs-x"}
    code = Config(dead_letter_topic=names["dead_letter_topic"], recordings_topic=names["recordings_topic"])
    # The chunk topics are counted per shard (google_pubsub_topic.chunks), not in the map.
    assert _topic_names(**names) == {
        "dead_letter": code.dead_letter_topic,
        "recordings": code.recordings_topic,
        "ticks": resources.TICKS_TOPIC,
    }
    # The hold subscription's name follows the same rule as Config.dead_letter_hold_subscription.
    hold = the("google_pubsub_subscription", "dead_letter_hold", **names)
    assert hold["name"] == code.dead_letter_hold_subscription
    [chunks] = instances("google_pubsub_subscription", "chunks").values()
    assert chunks["ack_deadline_seconds"] == DEFAULTS["ACK_DEADLINE_SECONDS"]
    assert chunks["dead_letter_policy"][0]["max_delivery_attempts"] == resources.MAX_DELIVERY_ATTEMPTS
    # The local stack provisions the same deadline (resources.provision).
    assert the("google_pubsub_subscription", "dead_letter_hold")["ack_deadline_seconds"] == (
        resources.HOLD_ACK_DEADLINE_SECONDS
    )


def _seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+)s", duration)
    assert m, duration
    return int(m.group(1))


def test_erase_markers_outlive_every_path_a_chunk_from_before_the_erase_can_take():
    from omi_receiver.runtime.assembler import ERASE_MARKER_KEEP_US

    [chunks] = instances("google_pubsub_subscription", "chunks").values()
    chunk_s = _seconds(chunks["message_retention_duration"])
    hold_s = _seconds(the("google_pubsub_subscription", "dead_letter_hold")["message_retention_duration"])
    # Chunk subscription, hold subscription, then the chunk subscription again after a replay.
    assert ERASE_MARKER_KEEP_US > (2 * chunk_s + hold_s) * 1_000_000


def test_chunks_subscriptions_are_unordered_and_dead_letter_after_10_attempts():
    subs = instances("google_pubsub_subscription", "chunks", assembler_shards=2)
    assert len(subs) == 2
    for i, sub in enumerate(subs.values()):
        assert sub["topic"] == Unknown(f"google_pubsub_topic.chunks[{i}].id")
        # Ordering made a pass flush each user many times per tick (design change: batching).
        assert sub["enable_message_ordering"] is False
        assert sub["ack_deadline_seconds"] == 120
        assert sub["message_retention_duration"] == "604800s"
        assert sub["retain_acked_messages"] is False
        assert sub["expiration_policy"] == [{"ttl": ""}]
        assert sub["dead_letter_policy"] == [
            {"dead_letter_topic": Unknown('google_pubsub_topic.this["dead_letter"].id'), "max_delivery_attempts": 10}
        ]
        [retry] = sub["retry_policy"]
        assert retry["minimum_backoff"] and retry["maximum_backoff"]


def test_no_subscription_filters():
    """Pub/Sub bills the messages a filter drops as delivered, and the emulator ignores
    filters: shards are separate topics instead."""
    rendered = everything(assembler_shards=3, recordings_subscription_name="rec-sub")
    subs = {a: b for a, (t, b) in rendered.items() if t == "google_pubsub_subscription"}
    assert len(subs) == 5
    for address, body in subs.items():
        assert "filter" not in body, f"{address} has a filter"


def test_functions_wait_for_the_topics_and_grants_they_name_by_base_name():
    # Both are base names; the code derives each shard's topic and subscription from them.
    fns = functions(assembler_shards=3)
    for key in ("ingest", "assembler"):
        assert service_config(fns[key])["environment_variables"]["CHUNKS_TOPIC"] == DEFAULTS["CHUNKS_TOPIC"]
    subscription = service_config(fns["assembler"])["environment_variables"]["CHUNKS_SUBSCRIPTION"]
    assert subscription == DEFAULTS["CHUNKS_SUBSCRIPTION"]
    # No reference to the topics or subscriptions, so the functions wait for them and their grants explicitly.
    depends = refs(resource_block("google_cloudfunctions2_function", "this").attributes["depends_on"])
    assert {
        "google_pubsub_topic.chunks",
        "google_pubsub_topic_iam_member.ingest_publishes_chunks",
        "google_pubsub_subscription_iam_member.assembler_pulls_chunks",
        "google_pubsub_subscription_iam_member.pubsub_agent_acks_chunks",
    } <= depends


def test_upgrades_keep_the_single_chunk_topic_and_its_grants():
    """Deployments from before the topic per shard (older than test_upgrade.py's recorded
    release) are moved too; that every target is declared is test_upgrade.py's."""
    moves = dict(addresses.moves(INFRA))
    assert moves['google_pubsub_topic.this["chunks"]'] == "google_pubsub_topic.chunks[0]"
    assert moves['google_pubsub_topic_iam_member.this["ingest_publishes_chunks"]'] == (
        "google_pubsub_topic_iam_member.ingest_publishes_chunks[0]"
    )
    for grant in ("assembler_pulls_chunks", "pubsub_agent_acks_chunks"):
        assert moves[f'google_pubsub_subscription_iam_member.this["{grant}"]'] == (
            f"google_pubsub_subscription_iam_member.{grant}[0]"
        )


def test_every_subscription_but_the_hold_has_a_dead_letter_policy_and_none_expires():
    rendered = everything(assembler_shards=2, recordings_subscription_name="rec-sub")
    subs = {a: b for a, (t, b) in rendered.items() if t == "google_pubsub_subscription"}
    hold = "google_pubsub_subscription.dead_letter_hold"
    assert hold in subs and "google_pubsub_subscription.recordings[0]" in subs
    for address, body in subs.items():
        assert body["expiration_policy"] == [{"ttl": ""}], f"{address} must never expire"
        if address == hold:
            assert "dead_letter_policy" not in body
            assert body["topic"] == Unknown('google_pubsub_topic.this["dead_letter"].id')
            assert body["message_retention_duration"] == "604800s"
        else:
            assert body.get("dead_letter_policy"), f"{address} has no dead-letter policy"


def test_ingest_publishes_to_every_shard_topic_and_nothing_else_on_pubsub():
    shards = 3
    topics = [b["name"] for b in instances("google_pubsub_topic", "chunks", assembler_shards=shards).values()]
    own = instances("google_pubsub_topic_iam_member", "ingest_publishes_chunks", assembler_shards=shards)
    assert [g["topic"] for g in own.values()] == topics and len(topics) == shards
    for i, g in enumerate(own.values()):
        assert (g["role"], g["member"]) == ("roles/pubsub.publisher", MEMBER["ingest"])
        # A topic replaced under the same name loses its IAM policy; rewrite the grant with it.
        lc = lifecycle(
            "google_pubsub_topic_iam_member",
            "ingest_publishes_chunks",
            f"google_pubsub_topic_iam_member.ingest_publishes_chunks[{i}]",
            assembler_shards=shards,
        )
        assert lc["replace_triggered_by"] == [Unknown(f"google_pubsub_topic.chunks[{i}].id")]
    # No other Pub/Sub grant names the ingest account.
    for address, (rtype, body) in grants(assembler_shards=shards, recordings_subscription_name="r-sub").items():
        if rtype.startswith("google_pubsub_") and address not in own:
            assert MEMBER["ingest"] not in members_of(body), f"{address} grants the ingest account more on Pub/Sub"


def test_assembler_publishes_only_recordings_and_dead_letters():
    topics = _topic_names()
    published = {
        body["topic"]
        for _address, (rtype, body) in grants(assembler_shards=2).items()
        if rtype == "google_pubsub_topic_iam_member" and MEMBER["assembler"] in members_of(body)
    }
    assert published == {topics["recordings"], topics["dead_letter"]}


@pytest.mark.parametrize(
    "grant, member", [("assembler_pulls_chunks", "assembler"), ("pubsub_agent_acks_chunks", "pubsub_agent")]
)
def test_every_shard_subscription_gets_the_subscriber_grants(grant, member):
    shards = 3
    subs = [b["name"] for b in instances("google_pubsub_subscription", "chunks", assembler_shards=shards).values()]
    given = instances("google_pubsub_subscription_iam_member", grant, assembler_shards=shards)
    assert [g["subscription"] for g in given.values()] == subs and len(subs) == shards
    for i, (address, g) in enumerate(given.items()):
        assert (g["role"], g["member"]) == ("roles/pubsub.subscriber", MEMBER[member])
        # A replaced subscription loses its IAM policy; the grant must be rewritten with it.
        lc = lifecycle("google_pubsub_subscription_iam_member", grant, address, assembler_shards=shards)
        assert lc["replace_triggered_by"] == [Unknown(f"google_pubsub_subscription.chunks[{i}].id")]


# --------------------------------------------------------------------------------------
# Functions, identities, access
# --------------------------------------------------------------------------------------


def test_each_function_runs_as_its_own_service_account():
    assert {"ingest", "assembler", "trigger", "build"} <= set(resolver().local("service_accounts"))
    fns = functions(vad_consumer_enabled=True)
    runs_as = {key: service_config(fn)["service_account_email"] for key, fn in fns.items()}
    assert runs_as == {key: Unknown(SA_EMAIL[key]) for key in ("ingest", "assembler", "vad")}
    for key, fn in fns.items():
        [build] = fn["build_config"]
        assert build["service_account"] == Unknown('google_service_account.this["build"].id'), key
        for trigger in fn["event_trigger"]:
            assert trigger["service_account_email"] == Unknown(SA_EMAIL["trigger"]), key


@pytest.mark.parametrize("vad", [False, True])
def test_only_ingest_is_public_and_each_trigger_may_invoke_its_function(vad):
    fns = functions(vad_consumer_enabled=vad)
    every = grants(vad_consumer_enabled=vad, alert_email="ops@example.com")
    public = sorted(
        address
        for address, (_t, body) in every.items()
        if {"allUsers", "allAuthenticatedUsers"} & set(members_of(body))
    )
    assert public == ["google_cloud_run_service_iam_member.ingest_public"]
    binding = every[public[0]][1]
    assert (binding["role"], binding["service"], binding["location"]) == (
        "roles/run.invoker",
        fns["ingest"]["name"],
        fns["ingest"]["location"],
    )
    # Every function with an event trigger may be invoked by the trigger's account, and the
    # trigger account may invoke nothing else.
    invokers = {
        (body["service"], body["member"])
        for _a, (t, body) in every.items()
        if t == "google_cloud_run_service_iam_member" and body["role"] == "roles/run.invoker"
    }
    triggered = {key for key, fn in fns.items() if fn["event_trigger"]}
    assert triggered == ({"assembler", "vad"} if vad else {"assembler"})
    wanted = {(fns[key]["name"], MEMBER["trigger"]) for key in triggered}
    assert {i for i in invokers if i[1] == MEMBER["trigger"]} == wanted
    assert set(instances("google_cloud_run_service_iam_member", "trigger_invokes", vad_consumer_enabled=vad)) == {
        f'google_cloud_run_service_iam_member.trigger_invokes["{key}"]' for key in triggered
    }


def test_ingress():
    fns = functions(vad_consumer_enabled=True)
    assert {key: service_config(fn)["ingress_settings"] for key, fn in fns.items()} == {
        "ingest": "ALLOW_ALL",
        "assembler": "ALLOW_INTERNAL_ONLY",
        "vad": "ALLOW_INTERNAL_ONLY",
    }


def test_grants_are_for_each_maps_and_least_privilege():
    for rtype in (
        "google_pubsub_topic_iam_member",
        "google_pubsub_subscription_iam_member",
        "google_storage_bucket_iam_member",
        "google_project_iam_member",
    ):
        assert "for_each" in resource_block(rtype, "this").attributes, f"{rtype}.this should grant with for_each"
    every = grants(vad_consumer_enabled=True)
    recordings = the("google_storage_bucket", "recordings")["name"]
    assembler_on_buckets = [
        (b["bucket"], b["role"])
        for _a, (t, b) in every.items()
        if t == "google_storage_bucket_iam_member" and MEMBER["assembler"] in members_of(b)
    ]
    assert assembler_on_buckets == [(recordings, "roles/storage.objectAdmin")]
    secret = the("google_secret_manager_secret_iam_member", "ingest_reads_token")
    assert (secret["role"], secret["member"]) == ("roles/secretmanager.secretAccessor", MEMBER["ingest"])
    assert secret["secret_id"] == the("google_secret_manager_secret", "ingest_token")["secret_id"]
    # Eventarc asks for eventReceiver only for events other than direct Pub/Sub messages.
    roles = {b["role"] for _a, (_t, b) in every.items()}
    assert "roles/eventarc.eventReceiver" not in roles
    assert not {"roles/owner", "roles/editor", "roles/iam.serviceAccountUser"} & roles


def test_assembler_gets_every_config_env_var_but_the_tokens():
    fn = functions()["assembler"]
    env = service_config(fn)["environment_variables"]
    assert set(env) == set(ENV_VARS) - {"INGEST_TOKENS"}, (
        f"missing {sorted(set(ENV_VARS) - {'INGEST_TOKENS'} - set(env))}, unknown {sorted(set(env) - set(ENV_VARS))}"
    )
    assert service_config(fn)["secret_environment_variables"] == []


def test_ingest_gets_its_env_vars_and_the_tokens_as_a_secret():
    sections = _config_sections()
    assert set(sections) == set(ENV_VARS) and {"shared", "ingest", "assembler"} == set(sections.values()), (
        "omi_receiver/runtime/config.py no longer groups Config fields under '# --- shared/ingest/assembler ---'"
    )
    wanted = {name for name, section in sections.items() if section in ("shared", "ingest")} - {"INGEST_TOKENS"}
    sc = service_config(functions()["ingest"])
    assert set(sc["environment_variables"]) == wanted, "ingest gets exactly the shared and ingest settings"
    # The tokens come from Secret Manager, pinned to the version Terraform wrote, so a token
    # change rolls a new revision.
    secret = the("google_secret_manager_secret", "ingest_token")
    assert sc["secret_environment_variables"] == [
        {
            "key": "INGEST_TOKENS",
            "project_id": PROJECT,
            "secret": secret["secret_id"],
            "version": Unknown("google_secret_manager_secret_version.ingest_token.version"),
        }
    ]


def _distinctive_values() -> tuple[dict, dict[str, str]]:
    """A value for every variable named after a Config field, unlike its default and every
    other's, and the environment value each should arrive as."""
    variables = config().variables
    overrides, expected = {}, {}
    for i, name in enumerate(sorted(ENV_VARS)):
        var = name.lower()
        if var not in variables:
            continue
        vtype = variables[var].attributes["type"].src.strip()
        if vtype == "string":
            value = f"v{i}-{var.replace('_', '-')}"
            expected[name] = value
        elif vtype == "number":
            value = 300 + i  # above every default of these, and small: assembler_shards counts resources
            expected[name] = str(value)
        elif vtype == "bool":
            value = not default(var)
            expected[name] = "true" if value else "false"
        elif vtype == "list(string)":
            value = [f"a{i}", f"b{i}"]
            expected[name] = f"a{i},b{i}"
        else:
            raise AssertionError(f"var.{var}: type {vtype} has no environment form here")
        overrides[var] = value
    return overrides, expected


def test_env_values_come_from_the_variable_of_the_same_name():
    """Rendered with every such variable set to a value of its own, each env var holds its
    variable's value (lists comma-joined); the Config fields without a variable hold what
    NOT_VARIABLES says."""
    overrides, expected = _distinctive_values()
    assert len(set(expected.values())) == len(expected)
    overrides["project_id"] = "p-env-values"
    fns = functions(**overrides)
    chunk_subs = instances("google_pubsub_subscription", "chunks", **overrides)
    expected |= {
        "GOOGLE_CLOUD_PROJECT": "p-env-values",
        "RECORDINGS_BUCKET": the("google_storage_bucket", "recordings", **overrides)["name"],
        "ACK_DEADLINE_SECONDS": str(next(iter(chunk_subs.values()))["ack_deadline_seconds"]),
    }
    assert expected["RECORDINGS_BUCKET"] == "p-env-values-omi-recordings"
    assert set(expected) == set(ENV_VARS) - {"INGEST_TOKENS"}
    for key in ("ingest", "assembler"):
        env = service_config(fns[key])["environment_variables"]
        for name, value in env.items():
            assert value == expected[name], f"{key}: {name} = {value!r}, not the value of var.{name.lower()}"
    # The bucket's own variable reaches RECORDINGS_BUCKET too.
    env = service_config(functions(recordings_bucket_name="own-bucket")["assembler"])["environment_variables"]
    assert env["RECORDINGS_BUCKET"] == "own-bucket"


def test_variable_defaults_equal_the_code_defaults():
    variables = config().variables
    without = {name for name in ENV_VARS if name.lower() not in variables}
    assert without == set(NOT_VARIABLES), (
        f"Config fields without a Terraform variable: {sorted(without)}; expected only {sorted(NOT_VARIABLES)}"
    )
    env = service_config(functions(deployment_size="team")["assembler"])["environment_variables"]
    for name in ENV_VARS:
        if name in NOT_VARIABLES:
            continue
        value = default(name.lower())
        if name in SIZED:
            assert value is None, f"var.{name.lower()}: null by default, so deployment_size decides"
            value = resolver(deployment_size="team").local(SIZED[name])
        code = DEFAULTS[name]
        if isinstance(value, list):  # a list variable the function gets comma-joined
            assert ",".join(value) == code == env[name], (
                f"var.{name.lower()} default {value!r} != code default {code!r}"
            )
        elif isinstance(code, str):
            assert value == code, f"var.{name.lower()} default {value!r} != code default {code!r}"
        elif isinstance(code, bool):
            assert value is code, f"var.{name.lower()} default {value!r} != code default {code!r}"
        else:
            assert isinstance(value, (int, float)) and float(value) == float(code), (
                f"var.{name.lower()} default {value!r} != code default {code!r}"
            )
    # The code reads the environment rendered for the "team" size back as its own defaults (but
    # the deployment's project and bucket).
    bucket = the("google_storage_bucket", "recordings")["name"]
    assert Config.from_env(env) == dataclasses.replace(Config(), google_cloud_project=PROJECT, recordings_bucket=bucket)


def test_function_timeouts_instances_and_entry_points():
    """What deployment_size does not set (its sizes: test_sizes.py)."""
    v = {name: default(name) for name in config().variables if "default" in config().variables[name].attributes}
    assert (v["ingest_timeout_seconds"], v["assembler_timeout_seconds"]) == (30, 120)
    # The timeout covers a whole pass plus the finalization after it.
    assert v["assembler_timeout_seconds"] > DEFAULTS["PASS_SECONDS"]
    assert v["assembler_max_instances"] is None
    sc = {key: service_config(fn) for key, fn in functions().items()}
    assert (sc["ingest"]["timeout_seconds"], sc["assembler"]["timeout_seconds"]) == (30, 120)
    # One instance per shard's pass plus one for an overrun, unless set.
    assert sc["assembler"]["max_instance_count"] == 2
    assert service_config(functions(assembler_shards=3)["assembler"])["max_instance_count"] == 4
    fleet = service_config(functions(deployment_size="fleet")["assembler"])
    assert fleet["max_instance_count"] == int(fleet["environment_variables"]["ASSEMBLER_SHARDS"]) + 1
    assert service_config(functions(assembler_max_instances=7)["assembler"])["max_instance_count"] == 7
    entry_points = {}
    for key, fn in functions(vad_consumer_enabled=True).items():
        [build] = fn["build_config"]
        assert build["runtime"] == "python312", key
        entry_points[key] = build["entry_point"]
        assert service_config(fn)["all_traffic_on_latest_revision"] is True
    assert entry_points == {"ingest": "receive_chunk", "assembler": "assemble_recordings", "vad": "analyze_recording"}
    main = (REPO / "main.py").read_text()
    for name in ("receive_chunk", "assemble_recordings"):
        assert re.search(rf"^def {name}\(", main, re.M), f"main.py defines no {name}"


# --------------------------------------------------------------------------------------
# Plan-time checks: the preconditions Cloud Run's limits and the settings' relations need
# --------------------------------------------------------------------------------------


def test_every_precondition_holds_for_the_defaults():
    for overrides in ({}, {"vad_consumer_enabled": True}, {"assembler_shards": 3}):
        for key, conds in preconditions(**overrides).items():
            assert conds, f"{key} has no preconditions"
            for cond, message in conds:
                assert cond is True, f"{key} with {overrides}: {message}"


# (cpu, memory, concurrency) Cloud Run accepts (cloud.google.com/run/docs/configuring/services/cpu
# and .../memory-limits) ...
GOOD_SIZINGS = [
    ("0.08", "128Mi", 1),
    ("0.49", "512Mi", 1),
    ("0.5", "1Gi", 1),
    ("0.99", "1024Mi", 1),
    ("1", "128Mi", 80),
    ("1", "4Gi", 80),
    ("2", "8Gi", 80),
    ("4", "2Gi", 80),
    ("4", "16Gi", 1000),
    ("6", "4Gi", 80),
    ("6", "24Gi", 80),
    ("8", "32Gi", 80),
]
# ... and ones it refuses at apply time.
BAD_SIZINGS = [
    ("0.5", "2Gi", 1),  # at most 1 GiB below 1 vCPU
    ("0.5", "512Mi", 80),  # below 1 vCPU, concurrency must be 1
    ("0.3", "1Gi", 1),  # at most 512 MiB below 0.5 vCPU
    ("4", "1Gi", 80),  # at least 2 GiB at 4 vCPU
    ("1.5", "2Gi", 80),  # above 1, whole vCPUs only
    ("0.05", "128Mi", 1),  # at least 0.08 vCPU
    ("16", "32Gi", 80),  # at most 8 vCPU
    ("1", "8Gi", 80),  # at most 4 GiB at 1 vCPU
    ("2", "16Gi", 80),  # at most 8 GiB at 2 vCPU
    ("6", "2Gi", 80),  # at least 4 GiB at 6 vCPU
    ("1", "64Mi", 80),  # at least 128 MiB
]


def _sizing(fn: str, cpu: str, memory: str, concurrency: int) -> dict:
    overrides = {f"{fn}_cpu": cpu, f"{fn}_memory": memory, f"{fn}_concurrency": concurrency}
    if fn == "assembler":
        overrides["max_pass_bytes"] = 16 * 2**20  # the smallest: only the sizing may fail
    return overrides


@pytest.mark.parametrize("fn", ["ingest", "assembler"])
@pytest.mark.parametrize("cpu, memory, concurrency", GOOD_SIZINGS)
def test_sizings_cloud_run_accepts_pass_the_preconditions(fn, cpu, memory, concurrency):
    if fn == "assembler" and concurrency > 1:
        concurrency = 1  # several passes per instance need max_pass_bytes * concurrency of memory
    overrides = _sizing(fn, cpu, memory, concurrency)
    assert all(validations(var, value) for var, value in overrides.items())
    for key, conds in preconditions(**overrides).items():
        for cond, message in conds:
            assert cond is True, f"{key} with {overrides}: {message}"


@pytest.mark.parametrize("fn", ["ingest", "assembler"])
@pytest.mark.parametrize("cpu, memory, concurrency", BAD_SIZINGS)
def test_sizings_cloud_run_refuses_fail_a_precondition_of_that_function(fn, cpu, memory, concurrency):
    overrides = _sizing(fn, cpu, memory, concurrency)
    rendered = preconditions(vad_consumer_enabled=True, **overrides)
    failed = [message for cond, message in rendered[fn] if cond is not True]
    assert failed, f"{fn} with cpu {cpu}, memory {memory}, concurrency {concurrency}: every precondition holds"
    assert any(m.startswith(f"{fn}:") for m in failed), f"no sizing precondition of {fn} failed: {failed}"
    for other, conds in rendered.items():
        if other != fn:
            assert all(c is True for c, _ in conds), f"{fn}'s sizing fails a precondition of {other}"


# Settings whose relations are checked at plan time, each refused for the function named;
# rendered on the "team" size (1 vCPU, 1 GiB assembler), whose numbers the comments use.
BAD_RELATIONS = [
    ("assembler", {"max_pass_bytes": 512 * MIB + 1}),  # over half of the 1 GiB
    ("assembler", {"assembler_memory": "511Mi"}),  # 256 MiB is over half of it
    ("assembler", {"assembler_concurrency": 3}),  # three passes' worth in 1 GiB
    ("assembler", {"lease_seconds": 100, "pass_seconds": 100}),
    ("assembler", {"lease_seconds": 120}),  # not above the ack deadline
    ("assembler", {"assembler_timeout_seconds": 45}),  # not above pass_seconds
    ("assembler", {"assembler_shards": 3, "assembler_max_instances": 2}),
    ("assembler", {"assembler_shards": 4, "assembler_max_instances": 2, "assembler_concurrency": 1}),
    ("ingest", {"ingest_timeout_seconds": 18}),  # body_read_seconds + publish_timeout_seconds
    ("ingest", {"body_read_seconds": 20, "publish_timeout_seconds": 10}),
]
# Their boundaries, accepted.
GOOD_RELATIONS = [
    {"max_pass_bytes": 512 * MIB},
    {"assembler_memory": "512Mi"},
    {"assembler_concurrency": 2},
    {"lease_seconds": 121},
    {"pass_seconds": 119, "lease_seconds": 150, "assembler_timeout_seconds": 120},
    {"assembler_shards": 3, "assembler_max_instances": 3},
    {"assembler_shards": 4, "assembler_max_instances": 2, "assembler_concurrency": 2},
    {"ingest_timeout_seconds": 19},
]


@pytest.mark.parametrize("fn, overrides", BAD_RELATIONS)
def test_settings_that_cannot_work_together_fail_a_precondition(fn, overrides):
    rendered = preconditions(vad_consumer_enabled=True, deployment_size="team", **overrides)
    assert any(c is not True for c, _ in rendered[fn]), f"{fn} with {overrides}: every precondition holds"
    for other, conds in rendered.items():
        if other != fn:
            assert all(c is True for c, _ in conds), f"{overrides} fails a precondition of {other}"


@pytest.mark.parametrize("overrides", GOOD_RELATIONS)
def test_settings_at_their_limits_pass_the_preconditions(overrides):
    for key, conds in preconditions(vad_consumer_enabled=True, deployment_size="team", **overrides).items():
        for cond, message in conds:
            assert cond is True, f"{key} with {overrides}: {message}"


def test_suggested_scaling_settings_pass_the_preconditions():
    # docs/performance.md suggests settings for 10,000 users (bench/cost.plan, from the committed
    # bench results); a user who applies them on a 1-vCPU size must not meet a failing
    # precondition (the "fleet" size is the plan's best option: test_sizes.py).
    from bench import cost
    from bench.common import read_result

    scale = read_result("scale")
    assert scale is not None, "bench/results/scale.json is committed"
    plan = cost.plan(10_000, read_result("assembler"), scale["summary"])
    assert plan["options"]
    for option in plan["options"]:
        overrides = {
            "assembler_memory": f"{option['memory_gib']}Gi",
            "max_pass_bytes": option["max_pass_bytes_mib"] * MIB,
            "assembler_shards": option["shards"],
        }
        assert all(all(validations(var, value)) for var, value in overrides.items()), option
        for key, conds in preconditions(deployment_size="team", **overrides).items():
            assert all(c is True for c, _ in conds), f"{key} with {option}: {[m for c, m in conds if c is not True]}"
    # bench/cost.py's share of memory is the one infra/functions.tf checks.
    memory = 2**30
    at = int(memory * cost.MAX_PASS_SHARE_OF_MEMORY)
    assert all(c is True for c, _ in preconditions(deployment_size="team", max_pass_bytes=at)["assembler"])
    assert not all(c is True for c, _ in preconditions(deployment_size="team", max_pass_bytes=at + 1)["assembler"])


def test_ticks_drive_the_assembler_without_retries():
    [trigger] = functions()["assembler"]["event_trigger"]
    assert trigger["event_type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert trigger["pubsub_topic"] == Unknown('google_pubsub_topic.this["ticks"].id')
    assert trigger["retry_policy"] == "RETRY_POLICY_DO_NOT_RETRY"
    assert trigger["trigger_region"] == default("region")
    jobs = instances(
        "google_cloud_scheduler_job", "assembler_tick", assembler_shards=3, assembler_schedule="*/2 * * * *"
    )
    assert len(jobs) == 3 and len({j["name"] for j in jobs.values()}) == 3
    for job in jobs.values():
        assert job["schedule"] == "*/2 * * * *"
        assert job["retry_config"] == [{"retry_count": 0}]
        [target] = job["pubsub_target"]
        assert target["topic_name"] == Unknown('google_pubsub_topic.this["ticks"].id')
    assert default("assembler_schedule") == "* * * * *"


def test_ingest_token_secret():
    password = the("random_password", "ingest_token")
    assert password["length"] == 40 and password["special"] is False
    assert lifecycle("google_secret_manager_secret_version", "ingest_token")["create_before_destroy"] is True
    assert default("ingest_token") is None
    version = the("google_secret_manager_secret_version", "ingest_token", ingest_token=TOKEN)
    assert version["secret_data"] == TOKEN
    assert version["secret"] == Unknown("google_secret_manager_secret.ingest_token.id")


# --------------------------------------------------------------------------------------
# Monitoring
# --------------------------------------------------------------------------------------


def test_log_based_metrics_match_the_logged_events():
    metrics = {
        a.removeprefix("google_logging_metric."): b
        for a, (t, b) in everything(name_prefix="pfx").items()
        if t == "google_logging_metric"
    }
    # Accepted chunks come from Cloud Run's request_count: ingest logs none by default.
    assert {name: m["name"] for name, m in metrics.items()} == {
        "ingest_rejections": "pfx/ingest_rejections",
        "chunks_assembled": "pfx/chunks_assembled",
        "duplicates_dropped": "pfx/duplicates_dropped",
    }
    fns = functions(name_prefix="pfx")
    events = {
        "ingest_rejections": ("chunk_rejected", "ingest"),
        "chunks_assembled": ("chunks_assembled", "assembler"),
        "duplicates_dropped": ("duplicates_dropped", "assembler"),
    }
    for name, (event, fn) in events.items():
        assert f'jsonPayload.event="{event}"' in metrics[name]["filter"], name
        assert f'resource.labels.service_name="{fns[fn]["name"]}"' in metrics[name]["filter"], name
        assert metrics[name]["metric_descriptor"][0]["value_type"] == "DISTRIBUTION", name
    assert metrics["ingest_rejections"]["label_extractors"] == {"reason": "EXTRACT(jsonPayload.error)"}
    # Refusal lines are bounded per instance and carry the refusals they stand for.
    assert metrics["ingest_rejections"]["value_extractor"] == "EXTRACT(jsonPayload.count)"
    assert metrics["chunks_assembled"]["value_extractor"] == "EXTRACT(jsonPayload.chunks)"
    assert metrics["duplicates_dropped"]["value_extractor"] == "EXTRACT(jsonPayload.duplicates)"


def test_alert_policies():
    overrides = {
        "oldest_unacked_alert_seconds": 777,
        "ingest_rejections_alert_threshold": 33,
        "ingest_5xx_alert_threshold": 9,
    }
    policies = {
        a.removeprefix("google_monitoring_alert_policy."): b
        for a, (t, b) in everything(**overrides).items()
        if t == "google_monitoring_alert_policy"
    }
    assert set(policies) == {"dead_letters", "chunks_backlog", "chunks_rejected", "ingest_5xx"}
    for name, body in policies.items():
        assert body["documentation"][0]["content"].strip(), name
    hold = the("google_pubsub_subscription", "dead_letter_hold")["name"]
    ingest = functions()["ingest"]["name"]

    [rejected] = policies.pop("chunks_rejected")["conditions"]
    query = rejected["condition_prometheus_query_language"][0]["query"]
    assert query.startswith("sum by (reason) (increase(") and query.endswith("[5m])) > 33"), query
    assert f'service_name="{ingest}"' in query
    threshold = {name: body["conditions"][0]["condition_threshold"][0] for name, body in policies.items()}
    assert "subscription/num_undelivered_messages" in threshold["dead_letters"]["filter"]
    assert f'subscription_id="{hold}"' in threshold["dead_letters"]["filter"]
    assert threshold["dead_letters"]["threshold_value"] == 0
    assert "subscription/oldest_unacked_message_age" in threshold["chunks_backlog"]["filter"]
    assert "monitoring.regex.full_match" in threshold["chunks_backlog"]["filter"]
    assert "cross_series_reducer" not in threshold["chunks_backlog"]["aggregations"][0], (
        "a reducer would merge the shards' series: one lagging shard must alert on its own"
    )
    assert threshold["chunks_backlog"]["threshold_value"] == 777
    assert default("oldest_unacked_alert_seconds") == 300
    assert 'response_code_class="5xx"' in threshold["ingest_5xx"]["filter"]
    assert "run.googleapis.com/request_count" in threshold["ingest_5xx"]["filter"]
    assert f'service_name="{ingest}"' in threshold["ingest_5xx"]["filter"]
    assert threshold["ingest_5xx"]["threshold_value"] == 9
    assert default("alert_email") is None


@pytest.mark.parametrize("keep, count", [(False, 1), (True, 0)])
def test_ingest_request_logs_are_not_stored_by_default(keep, count):
    # Their URLs hold the token; the metrics the alerts use do not come from logs.
    exclusions = instances("google_logging_project_exclusion", "ingest_request_logs", keep_ingest_request_logs=keep)
    assert len(exclusions) == count
    assert default("keep_ingest_request_logs") is False
    for body in exclusions.values():
        assert f'resource.labels.service_name="{functions()["ingest"]["name"]}"' in body["filter"]
        assert f'logName="projects/{PROJECT}/logs/run.googleapis.com%2Frequests"' in body["filter"]


# --------------------------------------------------------------------------------------
# terraform.tfvars.example
# --------------------------------------------------------------------------------------

TFVARS = INFRA / "terraform.tfvars.example"


def _commented_assignments(text: str) -> str:
    """The example's commented-out `# name = value` lines, uncommented (trailing comments
    are HCL comments and stay)."""
    return "\n".join(m.group(1) for m in re.finditer(r"^#\s*([a-z_]+\s*=.*)$", text, re.M))


def test_tfvars_example_only_sets_declared_variables_to_valid_values():
    """Its assignments, and the ones it shows commented out, name declared variables and pass
    their validations; all of them at once pass the functions' preconditions."""
    text = TFVARS.read_text()
    variables = config().variables
    set_ = tf_config.parse_attributes(text, TFVARS.name)
    shown = tf_config.parse_attributes(_commented_assignments(text), TFVARS.name + " (commented)")
    assert "project_id" in set_ and len(shown) >= 10
    ev = hcl_eval.Evaluator(hcl_eval.Resolver())
    values = {}
    for name, attr in [*set_.items(), *shown.items()]:
        assert name in variables, f"{TFVARS.name} sets an undeclared variable {name}"
        values[name] = ev.eval(attr.expr)
        assert all(validations(name, values[name])), f"{TFVARS.name}: {name} = {attr.src} fails its validation"
    for key, conds in preconditions(**values).items():
        assert all(c is True for c, _ in conds), f"{key} with the example's values: {[m for c, m in conds if not c]}"
