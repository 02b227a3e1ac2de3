"""infra/ against the providers' real schemas (provider_schema.py), and proof that the check
catches what it claims to: planted errors in a copy of infra/, each expected to be reported
with its file, resource and path.

The planted errors are placed by reading the configuration, not by matching fixed text, so
they keep working while infra/ changes: each picks the first place in infra/ where its kind
of error can be made (a nested block two levels down, a required argument written on one
line, a block that may appear once, a dynamic block's content, a reference to a declared
resource's attribute). A plant that finds no such place fails, saying so.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hcl_eval
import provider_schema
import pytest
import tf_config

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"

# The provider versions whose schemas the packages pinned in requirements-dev.txt carry.
CHECKED_VERSIONS = {
    "hashicorp/google": "6.50.0",
    "hashicorp/random": "3.7.2",
    "hashicorp/archive": "2.7.1",
    "hashicorp/time": "0.13.1",
    "hashicorp/google-beta": "6.50.0",
}


@pytest.fixture(scope="module")
def config() -> tf_config.Config:
    return tf_config.load(INFRA)


@pytest.fixture(scope="module")
def findings(config) -> list[provider_schema.Finding]:
    return provider_schema.check(config)


# --------------------------------------------------------------------------------------
# The schemas themselves
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", sorted(provider_schema.PROVIDER_PACKAGES))
def test_schema_package_is_the_checked_provider_version(source, config):
    asm = provider_schema.assembly(source)
    used = {e.get("source", f"hashicorp/{k}") for k, e in config.required_providers.items()}
    assert source in used, f"infra/ does not require {source}: drop it from PROVIDER_PACKAGES"
    assert asm is not None, f"{provider_schema.PROVIDER_PACKAGES[source]} is not installed (requirements-dev.txt)"
    assert (asm.source, asm.version) == (source, CHECKED_VERSIONS[source])


def test_schema_reads_known_facts():
    """A few facts of hashicorp/google 6.50.0, as its documentation states them, so that a
    misread assembly cannot pass everything by knowing nothing."""
    asm = provider_schema.assembly("hashicorp/google")
    fn = asm.class_schema("resource", "google_cloudfunctions2_function")
    assert fn.arguments["name"].required and fn.arguments["location"].required
    assert not fn.arguments["project"].required
    assert fn.blocks["build_config"].single and fn.blocks["service_config"].single
    storage_source = fn.nested("build_config").nested("source").blocks["storage_source"]
    assert storage_source.single and not storage_source.required
    bucket = asm.class_schema("resource", "google_storage_bucket")
    assert not bucket.blocks["lifecycle_rule"].single
    assert bucket.nested("lifecycle_rule").blocks["action"].required
    assert {"url", "self_link", "project_number"} <= set(bucket.read.names())
    assert "uri" in fn.read.child(fn.read.get("service_config"))[0].names()
    # names that do not round-trip from camelCase come from the registry anchors
    compute = asm.class_schema("resource", "google_compute_region_backend_service")
    assert compute is not None
    assert asm.class_schema("data", "google_project").arguments["project_id"].required is False
    assert asm.class_schema("resource", "google_not_a_thing") is None


def _constraint_parts(text: str) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(>=|<=|~>|!=|=|>|<)?\s*v?(\d+(?:\.\d+)*)\s*", part)
        assert m, f"cannot read version constraint {text!r}"
        out.append((m.group(1) or "=", tuple(int(x) for x in m.group(2).split("."))))
    return out


def _admits(text: str, version: tuple[int, ...]) -> bool:
    def pad(v, n=3):
        return v + (0,) * (n - len(v))

    v = pad(version)
    for op, bound in _constraint_parts(text):
        b = pad(bound)
        ok = {
            ">=": v >= b,
            ">": v > b,
            "<=": v <= b,
            "<": v < b,
            "=": v == b,
            "!=": v != b,
            "~>": v >= b and v[: len(bound) - 1] == b[: len(bound) - 1],
        }[op]
        if not ok:
            return False
    return True


def _lowest_admitted(text: str) -> tuple[int, ...]:
    lows = [pad for op, pad in _constraint_parts(text) if op in (">=", "~>", "=")]
    return max(lows) if lows else (0,)


def test_required_providers_admit_the_checked_versions(config):
    for local, entry in config.required_providers.items():
        source = entry.get("source", f"hashicorp/{local}")
        assert source in CHECKED_VERSIONS, f"no schema checked for provider {source} (add its cdktf package)"
        checked = tuple(int(x) for x in CHECKED_VERSIONS[source].split("."))
        assert _admits(entry["version"], checked), (
            f"{local}: {entry['version']!r} excludes {CHECKED_VERSIONS[source]}, the schema checked"
        )


def test_required_providers_admit_only_checked_schemas(config):
    """The issue's part 2: pin each provider to versions whose schema was checked. A lower
    bound below the checked version admits providers whose schema may lack what infra/
    uses (terraform init would pick the newest anyway, but a lock file or mirror may not)."""
    problems = []
    for local, entry in config.required_providers.items():
        source = entry.get("source", f"hashicorp/{local}")
        checked = tuple(int(x) for x in CHECKED_VERSIONS.get(source, "0").split("."))
        if _lowest_admitted(entry["version"]) < checked:
            problems.append(
                f"{local} ({source}): version {entry['version']!r} admits versions below "
                f"{CHECKED_VERSIONS.get(source)}, the one whose schema is checked"
            )
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------
# infra/ itself
# --------------------------------------------------------------------------------------


def test_infra_matches_provider_schemas(findings):
    assert not findings, "infra/ does not match the providers' schemas:\n" + "\n".join(map(str, findings))


def test_every_resource_type_has_a_schema(config):
    for (rtype, name), _block in list(config.resources.items()) + list(config.data_sources.items()):
        local = rtype.split("_", 1)[0]
        source = config.required_providers.get(local, {}).get("source", f"hashicorp/{local}")
        assert provider_schema.assembly(source) is not None, f"{rtype}.{name}: no schema package for {source}"


# --------------------------------------------------------------------------------------
# Planted errors
# --------------------------------------------------------------------------------------


def _typo(name: str, taken) -> str:
    """A near-miss of `name` that is not in `taken`: two letters swapped, or one doubled."""
    chars = list(name)
    for i in range(len(chars) - 2, 0, -1):
        if chars[i] != chars[i + 1] and chars[i].isalpha() and chars[i + 1].isalpha():
            cand = chars[:]
            cand[i], cand[i + 1] = cand[i + 1], cand[i]
            cand = "".join(cand)
            if cand not in taken:
                return cand
    return name + name[-1]


@dataclass
class Plant:
    file: str
    text: str  # the file's new text
    expect: Callable[[provider_schema.Finding], bool]
    what: str


def _lines(config, file):
    return config.texts[file].split("\n")


def _resources(config):
    for (rtype, name), block in sorted(config.resources.items(), key=lambda kv: (kv[1].file, kv[1].line)):
        schema = provider_schema.assembly(
            config.required_providers.get(rtype.split("_")[0], {}).get("source", "hashicorp/" + rtype.split("_")[0])
        )
        rs = schema.class_schema("resource", rtype) if schema else None
        if rs is not None:
            yield f"{rtype}.{name}", block, rs


def plant_nested_block_typo(config):
    for address, block, schema in _resources(config):
        for outer in block.blocks:
            if outer.type not in schema.blocks:
                continue
            inner_schema = schema.nested(outer.type)
            for inner in outer.blocks:
                if inner.type in inner_schema.blocks:
                    typo = _typo(inner.type, set(inner_schema.blocks) | set(inner_schema.arguments))
                    lines = _lines(config, inner.file)
                    i = inner.line - 1
                    new = re.sub(rf"\b{re.escape(inner.type)}(\s*\{{)", typo + r"\1", lines[i], count=1)
                    assert new != lines[i]
                    lines[i] = new
                    return Plant(
                        inner.file,
                        "\n".join(lines),
                        lambda f, a=address, p=f"{outer.type}.{typo}": (
                            f.address == a and f.path == p and "unknown block" in f.message
                        ),
                        f"{address}: block {outer.type}.{inner.type} renamed {typo}",
                    )
    pytest.fail("no nested block two levels down in infra/ to misspell")


def plant_missing_required(config):
    for address, block, schema in _resources(config):
        for name, arg in schema.arguments.items():
            attr = block.attributes.get(name)
            if arg.required and attr is not None and attr.line == attr.end_line:
                lines = _lines(config, attr.file)
                del lines[attr.line - 1]
                return Plant(
                    attr.file,
                    "\n".join(lines),
                    lambda f, a=address, n=name: (
                        f.address == a and f.path == n and f"missing required argument {n!r}" in f.message
                    ),
                    f"{address}: required argument {name} removed",
                )
    pytest.fail("no required argument written on one line in infra/")


def plant_single_block_repeated(config):
    for address, block, schema in _resources(config):
        for sub in block.blocks:
            nb = schema.blocks.get(sub.type)
            if nb and nb.single and len(block.blocks_named(sub.type)) == 1:
                lines = _lines(config, sub.file)
                copy = lines[sub.line - 1 : sub.end_line]
                lines[sub.end_line : sub.end_line] = copy
                return Plant(
                    sub.file,
                    "\n".join(lines),
                    lambda f, a=address, n=sub.type: f.address == a and f.path == n and "at most once" in f.message,
                    f"{address}: block {sub.type} given twice",
                )
    pytest.fail("no block that may appear only once in infra/")


def plant_unknown_resource_type(config):
    asm = provider_schema.assembly("hashicorp/google")
    for address, block, _schema in _resources(config):
        rtype, name = block.labels
        if not rtype.startswith("google_"):
            continue
        typo = _typo(rtype, set(asm.names("resource")))
        lines = _lines(config, block.file)
        i = block.line - 1
        new = lines[i].replace(f'"{rtype}"', f'"{typo}"', 1)
        assert new != lines[i]
        lines[i] = new
        return Plant(
            block.file,
            "\n".join(lines),
            lambda f, a=f"{typo}.{name}": f.address == a and "unknown resource type" in f.message,
            f"{address}: type misspelt {typo}",
        )
    pytest.fail("no google_ resource in infra/")


def plant_unknown_argument_in_dynamic(config):
    for address, block, schema in _resources(config):

        def find(b, sch, path):
            for sub in b.blocks:
                if sub.type == "dynamic" and sub.labels and sub.labels[0] in sch.blocks:
                    for content in sub.blocks_named("content"):
                        if content.end_line > content.line:
                            yield sub, content, sch.nested(sub.labels[0]), f'{path}dynamic "{sub.labels[0]}".content'
                elif sub.type in sch.blocks:
                    yield from find(sub, sch.nested(sub.type), f"{path}{sub.type}.")

        for _dyn, content, inner, path in find(block, schema, ""):
            args = sorted(inner.arguments) or ["name"]
            typo = _typo(args[0], set(inner.arguments) | set(inner.blocks))
            lines = _lines(config, content.file)
            lines.insert(content.line, f'      {typo} = "planted"')
            return Plant(
                content.file,
                "\n".join(lines),
                lambda f, a=address, p=f"{path}.{typo}": (
                    f.address == a and f.path == p and "unknown argument" in f.message
                ),
                f"{address}: argument {typo} added to {path}",
            )
    # No dynamic block in infra/ (any more): add one to the first resource with a block
    # type it does not use, and misspell an argument in its content.
    for address, block, schema in _resources(config):
        for bname in sorted(schema.blocks):
            if bname == "timeouts" or block.blocks_named(bname):
                continue
            inner = schema.nested(bname)
            typo = _typo((sorted(inner.arguments) or ["name"])[0], set(inner.arguments) | set(inner.blocks))
            lines = _lines(config, block.file)
            lines[block.end_line - 1 : block.end_line - 1] = [
                f'  dynamic "{bname}" {{',
                "    for_each = []",
                "    content {",
                f'      {typo} = "planted"',
                "    }",
                "  }",
            ]
            path = f'dynamic "{bname}".content.{typo}'
            return Plant(
                block.file,
                "\n".join(lines),
                lambda f, a=address, p=path: f.address == a and f.path == p and "unknown argument" in f.message,
                f"{address}: {path} added",
            )
    pytest.fail("no resource in infra/ to hold a dynamic block")


def _resource_refs(config):
    """(address, attribute, ref) for references to a declared resource's attribute, in
    attributes written on one line."""

    def attrs(b, path):
        for a in b.attributes.values():
            yield a, path + a.name
        for sub in b.blocks:
            yield from attrs(sub, path + sub.type + ".")

    for address, block, _schema in _resources(config):
        for attr, path in attrs(block, ""):
            if attr.line != attr.end_line or attr.name in ("depends_on", "for_each", "count"):
                continue
            for ref in hcl_eval.references(attr.expr):
                target = (
                    config.resources.get((ref.root, ref.steps[0][1]))
                    if ref.steps and ref.steps[0][0] == "attr"
                    else None
                )
                if target is None:
                    continue
                repeated = "count" in target.attributes or "for_each" in target.attributes
                if not repeated and len(ref.steps) >= 2 and ref.steps[1][0] == "attr":
                    yield address, attr, path, ref


def plant_undeclared_resource_reference(config):
    for address, attr, path, ref in _resource_refs(config):
        name = ref.steps[0][1]
        taken = {n for (t, n) in config.resources if t == ref.root}
        typo = _typo(name, taken)
        lines = _lines(config, attr.file)
        i = attr.line - 1
        new = re.sub(rf"\b{re.escape(ref.root)}\.{re.escape(name)}\b", f"{ref.root}.{typo}", lines[i], count=1)
        assert new != lines[i]
        lines[i] = new
        return Plant(
            attr.file,
            "\n".join(lines),
            lambda f, a=address, p=path, r=f"{ref.root}.{typo}": (
                f.address == a and f.path == p and f"{r} is not declared" in f.message
            ),
            f"{address}: {path} refers to {ref.root}.{typo}",
        )
    pytest.fail("no reference to a resource attribute in infra/")


def plant_unknown_attribute_reference(config):
    for address, attr, path, ref in _resource_refs(config):
        name, attr_name = ref.steps[0][1], ref.steps[1][1]
        asm = provider_schema.assembly("hashicorp/" + ref.root.split("_")[0])
        read = asm.class_schema("resource", ref.root).read
        typo = _typo(attr_name, set(read.names()))
        lines = _lines(config, attr.file)
        i = attr.line - 1
        pattern = rf"\b{re.escape(ref.root)}\.{re.escape(name)}\.{re.escape(attr_name)}\b"
        new = re.sub(pattern, f"{ref.root}.{name}.{typo}", lines[i], count=1)
        if new == lines[i]:
            continue
        lines[i] = new
        return Plant(
            attr.file,
            "\n".join(lines),
            lambda f, a=address, p=path, t=typo: (
                f.address == a and f.path == p and f"has no attribute {t!r}" in f.message
            ),
            f"{address}: {path} reads {ref.root}.{name}.{typo}",
        )
    pytest.fail("no reference to a resource attribute in infra/")


PLANTS = {
    "typo in a nested block name": plant_nested_block_typo,
    "required argument missing": plant_missing_required,
    "single block repeated": plant_single_block_repeated,
    "unknown resource type": plant_unknown_resource_type,
    "unknown argument in a dynamic block's content": plant_unknown_argument_in_dynamic,
    "reference to an undeclared resource": plant_undeclared_resource_reference,
    "reference to an attribute that does not exist": plant_unknown_attribute_reference,
}


def _copy_infra(tmp_path: Path) -> Path:
    dest = tmp_path / "infra"
    dest.mkdir()
    for path in INFRA.glob("*.tf"):
        shutil.copyfile(path, dest / path.name)
    return dest


def _key(f: provider_schema.Finding):
    return (f.file, f.address, f.path, f.message)  # lines shift when a plant adds or removes one


def test_unbroken_copy_passes(tmp_path, config, findings):
    copy = tf_config.load(_copy_infra(tmp_path))
    copied = provider_schema.check(copy)
    assert copied == findings  # the copy is read like the original
    assert not copied, "\n".join(map(str, copied))


@pytest.mark.parametrize("kind", list(PLANTS))
def test_planted_error_is_caught(kind, tmp_path, config, findings):
    plant = PLANTS[kind](config)
    root = _copy_infra(tmp_path)
    (root / plant.file).write_text(plant.text)
    broken = provider_schema.check(tf_config.load(root))
    baseline = {_key(f) for f in findings}
    new = [f for f in broken if _key(f) not in baseline]
    hits = [f for f in new if plant.expect(f) and f.file == f"infra/{plant.file}"]
    assert hits, f"planted: {plant.what}\nnot reported; new findings:\n" + "\n".join(map(str, new))
    # the report names file, line, resource and path
    assert re.match(rf"infra/{re.escape(plant.file)}:\d+: \S+", str(hits[0]))


# --------------------------------------------------------------------------------------
# Constructs infra/ is about to use: no false alarms on them
# --------------------------------------------------------------------------------------

PLANNED = """
terraform {
  required_providers {
    google      = { source = "hashicorp/google", version = ">= 6.50, < 7.0" }
    google-beta = { source = "hashicorp/google-beta", version = ">= 6.50, < 7.0" }
    time        = { source = "hashicorp/time", version = ">= 0.13.1, < 1.0" }
  }
}

