"""Terraform providers' real schemas, read from their prebuilt CDKTF bindings, and a checker
of infra/ against them.

Where the schemas come from. HashiCorp published, for each provider version, a PyPI package
of CDK for Terraform bindings generated from that provider's own schema
(`terraform providers schema -json`). Each ships a jsii assembly,
`<package>/_jsii/*.jsii.tgz`, whose `.jsii` JSON describes:

* a class per resource and data source, whose docs link the registry page
  (`https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs/resources/<slug>
  google_<type>`): that gives the Terraform type name exactly;
* a `<Name>Config` struct per class (the constructor's `config`), one property per argument
  and block, with `optional` unless required; each property's docs link the registry anchor
  of its snake_case name (`...#build_config`), which is used instead of converting camelCase
  back (that does not round-trip: `buildAttribute` is `build`, `detectMd5Hash` is
  `detect_md5hash`, `fetchhDetails` is `geth_details`);
* a nested block as a property whose type is a struct (a block that can appear at most once)
  or an array of structs (a list or set of blocks), documented as "<name> block.";
* the class's getters: every attribute that can be read, arguments and computed attributes
  alike; a nested block's getter returns an `...OutputReference` class (or a `...List` class
  whose `get()` returns one) with the getters of the block's own attributes.

The package is read as a file (importlib.metadata locates it; importing it would need node).
Only the types used are parsed: the `.jsii` of hashicorp/google is ~100 MB of JSON, so it is
indexed by the offsets of its type entries and each entry is decoded on demand; the assembly
is loaded once per process (module-level cache), in about half a second.

What is checked (`check(config)`): see the docstring of `check`.
"""

from __future__ import annotations

import bisect
import difflib
import functools
import gzip
import importlib.metadata
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import hcl_eval
import tf_config

# Provider source address -> the PyPI package with its schema, pinned in requirements-dev.txt.
# Each package's README names the provider version it was generated from; `Assembly.version`
# reads it back from the registry links, and test_provider_schema prints and checks it.
PROVIDER_PACKAGES = {
    "hashicorp/google": "cdktf-cdktf-provider-google",  # 16.12.1: hashicorp/google 6.50.0
    "hashicorp/random": "cdktf-cdktf-provider-random",  # 12.0.1: hashicorp/random 3.7.2
    "hashicorp/archive": "cdktf-cdktf-provider-archive",  # 11.0.1: hashicorp/archive 2.7.1
    "hashicorp/time": "cdktf-cdktf-provider-time",  # 11.0.1: hashicorp/time 0.13.1
    # google_project_service_identity (agents.tf) is only in google-beta.
    "hashicorp/google-beta": "cdktf-cdktf-provider-google-beta",  # 16.12.1: hashicorp/google-beta 6.50.0
}

_LINK = re.compile(
    rb'"summary": "Represents a \{@link https://registry\.terraform\.io/providers/'
    rb"([\w.-]+/[\w.-]+)/([\w.-]+)/docs(?:/(resources|data-sources)/(\w+))? ([\w-]+)\}"
)
_ANCHOR = re.compile(r"registry\.terraform\.io/providers/[^#\s]+#(\w+)")
_TYPE_KEY = re.compile(rb'\n    "([^"\n]+)": \{\n')


def camel_to_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), name).lower()


def _norm(name: str) -> str:
    return name.replace("_", "").lower()


