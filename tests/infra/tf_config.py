"""infra/*.tf as blocks and attributes, with files, lines and parsed expressions.

python-hcl2 parses each file (its lark tree keeps positions); every attribute's expression is
then parsed from its own source text by hcl_eval, so the checks see exactly what is written,
and can name the file and line of anything they report. Parsed files are cached by content,
so a test that changes one file of a copy re-parses only that file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import hcl2
import hcl_eval
from lark import Token, Tree


@dataclass
class Attribute:
    name: str
    src: str
    expr: object  # hcl_eval node
    file: str
    line: int
    end_line: int


@dataclass
class Block:
    type: str
    labels: list[str]
    attributes: dict[str, Attribute]
    blocks: list[Block]
    file: str
    line: int
    end_line: int
    # attribute names given more than once (HCL refuses that)
    duplicates: list[Attribute] = field(default_factory=list)

    def blocks_named(self, name: str) -> list[Block]:
        return [b for b in self.blocks if b.type == name]


@dataclass
class Config:
    root: Path
    blocks: list[Block]  # top-level blocks of every file, in file order
    texts: dict[str, str]  # file name -> source

    def of_type(self, kind: str) -> list[Block]:
        return [b for b in self.blocks if b.type == kind]

    @functools.cached_property
    def resources(self) -> dict[tuple[str, str], Block]:
        return {(b.labels[0], b.labels[1]): b for b in self.of_type("resource")}

    @functools.cached_property
    def data_sources(self) -> dict[tuple[str, str], Block]:
        return {(b.labels[0], b.labels[1]): b for b in self.of_type("data")}

    @functools.cached_property
    def locals(self) -> dict[str, Attribute]:
        out = {}
        for b in self.of_type("locals"):
            out.update(b.attributes)
        return out

    @functools.cached_property
    def variables(self) -> dict[str, Block]:
        return {b.labels[0]: b for b in self.of_type("variable")}

    @functools.cached_property
    def outputs(self) -> dict[str, Block]:
        return {b.labels[0]: b for b in self.of_type("output")}

    @functools.cached_property
    def modules(self) -> dict[str, Block]:
        return {b.labels[0]: b for b in self.of_type("module")}

    @functools.cached_property
    def required_providers(self) -> dict[str, dict]:
        """Local provider name -> {"source": ..., "version": ...} from terraform blocks."""
        out: dict[str, dict] = {}
        ev = hcl_eval.Evaluator(hcl_eval.Resolver())
        for tf in self.of_type("terraform"):
            for rp in tf.blocks_named("required_providers"):
                for local, attr in rp.attributes.items():
                    value = ev.eval(attr.expr)
                    if isinstance(value, str):  # pre-0.13 shorthand: version only
                        value = {"version": value}
                    out[local] = value
        return out


def _slice(src: str, node) -> str:
    return src[node.meta.start_pos : node.meta.end_pos]


def _unquote_label(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


def _body(tree: Tree | None, src: str, file: str) -> tuple[dict, list, list]:
    attributes: dict[str, Attribute] = {}
    blocks: list[Block] = []
    duplicates: list[Attribute] = []
    if tree is None:
        return attributes, blocks, duplicates
    for child in tree.children:
        if not isinstance(child, Tree):
            continue
        if child.data == "attribute":
            name = _slice(src, child.children[0]).strip()
            expr_node = [c for c in child.children if isinstance(c, Tree)][-1]
            text = _slice(src, expr_node)
            try:
                expr = hcl_eval.parse_expression(text)
            except hcl_eval.HclSyntaxError as exc:
                raise hcl_eval.HclSyntaxError(f"{file}:{child.meta.line}: {name}: {exc}") from None
            attr = Attribute(name, text, expr, file, child.meta.line, child.meta.end_line)
            if name in attributes:
                duplicates.append(attr)
            else:
                attributes[name] = attr
        elif child.data == "block":
            blocks.append(_block(child, src, file))
    return attributes, blocks, duplicates


def _block(tree: Tree, src: str, file: str) -> Block:
    kids = [c for c in tree.children]
    btype = _slice(src, kids[0]).strip()
    labels = []
    body = None
    for c in kids[1:]:
        if isinstance(c, Token):
            continue
        if c.data == "body":
            body = c
        else:
            labels.append(_unquote_label(_slice(src, c)))
    attributes, blocks, duplicates = _body(body if body is not None and not body.meta.empty else None, src, file)
    return Block(btype, labels, attributes, blocks, file, tree.meta.line, tree.meta.end_line, duplicates)


@functools.lru_cache(maxsize=256)
def parse_file(text: str, file: str) -> tuple[Block, ...]:
    tree = hcl2.parses_to_tree(text)
    body = next(c for c in tree.children if isinstance(c, Tree) and c.data == "body")
    _, blocks, _ = _body(body, text, file)
    # top-level attributes are not valid Terraform; nothing in infra/ has them
    return tuple(blocks)


def parse_attributes(text: str, file: str) -> dict[str, Attribute]:
    """The top-level attributes of an HCL file of assignments only (a .tfvars file)."""
    tree = hcl2.parses_to_tree(text)
    body = next(c for c in tree.children if isinstance(c, Tree) and c.data == "body")
    attributes, blocks, duplicates = _body(body, text, file)
    if blocks or duplicates:
        raise hcl_eval.HclSyntaxError(f"{file}: only one assignment per name, and no blocks, in a variables file")
    return attributes


def load(root: Path) -> Config:
    root = Path(root)
    blocks: list[Block] = []
    texts: dict[str, str] = {}
    for path in sorted(root.glob("*.tf")):
        text = path.read_text()
        texts[path.name] = text
        blocks.extend(parse_file(text, path.name))
    return Config(root, blocks, texts)


# --------------------------------------------------------------------------------------
# Evaluating expressions of the configuration
# --------------------------------------------------------------------------------------


class ConfigResolver(hcl_eval.Resolver):
    """Values for an evaluation of `config`'s expressions, as a plan would see them:

    * `var.x`: `overrides[x]`, else the variable's default, else Unknown(var.x);
    * `local.x`: its expression, evaluated (once);
    * a resource or data source: its instances (a list with count, a map with for_each, one
      object otherwise), whose attributes are the arguments written in the block, evaluated
      with that instance's count.index / each, a nested block being a list of such objects
      (`dynamic` blocks expanded in place, their iterator bound); anything else (computed
      attributes such as id or email) is Unknown.

    `instances(type, name)` gives a resource's instances by address, and `plain(instance)`
    turns one into a dict of everything written in it, evaluated.
    """

    def __init__(self, config: Config, overrides: dict | None = None):
        self.config = config
        self.overrides = dict(overrides or {})
        self._locals: dict[str, object] = {}
        # A resource's instances (their attributes are still evaluated on each access).
        self._instance_cache: dict[tuple, object] = {}
        self._busy: set[str] = set()

    def evaluator(self) -> hcl_eval.Evaluator:
        return hcl_eval.Evaluator(self)

    def var(self, name):
        if name in self.overrides:
            return self.overrides[name]
        block = self.config.variables.get(name)
        if block is None:
            raise hcl_eval.EvalError(f"no variable {name!r}")
        if "default" in block.attributes:
            return self.evaluator().eval(block.attributes["default"].expr)
        return hcl_eval.Unknown(f"var.{name}")

    def local(self, name):
        if name in self._locals:
            return self._locals[name]
        attr = self.config.locals.get(name)
        if attr is None:
            raise hcl_eval.EvalError(f"no local {name!r}")
        if name in self._busy:
            raise hcl_eval.EvalError(f"local.{name} refers to itself")
        self._busy.add(name)
        try:
            value = self.evaluator().eval(attr.expr)
        finally:
            self._busy.discard(name)
        self._locals[name] = value
        return value

    def resource(self, rtype, name):
        key = ("resource", rtype, name)
        if key not in self._instance_cache:
            block = self.config.resources.get((rtype, name))
            if block is None:
                raise hcl_eval.EvalError(f"no resource {rtype}.{name}")
            self._instance_cache[key] = self._instances(block, f"{rtype}.{name}")
        return self._instance_cache[key]

    def data(self, rtype, name):
        key = ("data", rtype, name)
        if key not in self._instance_cache:
            block = self.config.data_sources.get((rtype, name))
            if block is None:
                raise hcl_eval.EvalError(f"no data source {rtype}.{name}")
            self._instance_cache[key] = self._instances(block, f"data.{rtype}.{name}")
        return self._instance_cache[key]

    def _instances(self, block: Block, label: str):
        ev = self.evaluator()
        if "count" in block.attributes:
            n = ev.eval(block.attributes["count"].expr)
            n = 1 if isinstance(n, hcl_eval.Unknown) else int(n)
            return [self._object(block, f"{label}[{i}]", {"count": {"index": i}}) for i in range(n)]
        if "for_each" in block.attributes:
            coll = ev.eval(block.attributes["for_each"].expr)
            if isinstance(coll, hcl_eval.Unknown):
                return coll
            items = coll.items() if isinstance(coll, dict) else ((v, v) for v in coll)
            return {
                str(k): self._object(block, f"{label}[{json_key(k)}]", {"each": {"key": k, "value": v}})
                for k, v in items
            }
        return self._object(block, label, {})

    def _object(self, block: Block, label: str, scope: dict):
        def get(attr_name):
            if attr_name in block.attributes:
                return hcl_eval.Evaluator(self, scope).eval(block.attributes[attr_name].expr)
            if block.blocks_named(attr_name) or any(d.labels == [attr_name] for d in block.blocks_named("dynamic")):
                return self._nested(block, attr_name, label, scope)
            return hcl_eval.Unknown(f"{label}.{attr_name}")

        names = [*block.attributes]
        for b in block.blocks:
            name = b.labels[0] if b.type == "dynamic" and b.labels else b.type
            if name not in names:
                names.append(name)
        return Instance(label, get, block, tuple(names))

    def _nested(self, block: Block, name: str, label: str, scope: dict):
        """The blocks `name` of `block`, in source order: each static one, and for each
        `dynamic "name"` block one per element of its for_each (its iterator bound to
        {key, value}), where it is written."""
        out: list = []
        for b in block.blocks:
            if b.type == name:
                out.append(self._object(b, f"{label}.{name}[{len(out)}]", scope))
            elif b.type == "dynamic" and b.labels == [name]:
                coll = hcl_eval.Evaluator(self, scope).eval(b.attributes["for_each"].expr)
                if isinstance(coll, hcl_eval.Unknown):
                    return hcl_eval.Unknown(f"{label}.{name}")
                iterator = b.attributes["iterator"].src.strip() if "iterator" in b.attributes else name
                [content] = b.blocks_named("content")
                for k, v in hcl_eval.iterate(coll):
                    inner = {**scope, iterator: {"key": k, "value": v}}
                    out.append(self._object(content, f"{label}.{name}[{len(out)}]", inner))
        return out

    def instances(self, rtype: str, name: str, data: bool = False) -> dict[str, Instance]:
        """The instances of a resource (or data source) by address, as Terraform's state
        names them: `t.n`, `t.n[0]`, `t.n["key"]`."""
        found = self.data(rtype, name) if data else self.resource(rtype, name)
        if isinstance(found, hcl_eval.Unknown):
            raise hcl_eval.EvalError(f"{rtype}.{name}: count/for_each known only after apply")
        if isinstance(found, list):
            return {o.label: o for o in found}
        if isinstance(found, dict):
            return {o.label: o for o in found.values()}
        return {found.label: found}

    def evaluate(self, attr: Attribute, scope: dict | None = None):
        return hcl_eval.Evaluator(self, scope or {}).eval(attr.expr)


def json_key(k) -> str:
    import json

    return json.dumps(k)


# Meta-arguments: not part of what a resource instance renders to (read them from the block).
META_ARGUMENTS = frozenset({"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"})


class Instance(hcl_eval.LazyObject):
    """A resource instance or one of its nested blocks: a LazyObject that knows its block and
    the names written in it (arguments, blocks, dynamic blocks' names)."""

    def __init__(self, label, getter, block: Block, names: tuple[str, ...]):
        super().__init__(label, getter)
        self.block = block
        self.names = names


def plain(value):
    """A rendered value with its instances turned into dicts: every argument written in the
    block, evaluated, and every nested block as a list of such dicts (dynamic blocks
    expanded). Meta-arguments are left out. Unknowns stay Unknown."""
    if isinstance(value, Instance):
        return {n: plain(value.attr(n)) for n in value.names if n not in META_ARGUMENTS}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