provider "google" {
  project        = var.project_id
  default_labels = { app = "omi-receiver" }
}

provider "google-beta" {
  project = var.project_id
}

variable "project_id" {
  type = string
}

locals {
  functions = {
    ingest    = { entry_point = "receive_chunk", env = { A = "1" }, trigger = null }
    assembler = { entry_point = "assemble_recordings", env = { B = "2" }, trigger = "ticks" }
  }
}

resource "google_project_service_identity" "pubsub" {
  provider = google-beta
  project  = var.project_id
  service  = "pubsub.googleapis.com"
}

resource "time_sleep" "grants" {
  create_duration = "60s"
  triggers        = { member = google_project_service_identity.pubsub.member }
}

resource "google_pubsub_topic" "this" {
  for_each = toset(["ticks"])
  name     = each.key
}

resource "google_cloudfunctions2_function" "this" {
  for_each = local.functions
  name     = "omi-${each.key}"
  location = "us-central1"

  build_config {
    runtime     = "python312"
    entry_point = each.value.entry_point
  }

  service_config {
    environment_variables = each.value.env
  }

  dynamic "event_trigger" {
    for_each = each.value.trigger == null ? [] : [each.value.trigger]
    content {
      event_type   = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic = google_pubsub_topic.this[event_trigger.value].id
      retry_policy = "RETRY_POLICY_DO_NOT_RETRY"
    }
  }

  depends_on = [time_sleep.grants]
}