class Assembly:
    """One provider's jsii assembly, decoded lazily."""

    def __init__(self, dist_name: str):
        dist = importlib.metadata.distribution(dist_name)
        tgz = next((f for f in dist.files or () if str(f).endswith(".jsii.tgz")), None)
        if tgz is None:
            raise FileNotFoundError(f"{dist_name} has no _jsii/*.jsii.tgz")
        self.dist_name = dist_name
        self.dist_version = dist.version
        self.path = Path(dist.locate_file(tgz))
        data = self._read_jsii(self.path)
        start = data.find(b'\n  "types": {\n')
        if start < 0:
            raise ValueError(f"{self.path}: no types in the assembly")
        self._data = data
        self._keys: list[str] = []
        self._offsets: list[int] = []
        for m in _TYPE_KEY.finditer(data, start):
            self._keys.append(m.group(1).decode())
            self._offsets.append(m.end() - 2)  # at the "{"
        self._end = data.rfind(b"\n  }", self._offsets[-1]) if self._offsets else len(data)
        self._index = {k: i for i, k in enumerate(self._keys)}
        self.classes: dict[tuple[str, str], str] = {}  # ("resource"|"data"|"provider", tf type) -> fqn
        self.source = self.version = None
        for m in _LINK.finditer(data, start):
            source, version, kind, _slug, tf_type = (g.decode() if g else None for g in m.groups())
            i = bisect.bisect_right(self._offsets, m.start()) - 1
            if i < 0:
                continue
            fqn = self._keys[i]
            self.source, self.version = source, version
            key = ("provider" if kind is None else "resource" if kind == "resources" else "data", tf_type)
            self.classes.setdefault(key, fqn)
        self._types: dict[str, dict] = {}

    @staticmethod
    def _read_jsii(path: Path) -> bytes:
        """The .jsii JSON: the tarball's first member in these packages, read without going
        through the rest of it. Newer jsii may write a small redirect to .jsii.gz instead."""
        members = {}
        with tarfile.open(path, "r:gz") as tf:
            for member in tf:
                if member.name in ("package/.jsii", "package/.jsii.gz"):
                    members[member.name] = tf.extractfile(member).read()
                    jsii = members.get("package/.jsii")
                    if jsii is not None and b'"jsii/file-redirect"' not in jsii[:300]:
                        return jsii
        if "package/.jsii.gz" in members:
            return gzip.decompress(members["package/.jsii.gz"])
        raise ValueError(f"{path}: no .jsii found")

    def type(self, fqn: str) -> dict | None:
        if fqn in self._types:
            return self._types[fqn]
        i = self._index.get(fqn)
        if i is None:
            return None
        end = self._offsets[i + 1] if i + 1 < len(self._offsets) else self._end
        text = self._data[self._offsets[i] : end].decode()
        value, _ = json.JSONDecoder().raw_decode(text)
        self._types[fqn] = value
        return value

    def names(self, kind: str) -> list[str]:
        return sorted(t for k, t in self.classes if k == kind)

    def class_schema(self, kind: str, tf_type: str) -> ResourceSchema | None:
        fqn = self.classes.get((kind, tf_type))
        if fqn is None:
            return None
        cls = self.type(fqn)
        config_fqn = None
        for param in (cls.get("initializer") or {}).get("parameters", []):
            if param["name"] == "config":
                config_fqn = param["type"].get("fqn")
        if kind == "provider" and config_fqn is None:
            return None
        return ResourceSchema(self, tf_type, config_fqn, fqn)


# -- schema objects ----------------------------------------------------------------------


@dataclass(frozen=True)
class Argument:
    name: str
    required: bool


@dataclass(frozen=True)
class NestedBlock:
    name: str
    required: bool  # at least one
    single: bool  # at most one
    struct: str  # fqn of its struct


class BlockSchema:
    """Arguments and nested blocks of a resource or of one of its blocks (from a struct)."""

    def __init__(self, asm: Assembly, struct_fqn: str | None):
        self.asm = asm
        self.struct_fqn = struct_fqn
        self.arguments: dict[str, Argument] = {}
        self.blocks: dict[str, NestedBlock] = {}
        self.camel: dict[str, str] = {}  # camelCase property -> snake name
        if struct_fqn is None:
            return
        struct = asm.type(struct_fqn)
        for prop in struct.get("properties", []):
            docs = prop.get("docs", {})
            m = _ANCHOR.search(docs.get("remarks", "") or "") or _ANCHOR.search(docs.get("summary", "") or "")
            name = m.group(1) if m else camel_to_snake(prop["name"])
            self.camel[prop["name"]] = name
            required = not prop.get("optional", False)
            nested = self._struct_of(prop["type"])
            is_block = nested is not None and (docs.get("summary", "") or "").endswith(" block.")
            if is_block:
                single = "fqn" in prop["type"]
                self.blocks[name] = NestedBlock(name, required, single, nested)
            else:
                self.arguments[name] = Argument(name, required)

    def _struct_of(self, t: dict) -> str | None:
        if "fqn" in t:
            target = self.asm.type(t["fqn"])
            return t["fqn"] if target and target.get("datatype") else None
        for u in t.get("union", {}).get("types", []):
            coll = u.get("collection")
            if coll and coll.get("kind") == "array" and "fqn" in coll.get("elementtype", {}):
                target = self.asm.type(coll["elementtype"]["fqn"])
                if target and target.get("datatype"):
                    return coll["elementtype"]["fqn"]
        return None

    @functools.cache  # noqa: B019 - schemas live as long as the test session; the cache is the point
    def nested(self, name: str) -> BlockSchema:
        return BlockSchema(self.asm, self.blocks[name].struct)


_NOT_ATTRIBUTES = {"internalValue", "terraformAttribute", "terraformResource", "wrapsSet", "creationStack", "fqn"}


