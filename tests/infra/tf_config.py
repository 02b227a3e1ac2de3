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
      with that instance's count.index / each, a nested block being a list of such objects;
      anything else (computed attributes such as id or email) is Unknown.
    """

    def __init__(self, config: Config, overrides: dict | None = None):
        self.config = config
        self.overrides = dict(overrides or {})
        self._locals: dict[str, object] = {}
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
        block = self.config.resources.get((rtype, name))
        if block is None:
            raise hcl_eval.EvalError(f"no resource {rtype}.{name}")
        return self._instances(block, f"{rtype}.{name}")

    def data(self, rtype, name):
        block = self.config.data_sources.get((rtype, name))
        if block is None:
            raise hcl_eval.EvalError(f"no data source {rtype}.{name}")
        return self._instances(block, f"data.{rtype}.{name}")

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
            nested = block.blocks_named(attr_name)
            if nested:
                return [self._object(b, f"{label}.{attr_name}[{i}]", scope) for i, b in enumerate(nested)]
            return hcl_eval.Unknown(f"{label}.{attr_name}")

        return hcl_eval.LazyObject(label, get)

    def evaluate(self, attr: Attribute, scope: dict | None = None):
        return hcl_eval.Evaluator(self, scope or {}).eval(attr.expr)


def json_key(k) -> str:
    import json

    return json.dumps(k)