moved {
  from = google_cloudfunctions2_function.ingest
  to   = google_cloudfunctions2_function.this["ingest"]
}

output "ingest_url" {
  value = google_cloudfunctions2_function.this["ingest"].service_config[0].uri
}

output "agent" {
  value = google_project_service_identity.pubsub.email
}
"""


def test_planned_constructs_pass(tmp_path):
    """for_each over a map of function specs, a dynamic block fed by each.value, moved
    blocks to keyed instances, the provider's default_labels, time_sleep (hashicorp/time)
    and google_project_service_identity through google-beta (it is not in hashicorp/google)."""
    root = tmp_path / "infra"
    root.mkdir()
    (root / "main.tf").write_text(PLANNED)
    found = provider_schema.check(tf_config.load(root))
    assert not found, "\n".join(map(str, found))
    # ... and the mistakes one could make with them are caught
    broken = (
        PLANNED.replace("provider = google-beta\n", "")
        .replace('this["ingest"].service_config[0].uri', 'this["ingset"].service_config[0].uri')
        .replace("default_labels", "default_label")
    )
    (root / "main.tf").write_text(broken)
    messages = [f.message for f in provider_schema.check(tf_config.load(root))]
    assert any("unknown resource type 'google_project_service_identity'" in m for m in messages), messages
    assert any("has no instance 'ingset'" in m for m in messages), messages
    assert any("unknown argument 'default_label'" in m for m in messages), messages