class ReadSchema:
    """The attributes a reference can read, from a class's getters."""

    def __init__(self, asm: Assembly, class_fqn: str | None, config: BlockSchema | None = None):
        self.asm = asm
        self.attrs: dict[str, tuple[str, dict]] = {}  # normalized name -> (getter, type)
        if class_fqn is None:
            return
        cls = asm.type(class_fqn) or {}
        snake_of = config.camel if config else {}
        for prop in cls.get("properties", []):
            name = prop["name"]
            if prop.get("static") or name in _NOT_ATTRIBUTES:
                continue
            if name.endswith("Input") and any(p["name"] == name[: -len("Input")] for p in cls["properties"]):
                continue
            keys = {_norm(snake_of.get(name, name))}
            if name.endswith("Attribute"):
                keys.add(_norm(name[: -len("Attribute")]))
            for k in keys:
                self.attrs.setdefault(k, (name, prop["type"]))

    def get(self, name: str) -> dict | None:
        found = self.attrs.get(_norm(name))
        return found[1] if found else None

    def names(self) -> list[str]:
        return sorted(camel_to_snake(g) for g, _ in self.attrs.values())

    def child(self, t: dict) -> tuple[ReadSchema | None, bool]:
        """The schema behind an attribute's type: (schema, is a block or list of objects)."""
        fqn = t.get("fqn")
        if not fqn or fqn.startswith("cdktf."):
            return None, False
        cls = self.asm.type(fqn)
        if not cls or cls.get("kind") != "class":
            return None, False
        if cls.get("base") == "cdktf.ComplexList" or fqn.endswith("List"):
            for method in cls.get("methods", []):
                if method["name"] == "get":
                    return ReadSchema(self.asm, method["returns"]["type"]["fqn"]), True
            return None, True
        if cls.get("base") == "cdktf.ComplexMap" or fqn.endswith("Map"):
            return None, False
        return ReadSchema(self.asm, fqn), True


class ResourceSchema(BlockSchema):
    def __init__(self, asm: Assembly, tf_type: str, config_fqn: str | None, class_fqn: str):
        super().__init__(asm, config_fqn)
        self.tf_type = tf_type
        self.class_fqn = class_fqn

    @functools.cached_property
    def read(self) -> ReadSchema:
        return ReadSchema(self.asm, self.class_fqn, self)


@functools.cache
def assembly(source: str) -> Assembly | None:
    """The assembly for a provider source address, or None when no package is known/installed."""
    dist = PROVIDER_PACKAGES.get(source.lower().removeprefix("registry.terraform.io/"))
    if dist is None:
        return None
    try:
        return Assembly(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Finding:
    file: str
    line: int
    address: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.address}: {self.path}" if self.path else self.address
        return f"{self.file}:{self.line}: {where}: {self.message}"


RESOURCE_META_ATTRS = {"count", "for_each", "depends_on", "provider"}
RESOURCE_META_BLOCKS = {"lifecycle", "connection", "provisioner"}
DATA_META_BLOCKS = {"lifecycle"}
LIFECYCLE_ATTRS = {"create_before_destroy", "prevent_destroy", "ignore_changes", "replace_triggered_by"}
CONDITION_ATTRS = {"condition", "error_message"}
DYNAMIC_ATTRS = {"for_each", "iterator", "labels"}
NAMESPACES = {"var", "local", "data", "module", "path", "terraform", "count", "each", "self"}


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checker:
    def __init__(self, config: tf_config.Config):
        self.config = config
        self.prefix = config.root.name + "/"
        self.findings: list[Finding] = []
        self.required = config.required_providers

    # -- helpers ---------------------------------------------------------------------
    def add(self, file, line, address, path, message):
        self.findings.append(Finding(self.prefix + file, line, address, path, message))

    def source_of(self, local: str) -> str:
        entry = self.required.get(local) or {}
        return entry.get("source") or f"hashicorp/{local}"

    def provider_local(self, block: tf_config.Block) -> str:
        attr = block.attributes.get("provider")
        if attr is not None:
            refs = hcl_eval.references(attr.expr)
            if refs:
                return refs[0].root
        return block.labels[0].split("_", 1)[0]

    def schema_for(self, kind: str, tf_type: str, local: str | None = None):
        """(assembly, schema or None); assembly None when the provider has no schema here."""
        local = local or tf_type.split("_", 1)[0]
        asm = assembly(self.source_of(local))
        if asm is None:
            return None, None
        return asm, asm.class_schema(kind, tf_type)

    # -- entry -----------------------------------------------------------------------
    def run(self) -> list[Finding]:
        cfg = self.config
        for block in cfg.blocks:
            if block.type in ("resource", "data"):
                self.check_resource(block)
            elif block.type == "provider":
                self.check_provider(block)
            elif block.type == "moved":
                self.check_moved(block)
            elif block.type in ("locals", "output"):
                address = "locals" if block.type == "locals" else f"output.{block.labels[0]}"
                for attr in block.attributes.values():
                    self.check_refs(attr, address, attr.name, None)
                for sub in block.blocks:  # output preconditions
                    for attr in sub.attributes.values():
                        self.check_refs(attr, address, f"{sub.type}.{attr.name}", None)
            elif block.type == "variable":
                address = f"var.{block.labels[0]}"
                for name, attr in block.attributes.items():
                    if name != "type":  # a type constraint, not an expression
                        self.check_refs(attr, address, name, None)
                for sub in block.blocks:
                    for attr in sub.attributes.values():
                        self.check_refs(attr, address, f"{sub.type}.{attr.name}", None)
        # duplicate declarations
        seen: dict[tuple, tf_config.Block] = {}
        for block in cfg.blocks:
            if block.type in ("resource", "data", "variable", "output", "module"):
                key = (block.type, *block.labels)
                if key in seen:
                    self.add(
                        block.file,
                        block.line,
                        " ".join([block.type, *block.labels]),
                        "",
                        f"declared twice (also at {seen[key].file}:{seen[key].line})",
                    )
                seen[key] = block
        local_seen: dict[str, tf_config.Attribute] = {}
        for block in cfg.of_type("locals"):
            for name, attr in block.attributes.items():
                if name in local_seen:
                    self.add(attr.file, attr.line, f"local.{name}", "", "declared twice")
                local_seen[name] = attr
        return sorted(set(self.findings))

    # -- resources and data sources ------------------------------------------------
    def check_resource(self, block: tf_config.Block) -> None:
        kind = block.type
        tf_type, name = block.labels[0], block.labels[1]
        address = f"{tf_type}.{name}" if kind == "resource" else f"data.{tf_type}.{name}"
        local = self.provider_local(block)
        asm, schema = self.schema_for(kind, tf_type, local)
        if asm is None:
            self.add(
                block.file,
                block.line,
                address,
                "",
                f"no schema for provider {self.source_of(local)!r}: add its cdktf-cdktf-provider-* "
                "package to requirements-dev.txt and to PROVIDER_PACKAGES",
            )
            return
        if schema is None:
            what = "resource type" if kind == "resource" else "data source"
            self.add(
                block.file,
                block.line,
                address,
                "",
                f"unknown {what} {tf_type!r} in {asm.source} {asm.version}{_suggest(tf_type, asm.names(kind))}",
            )
            return
        if "count" in block.attributes and "for_each" in block.attributes:
            self.add(block.file, block.line, address, "", "count and for_each are both set")
        if "provider" in block.attributes:
            if local not in self.required and local != tf_type.split("_", 1)[0]:
                self.add(
                    block.file,
                    block.attributes["provider"].line,
                    address,
                    "provider",
                    f"provider {local!r} is not in required_providers",
                )
        meta_blocks = RESOURCE_META_BLOCKS if kind == "resource" else DATA_META_BLOCKS
        self.check_body(block, schema, address, "", block, frozenset(), top=(kind, meta_blocks, schema))

    def check_body(
        self, block, schema: BlockSchema, address: str, path: str, owner, bound, top=None, require: bool = True
    ) -> None:
        """Arguments and blocks of `block` against `schema`; `owner` is the resource block
        (for count/each), `bound` the iterator names of enclosing dynamic blocks."""
        prefix = path + "." if path else ""
        for dup in block.duplicates:
            self.add(dup.file, dup.line, address, prefix + dup.name, "argument set twice")
        for name, attr in block.attributes.items():
            where = prefix + name
            if top and name in RESOURCE_META_ATTRS:
                if name == "provider":
                    continue
                if name == "depends_on":
                    self.check_depends_on(attr, address)
                    continue
                self.check_refs(attr, address, where, owner, bound)
                continue
            if name in schema.arguments:
                self.check_refs(attr, address, where, owner, bound)
            elif name in schema.blocks:
                self.add(
                    attr.file,
                    attr.line,
                    address,
                    where,
                    f"{name!r} is a block: write `{name} {{ ... }}`, not `{name} = ...`",
                )
            else:
                self.check_refs(attr, address, where, owner, bound)
                self.add(
                    attr.file,
                    attr.line,
                    address,
                    where,
                    f"unknown argument {name!r}{_suggest(name, list(schema.arguments) + list(schema.blocks))}",
                )
        static: dict[str, list] = {}
        dynamic: dict[str, list] = {}
        for sub in block.blocks:
            if top and sub.type in top[1]:
                self.check_meta_block(sub, address, owner, top[2])
                continue
            if sub.type == "dynamic":
                label = sub.labels[0] if sub.labels else ""
                where = f'{prefix}dynamic "{label}"'
                dynamic.setdefault(label, []).append(sub)
                if label not in schema.blocks:
                    self.check_refs_within(sub, address, where, owner, bound | {label})
                    if label in schema.arguments:
                        self.add(
                            sub.file,
                            sub.line,
                            address,
                            where,
                            f"{label!r} is an argument, not a block: dynamic blocks make blocks only",
                        )
                    else:
                        self.add(
                            sub.file,
                            sub.line,
                            address,
                            where,
                            f"unknown block {label!r}{_suggest(label, schema.blocks)}",
                        )
                    continue
                iterator = label
                for aname, attr in sub.attributes.items():
                    if aname not in DYNAMIC_ATTRS:
                        self.add(
                            attr.file,
                            attr.line,
                            address,
                            f"{where}.{aname}",
                            f"unknown argument {aname!r} in a dynamic block",
                        )
                    elif aname == "iterator":
                        refs = hcl_eval.references(attr.expr)
                        iterator = refs[0].root if refs else label
                    if aname == "for_each":
                        self.check_refs(attr, address, f"{where}.for_each", owner, bound)
                if "for_each" not in sub.attributes:
                    self.add(sub.file, sub.line, address, where, "dynamic block without for_each")
                inner = bound | {iterator}
                if "labels" in sub.attributes:
                    self.check_refs(sub.attributes["labels"], address, f"{where}.labels", owner, inner)
                contents = sub.blocks_named("content")
                for other in sub.blocks:
                    if other.type != "content":
                        self.add(
                            other.file,
                            other.line,
                            address,
                            f"{where}.{other.type}",
                            f"unknown block {other.type!r} in a dynamic block",
                        )
                if len(contents) != 1:
                    self.add(
                        sub.file,
                        sub.line,
                        address,
                        where,
                        f"a dynamic block needs exactly one content block, has {len(contents)}",
                    )
                for content in contents:
                    self.check_body(content, schema.nested(label), address, f"{where}.content", owner, frozenset(inner))
                continue
            where = prefix + sub.type
            if sub.type not in schema.blocks:
                self.check_refs_within(sub, address, where, owner, bound)
            if sub.type in schema.blocks:
                static.setdefault(sub.type, []).append(sub)
                if sub.labels:
                    self.add(sub.file, sub.line, address, where, f"block {sub.type!r} takes no labels")
                self.check_body(sub, schema.nested(sub.type), address, where, owner, bound)
            elif sub.type in schema.arguments:
                self.add(
                    sub.file,
                    sub.line,
                    address,
                    where,
                    f"{sub.type!r} is an argument: write `{sub.type} = ...`, not a block",
                )
            else:
                self.add(
                    sub.file,
                    sub.line,
                    address,
                    where,
                    f"unknown block {sub.type!r}{_suggest(sub.type, list(schema.blocks) + list(schema.arguments))}",
                )
        for name, nb in schema.blocks.items():
            where = prefix + name
            n_static, n_dynamic = len(static.get(name, [])), len(dynamic.get(name, []))
            if nb.single and n_static > 1:
                second = static[name][1]
                self.add(
                    second.file,
                    second.line,
                    address,
                    where,
                    f"block {name!r} may appear at most once; it appears {n_static} times",
                )
            elif nb.single and n_static and n_dynamic:
                d = dynamic[name][0]
                self.add(
                    d.file,
                    d.line,
                    address,
                    where,
                    f"block {name!r} may appear at most once: given both as a block and by a dynamic block",
                )
            if nb.required and not n_static and not n_dynamic:
                self.add(block.file, block.line, address, where, f"missing required block {name!r}")
        for name, arg in schema.arguments.items():
            if require and arg.required and name not in block.attributes:
                self.add(block.file, block.line, address, prefix + name, f"missing required argument {name!r}")

    def check_refs_within(self, block, address, path, owner, bound) -> None:
        """References in a block whose schema is unknown (a misspelt block): still checked."""
        for attr in block.attributes.values():
            self.check_refs(attr, address, f"{path}.{attr.name}", owner, bound)
        for sub in block.blocks:
            self.check_refs_within(sub, address, f"{path}.{sub.type}", owner, bound)

    def check_meta_block(self, sub, address, owner, schema) -> None:
        where = sub.type
        if sub.type != "lifecycle":
            # connection/provisioner: provisioner-specific schemas; references still checked
            self.check_refs_within(sub, address, where, owner, frozenset({"self"}))
            return
        is_data = address.startswith("data.")
        allowed = set() if is_data else LIFECYCLE_ATTRS
        for name, attr in sub.attributes.items():
            if name not in allowed:
                self.add(
                    attr.file,
                    attr.line,
                    address,
                    f"lifecycle.{name}",
                    f"unknown lifecycle argument {name!r}{_suggest(name, allowed)}",
                )
            elif name == "ignore_changes":
                self.check_ignore_changes(attr, address, schema)
            elif name == "replace_triggered_by":
                self.check_refs(attr, address, "lifecycle.replace_triggered_by", owner)
        for cond in sub.blocks:
            if cond.type not in ("precondition", "postcondition"):
                self.add(
                    cond.file, cond.line, address, f"lifecycle.{cond.type}", f"unknown lifecycle block {cond.type!r}"
                )
                continue
            for name, attr in cond.attributes.items():
                if name not in CONDITION_ATTRS:
                    self.add(
                        attr.file, attr.line, address, f"lifecycle.{cond.type}.{name}", f"unknown argument {name!r}"
                    )
                else:
                    bound = frozenset({"self"}) if cond.type == "postcondition" else frozenset()
                    self.check_refs(attr, address, f"lifecycle.{cond.type}.{name}", owner, bound)
            for name in CONDITION_ATTRS - set(cond.attributes):
                self.add(cond.file, cond.line, address, f"lifecycle.{cond.type}", f"missing required argument {name!r}")

    def check_ignore_changes(self, attr, address, schema: BlockSchema) -> None:
        expr = attr.expr
        if isinstance(expr, hcl_eval.Var) and expr.name == "all":
            return
        if not isinstance(expr, hcl_eval.TupleCons):
            self.add(
                attr.file, attr.line, address, "lifecycle.ignore_changes", "must be a list of argument names or `all`"
            )
            return
        for item in expr.items:
            refs = hcl_eval.references(item)
            if not refs:
                continue
            root = refs[0].root
            if root not in schema.arguments and root not in schema.blocks:
                self.add(
                    attr.file,
                    attr.line,
                    address,
                    "lifecycle.ignore_changes",
                    f"{root!r} is not an argument of {schema.tf_type}{_suggest(root, schema.arguments)}",
                )

    def check_depends_on(self, attr, address) -> None:
        expr = attr.expr
        if not isinstance(expr, hcl_eval.TupleCons):
            self.add(attr.file, attr.line, address, "depends_on", "must be a list of references")
            return
        for item in expr.items:
            refs = hcl_eval.references(item)
            if len(refs) != 1:
                self.add(attr.file, attr.line, address, "depends_on", "each element must be a single reference")
                continue
            ref = refs[0]
            self.check_ref(ref, attr, address, "depends_on", None)
            steps = ref.steps[1:] if ref.root != "data" else ref.steps[2:]
            if ref.root == "module":
                steps = ref.steps[1:]
            if any(s[0] == "attr" for s in steps):
                self.add(
                    attr.file,
                    attr.line,
                    address,
                    "depends_on",
                    f"{ref.text()}: depends_on takes whole resources, not attributes",
                )

    # -- provider blocks ---------------------------------------------------------------
    def check_provider(self, block) -> None:
        local = block.labels[0]
        address = f'provider "{local}"'
        asm = assembly(self.source_of(local))
        if asm is None:
            self.add(block.file, block.line, address, "", f"no schema for provider {self.source_of(local)!r}")
            return
        schema = asm.class_schema("provider", local)
        if schema is None:
            return
        attrs = {k: v for k, v in block.attributes.items() if k not in ("alias", "version")}
        shadow = tf_config.Block(
            block.type, block.labels, attrs, block.blocks, block.file, block.line, block.end_line, block.duplicates
        )
        # A provider's required arguments may come from the environment: names only.
        self.check_body(shadow, schema, address, "", None, frozenset(), require=False)

    # -- moved blocks ----------------------------------------------------------------
    def check_moved(self, block) -> None:
        for end in ("from", "to"):
            attr = block.attributes.get(end)
            if attr is None:
                self.add(block.file, block.line, "moved", end, f"missing {end!r}")
                continue
            refs = hcl_eval.references(attr.expr)
            if len(refs) != 1:
                self.add(attr.file, attr.line, "moved", end, "must be a single resource address")
                continue
            ref = refs[0]
            if ref.root == "module":
                continue
            if ref.root == "data":
                self.add(attr.file, attr.line, "moved", end, "data sources cannot be moved")
                continue
            tf_type = ref.root
            name = ref.steps[0][1] if ref.steps and ref.steps[0][0] == "attr" else None
            declared = self.config.resources.get((tf_type, name))
            asm, schema = self.schema_for("resource", tf_type, self.provider_local(declared) if declared else None)
            if asm is not None and schema is None:
                self.add(
                    attr.file,
                    attr.line,
                    "moved",
                    end,
                    f"unknown resource type {tf_type!r}{_suggest(tf_type, asm.names('resource'))}",
                )
                continue
            if end == "from":
                still = self.config.resources.get((tf_type, name))
                keyed = len(ref.steps) > 1 and ref.steps[1][0] == "index"
                if (
                    still is not None
                    and not keyed
                    and not ("count" in still.attributes or "for_each" in still.attributes)
                ):
                    self.add(
                        attr.file,
                        attr.line,
                        "moved",
                        end,
                        f"{ref.text()}: moves from {tf_type}.{name}, which is still declared",
                    )
                elif (
                    still is not None and keyed and "for_each" in still.attributes and isinstance(ref.steps[1][1], str)
                ):
                    keys = self.possible_keys(still)
                    if keys is not None and ref.steps[1][1] in keys:
                        self.add(
                            attr.file,
                            attr.line,
                            "moved",
                            end,
                            f"{ref.text()}: moves from an instance that is still declared (a key of its for_each)",
                        )
            if end == "to":
                target = self.config.resources.get((tf_type, name))
                if target is None:
                    self.add(
                        attr.file,
                        attr.line,
                        "moved",
                        end,
                        f"{ref.text()}: moves to {tf_type}.{name}, which is not declared",
                    )
                    continue
                keyed = len(ref.steps) > 1 and ref.steps[1][0] == "index"
                repeated = "count" in target.attributes or "for_each" in target.attributes
                if keyed and not repeated:
                    self.add(
                        attr.file,
                        attr.line,
                        "moved",
                        end,
                        f"{ref.text()}: {tf_type}.{name} has no count or for_each, so no instance key",
                    )
                if "count" in target.attributes and keyed and not isinstance(ref.steps[1][1], int):
                    self.add(
                        attr.file,
                        attr.line,
                        "moved",
                        end,
                        f"{ref.text()}: {tf_type}.{name} uses count: its keys are numbers",
                    )
                if "for_each" in target.attributes and keyed and not isinstance(ref.steps[1][1], str):
                    self.add(
                        attr.file,
                        attr.line,
                        "moved",
                        end,
                        f"{ref.text()}: {tf_type}.{name} uses for_each: its keys are strings",
                    )

    # -- for_each keys ---------------------------------------------------------------
    def possible_keys(self, block) -> set[str] | None:
        """Every key the block's for_each can have, over both branches of its conditionals
        (so a key that exists only with an optional feature on still counts), or None when
        they depend on values known only at apply."""
        cache = self.__dict__.setdefault("_keys", {})
        if id(block) not in cache:
            cache[id(block)] = self._possible(block.attributes["for_each"].expr, set())
        return cache[id(block)]

    def _possible(self, node, seen) -> set[str] | None:
        if isinstance(node, hcl_eval.Paren):
            return self._possible(node.expr, seen)
        if isinstance(node, hcl_eval.Cond):
            a, b = self._possible(node.then, seen), self._possible(node.other, seen)
            return None if a is None or b is None else a | b
        if (
            isinstance(node, hcl_eval.GetAttr)
            and isinstance(node.source, hcl_eval.Var)
            and node.source.name == "local"
            and node.name in self.config.locals
            and node.name not in seen
        ):
            return self._possible(self.config.locals[node.name].expr, seen | {node.name})
        if isinstance(node, hcl_eval.ObjectCons):
            keys = set()
            for k, _ in node.items:
                if not isinstance(k, hcl_eval.Lit):
                    return None
                keys.add(str(k.value))
            return keys
        resolver = self.__dict__.get("_resolver") or self.__dict__.setdefault(
            "_resolver", tf_config.ConfigResolver(self.config)
        )
        try:
            value = resolver.evaluator().eval(node)
        except (hcl_eval.EvalError, KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, RecursionError):
            return None
        if isinstance(value, dict):
            return set(value)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return set(value)
        return None

    # -- references ------------------------------------------------------------------
    def check_refs(self, attr, address, path, owner, bound=frozenset()) -> None:
        for ref in hcl_eval.references(attr.expr, bound):
            self.check_ref(ref, attr, address, path, owner)

    def check_ref(self, ref: hcl_eval.Ref, attr, address, path, owner) -> None:
        cfg = self.config
        root, steps = ref.root, list(ref.steps)

        def bad(message):
            self.add(attr.file, attr.line, address, path, f"{ref.text()}: {message}")

        def first_attr():
            return steps[0][1] if steps and steps[0][0] == "attr" else None

        if root in ("path", "terraform", "self"):
            return
        if root == "count":
            if owner is None or "count" not in owner.attributes:
                bad("count is only available in a resource or data block that sets count")
            elif first_attr() != "index":
                bad("count has only the attribute index")
            return
        if root == "each":
            if owner is None or "for_each" not in owner.attributes:
                bad("each is only available in a block that sets for_each")
            elif first_attr() not in ("key", "value"):
                bad("each has only the attributes key and value")
            return
        if root == "var":
            name = first_attr()
            if name not in cfg.variables:
                bad(f"no variable {name!r} is declared{_suggest(name or '', cfg.variables)}")
            return
        if root == "local":
            name = first_attr()
            if name not in cfg.locals:
                bad(f"no local value {name!r} is declared{_suggest(name or '', cfg.locals)}")
            return
        if root == "module":
            name = first_attr()
            if name not in cfg.modules:
                bad(f"no module {name!r} is declared")
            return
        if root == "data":
            if len(steps) < 2 or steps[0][0] != "attr" or steps[1][0] != "attr":
                bad("a data source reference is data.<type>.<name>")
                return
            tf_type, name = steps[0][1], steps[1][1]
            kind, declared, rest = "data", cfg.data_sources.get((tf_type, name)), steps[2:]
            label = f"data.{tf_type}.{name}"
        else:
            if not steps or steps[0][0] != "attr":
                bad(f"{root!r} is not a resource type, variable or local (is it a misspelt iterator?)")
                return
            tf_type, name = root, steps[0][1]
            kind, declared, rest = "resource", cfg.resources.get((tf_type, name)), steps[1:]
            label = f"{tf_type}.{name}"
        # the provider of the declared block (its `provider` meta-argument), else the prefix's
        asm, schema = self.schema_for(kind, tf_type, self.provider_local(declared) if declared else None)
        if asm is not None and schema is None:
            what = "resource type" if kind == "resource" else "data source"
            bad(f"unknown {what} {tf_type!r}{_suggest(tf_type, asm.names(kind))}")
            return
        if declared is None:
            others = [n for (t, n) in (cfg.resources if kind == "resource" else cfg.data_sources) if t == tf_type]
            bad(f"{label} is not declared{_suggest(name, others)}")
            return
        if schema is None:
            return  # provider without schema: reported at the declaration
        repeated = "count" in declared.attributes or "for_each" in declared.attributes
        if rest and rest[0][0] in ("index", "splat"):
            if not repeated:
                bad(f"{label} has no count or for_each: it takes no instance key")
                return
            key = rest[0][1] if rest[0][0] == "index" else None
            if key is not None and "count" in declared.attributes and not isinstance(key, int):
                bad(f"{label} uses count: its instance keys are numbers, not {key!r}")
                return
            if key is not None and "for_each" in declared.attributes:
                if not isinstance(key, str):
                    bad(f"{label} uses for_each: its instance keys are strings, not {key!r}")
                    return
                keys = self.possible_keys(declared)
                if keys is not None and key not in keys:
                    bad(f"{label} has no instance {key!r}: its for_each keys are {sorted(keys)}{_suggest(key, keys)}")
                    return
            rest = rest[1:]
        elif (
            rest and repeated and path not in ("depends_on",) and not path.startswith("lifecycle.replace_triggered_by")
        ):
            bad(
                f"{label} uses {'count' if 'count' in declared.attributes else 'for_each'}: "
                'name an instance ([0], ["key"]) or all of them ([*]) before the attribute'
            )
            return
        self.check_attr_path(rest, schema.read, label, bad)

    def check_attr_path(self, rest, read: ReadSchema, label, bad) -> None:
        here = label
        while rest:
            step = rest[0]
            if step[0] != "attr":
                return  # an index into a map or list attribute: not checked further
            name = step[1]
            t = read.get(name)
            if t is None:
                bad(f"{here} has no attribute {name!r}{_suggest(name, read.names())}")
                return
            here += "." + name
            rest = rest[1:]
            child, is_block = read.child(t)
            if not is_block or child is None:
                return
            if not rest:
                return
            if rest[0][0] == "attr":
                bad(f"{here} is a list of blocks: index it ({here}[0].{rest[0][1]}) or splat it ([*])")
                return
            rest = rest[1:]
            read = child


def check(config: tf_config.Config) -> list[Finding]:
    """Every problem found in `config` against the providers' schemas:

    * each resource and data source type exists in its provider (the provider from the
      `provider` meta-argument or the type's prefix, its source from required_providers);
      a provider without a known schema package is itself a finding;
    * each argument and block name exists, at every level, inside `dynamic` blocks' `content`
      too; an argument is not written as a block nor a block as an argument; no argument is
      set twice; a dynamic block names a block, has for_each and exactly one content block;
    * required arguments are set, and required blocks given (a dynamic block counts);
    * a block that may appear at most once appears at most once (a static block and a dynamic
      block of the same name count as two);
    * meta-arguments: count and for_each not both; lifecycle's arguments and conditions;
      ignore_changes names arguments; depends_on lists whole resources;
    * provider blocks: argument and block names against the provider's own schema;
    * moved blocks: `to` is a declared resource, keyed the way it is repeated; `from`'s type
      exists;
    * references, in every expression of every block: `var.x` and `local.x` are declared,
      `google_x.y` and `data.google_x.y` are declared, a resource with count/for_each is
      indexed (or splat) before an attribute and one without is not, the attribute exists
      (an argument or a computed attribute, following nested blocks, which Terraform exposes
      as lists and so must be indexed), and `count`/`each` are used only where set.
    """
    return _Checker(config).run()
