"""HCL expressions: a parser, the references they make, and an evaluator for what infra/ uses.

Terraform does not run here, so the infra checks parse the expressions themselves:

* `parse_expression(src)` turns the source text of one expression (as written in a .tf file)
  into a small syntax tree: literals, templates and heredocs (with `${}` interpolations and
  `%{if}`/`%{for}` directives), tuples and objects, `for` expressions, conditionals, unary and
  binary operators, function calls (also `provider::ns::fn()`), attribute access, indexes and
  splats (`[*]`, `.*`). This is HCL's native expression syntax
  (hashicorp/hcl, hclsyntax/spec.md), with one simplification: newlines count as white space,
  which is how they behave inside brackets, where every multi-line expression in a .tf file is.
* `references(node)` lists the static traversals an expression makes (`google_x.y[0].attr`,
  `var.x`, `local.y`, `data.t.n.attr`, `each.value`, ...), leaving out names bound by `for`
  expressions (and those the caller says are bound, such as a dynamic block's iterator).
* `Evaluator` evaluates an expression against values for `var`, `local`, resources and data
  sources supplied by a resolver, with the Terraform functions infra/ calls. A value that is
  only known after apply (a resource's computed attribute, a variable without a default) is
  an `Unknown`, which renders as a placeholder string such as `<google_x.y.id>` when it ends
  up in a string or in `jsonencode`.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class HclSyntaxError(ValueError):
    pass


class EvalError(ValueError):
    pass


# --------------------------------------------------------------------------------------
# Syntax tree
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lit:
    value: Any


@dataclass(frozen=True)
class Template:
    """A quoted string or heredoc: literal strings and nodes, in order."""

    parts: tuple


@dataclass(frozen=True)
class TemplateIf:
    cond: Any
    then: Template
    other: Template | None


@dataclass(frozen=True)
class TemplateFor:
    key_var: str | None
    value_var: str
    coll: Any
    body: Template


@dataclass(frozen=True)
class TupleCons:
    items: tuple


@dataclass(frozen=True)
class ObjectCons:
    items: tuple  # ((key node, value node), ...); a bare identifier key is a Lit


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class GetAttr:
    source: Any
    name: str


@dataclass(frozen=True)
class Index:
    source: Any
    key: Any


@dataclass(frozen=True)
class Splat:
    """`source[*]<each>` / `source.*<each>`: `each` is applied to every element (to the
    placeholder Var("*") standing for it)."""

    source: Any
    each: Any


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple
    expand_final: bool = False


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Any


@dataclass(frozen=True)
class Binary:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class Cond:
    cond: Any
    then: Any
    other: Any


@dataclass(frozen=True)
class For:
    key_var: str | None
    value_var: str
    coll: Any
    value: Any
    key: Any = None  # object for: the key expression
    cond: Any = None
    grouping: bool = False
    is_object: bool = False


@dataclass(frozen=True)
class Paren:
    expr: Any


SPLAT_ITEM = Var("*")


# --------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_BINARY_LEVELS = [
    ("||",),
    ("&&",),
    ("==", "!="),
    ("<", ">", "<=", ">="),
    ("+", "-"),
    ("*", "/", "%"),
]


class _Parser:
    def __init__(self, src: str):
        self.src = src
        self.pos = 0

    # -- scanning ------------------------------------------------------------------
    def error(self, message: str) -> HclSyntaxError:
        line = self.src.count("\n", 0, self.pos) + 1
        snippet = self.src[self.pos : self.pos + 30].replace("\n", "\\n")
        return HclSyntaxError(f"{message} at line {line} of the expression, near {snippet!r}")

    def skip_ws(self) -> None:
        src, n = self.src, len(self.src)
        while self.pos < n:
            c = src[self.pos]
            if c in " \t\r\n":
                self.pos += 1
            elif c == "#" or src.startswith("//", self.pos):
                end = src.find("\n", self.pos)
                self.pos = n if end < 0 else end + 1
            elif src.startswith("/*", self.pos):
                end = src.find("*/", self.pos + 2)
                if end < 0:
                    raise self.error("unterminated comment")
                self.pos = end + 2
            else:
                break

    def peek(self, s: str) -> bool:
        self.skip_ws()
        return self.src.startswith(s, self.pos)

    def peek_word(self, word: str) -> bool:
        self.skip_ws()
        m = _IDENT.match(self.src, self.pos)
        return bool(m) and m.group(0) == word

    def accept(self, s: str) -> bool:
        if self.peek(s):
            self.pos += len(s)
            return True
        return False

    def expect(self, s: str) -> None:
        if not self.accept(s):
            raise self.error(f"expected {s!r}")

    def ident(self) -> str:
        self.skip_ws()
        m = _IDENT.match(self.src, self.pos)
        if not m:
            raise self.error("expected a name")
        self.pos = m.end()
        return m.group(0)

    # -- expressions -----------------------------------------------------------------
    def parse_all(self):
        node = self.expression()
        self.skip_ws()
        if self.pos != len(self.src):
            raise self.error("unexpected text after the expression")
        return node

    def expression(self):
        cond = self.binary(0)
        if self.accept("?"):
            then = self.expression()
            self.expect(":")
            other = self.expression()
            return Cond(cond, then, other)
        return cond

    def binary(self, level: int):
        if level == len(_BINARY_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        ops = sorted(_BINARY_LEVELS[level], key=len, reverse=True)
        while True:
            self.skip_ws()
            for op in ops:
                if self.src.startswith(op, self.pos):
                    # `=>` and `==` share a first char with `=`; `<=`/`>=` are in ops already.
                    if op in ("<", ">") and self.src.startswith(op + "=", self.pos):
                        continue
                    self.pos += len(op)
                    right = self.binary(level + 1)
                    left = Binary(op, left, right)
                    break
            else:
                return left

    def unary(self):
        self.skip_ws()
        if self.src.startswith("!", self.pos) and not self.src.startswith("!=", self.pos):
            self.pos += 1
            return Unary("!", self.unary())
        if self.src.startswith("-", self.pos):
            self.pos += 1
            return Unary("-", self.unary())
        return self.postfix(self.primary())

    def postfix(self, node):
        while True:
            self.skip_ws()
            src = self.src
            if src.startswith("...", self.pos):
                return node
            if src.startswith(".*", self.pos):
                self.pos += 2
                return Splat(node, self.splat_tail(SPLAT_ITEM, attr_only=True))
            if src.startswith(".", self.pos):
                self.pos += 1
                self.skip_ws()
                m = _NUMBER.match(src, self.pos)
                if m and m.group(0).isdigit():  # legacy index: a.0
                    self.pos = m.end()
                    node = Index(node, Lit(int(m.group(0))))
                else:
                    node = GetAttr(node, self.ident())
                continue
            if src.startswith("[", self.pos):
                save = self.pos
                self.pos += 1
                if self.accept("*") and self.accept("]"):
                    return Splat(node, self.splat_tail(SPLAT_ITEM, attr_only=False))
                self.pos = save + 1
                key = self.expression()
                self.expect("]")
                node = Index(node, key)
                continue
            return node

    def splat_tail(self, node, attr_only: bool):
        """The traversal after a splat, applied to each element."""
        while True:
            self.skip_ws()
            if self.src.startswith(".", self.pos) and not self.src.startswith("..", self.pos):
                self.pos += 1
                self.skip_ws()
                m = _NUMBER.match(self.src, self.pos)
                if m and m.group(0).isdigit():
                    self.pos = m.end()
                    node = Index(node, Lit(int(m.group(0))))
                else:
                    node = GetAttr(node, self.ident())
                continue
            if not attr_only and self.src.startswith("[", self.pos):
                self.pos += 1
                key = self.expression()
                self.expect("]")
                node = Index(node, key)
                continue
            return node

    def primary(self):
        self.skip_ws()
        src, pos = self.src, self.pos
        if pos >= len(src):
            raise self.error("expected an expression")
        c = src[pos]
        if c == '"':
            self.pos += 1
            return self.template(quoted=True)
        if src.startswith("<<", pos):
            return self.heredoc()
        if c == "(":
            self.pos += 1
            inner = self.expression()
            self.expect(")")
            return Paren(inner)
        if c == "[":
            self.pos += 1
            if self.peek_word("for"):
                return self.for_expr(is_object=False)
            items = []
            while not self.accept("]"):
                items.append(self.expression())
                if not self.accept(","):
                    self.expect("]")
                    break
            return TupleCons(tuple(items))
        if c == "{":
            self.pos += 1
            if self.peek_word("for"):
                return self.for_expr(is_object=True)
            return self.object_cons()
        m = _NUMBER.match(src, pos)
        if m:
            self.pos = m.end()
            text = m.group(0)
            value = float(text) if any(ch in text for ch in ".eE") else int(text)
            return Lit(value)
        name = self.ident()
        if name == "true":
            return Lit(True)
        if name == "false":
            return Lit(False)
        if name == "null":
            return Lit(None)
        self.skip_ws()
        if src.startswith("::", self.pos):  # provider::ns::fn(...)
            while self.accept("::"):
                name += "::" + self.ident()
        if self.peek("("):
            self.expect("(")
            args, expand = [], False
            while not self.accept(")"):
                args.append(self.expression())
                if self.accept("..."):
                    expand = True
                if not self.accept(","):
                    self.expect(")")
                    break
            return Call(name, tuple(args), expand)
        return Var(name)

    def object_cons(self):
        items = []
        while not self.accept("}"):
            self.skip_ws()
            m = _IDENT.match(self.src, self.pos)
            key = None
            if m:
                after = self.src[m.end() :].lstrip(" \t")
                if after.startswith("=") and not after.startswith("==") or after.startswith(":"):
                    if not after.startswith("::"):
                        self.pos = m.end()
                        key = Lit(m.group(0))
            if key is None:
                key = self.expression()
            if not (self.accept("=") or self.accept(":")):
                raise self.error("expected '=' or ':' after an object key")
            value = self.expression()
            items.append((key, value))
            self.accept(",")
        return ObjectCons(tuple(items))

    def for_expr(self, is_object: bool):
        self.ident()  # "for"
        first = self.ident()
        key_var, value_var = None, first
        if self.accept(","):
            key_var, value_var = first, self.ident()
        if self.ident() != "in":
            raise self.error("expected 'in'")
        coll = self.expression()
        self.expect(":")
        key = None
        if is_object:
            key = self.expression()
            self.expect("=>")
        value = self.expression()
        grouping = is_object and self.accept("...")
        cond = None
        if self.peek_word("if"):
            self.ident()
            cond = self.expression()
        self.expect("}" if is_object else "]")
        return For(key_var, value_var, coll, value, key, cond, grouping, is_object)

    # -- templates -------------------------------------------------------------------
    def heredoc(self):
        m = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_-]*)[ \t]*\r?\n").match(self.src, self.pos)
        if not m:
            raise self.error("bad heredoc")
        strip, marker = m.group(1) == "-", m.group(2)
        body_start = m.end()
        end = re.compile(r"^[ \t]*" + re.escape(marker) + r"[ \t]*$", re.M).search(self.src, body_start)
        if not end:
            raise self.error(f"heredoc {marker} not closed")
        body = self.src[body_start : end.start()]
        self.pos = end.end()
        if strip:
            lines = body.split("\n")
            indents = [len(line) - len(line.lstrip(" \t")) for line in lines if line.strip()]
            cut = min(indents) if indents else 0
            body = "\n".join(line[cut:] for line in lines)
        sub = _Parser(body)
        return sub.template(quoted=False)

    def template(self, quoted: bool, stop_at_directive: bool = False):
        """Parse template content up to the closing quote (quoted) or the end of the text;
        with stop_at_directive, up to a %{else}/%{endif}/%{endfor}, left unconsumed."""
        parts: list = []
        buf: list[str] = []
        src, n = self.src, len(self.src)

        def flush():
            if buf:
                parts.append("".join(buf))
                buf.clear()

        while True:
            if self.pos >= n:
                if quoted:
                    raise self.error("unterminated string")
                break
            c = src[self.pos]
            if quoted and c == '"':
                self.pos += 1
                break
            if quoted and c == "\\":
                esc = src[self.pos + 1 : self.pos + 2]
                simple = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
                if esc in simple:
                    buf.append(simple[esc])
                    self.pos += 2
                elif esc == "u":
                    buf.append(chr(int(src[self.pos + 2 : self.pos + 6], 16)))
                    self.pos += 6
                elif esc == "U":
                    buf.append(chr(int(src[self.pos + 2 : self.pos + 10], 16)))
                    self.pos += 10
                else:
                    raise self.error(f"unknown escape \\{esc}")
                continue
            if src.startswith("$${", self.pos) or src.startswith("%%{", self.pos):
                buf.append(src[self.pos + 1 : self.pos + 3])
                self.pos += 3
                continue
            if src.startswith("${", self.pos):
                flush()
                self.pos += 2
                self.accept("~")
                parts.append(self.expression())
                self.accept("~")
                self.expect("}")
                continue
            if src.startswith("%{", self.pos):
                save = self.pos
                self.pos += 2
                self.accept("~")
                word = self.ident()
                if word in ("else", "endif", "endfor"):
                    if not stop_at_directive:
                        raise self.error(f"unexpected %{{{word}}}")
                    self.pos = save
                    flush()
                    return Template(tuple(parts))
                flush()
                if word == "if":
                    cond = self.expression()
                    self.close_directive()
                    then = self.template(quoted, stop_at_directive=True)
                    other = None
                    if self.directive_word() == "else":
                        self.close_directive()
                        other = self.template(quoted, stop_at_directive=True)
                    if self.directive_word() != "endif":
                        raise self.error("expected %{endif}")
                    self.close_directive()
                    parts.append(TemplateIf(cond, then, other))
                elif word == "for":
                    first = self.ident()
                    key_var, value_var = None, first
                    if self.accept(","):
                        key_var, value_var = first, self.ident()
                    if self.ident() != "in":
                        raise self.error("expected 'in'")
                    coll = self.expression()
                    self.close_directive()
                    body = self.template(quoted, stop_at_directive=True)
                    if self.directive_word() != "endfor":
                        raise self.error("expected %{endfor}")
                    self.close_directive()
                    parts.append(TemplateFor(key_var, value_var, coll, body))
                else:
                    raise self.error(f"unknown template directive {word}")
                continue
            buf.append(c)
            self.pos += 1
        flush()
        return Template(tuple(parts))

    def directive_word(self) -> str:
        self.expect("%{")
        self.accept("~")
        return self.ident()

    def close_directive(self) -> None:
        self.accept("~")
        self.expect("}")


def parse_expression(src: str):
    """The syntax tree of one HCL expression given as source text."""
    return _Parser(src).parse_all()


def parse_template(text: str):
    """A template without quotes (such as a heredoc's body)."""
    return _Parser(text).template(quoted=False)


# --------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A static traversal: a root name and the steps after it. A step is ("attr", name),
    ("index", key) with key a literal value or None when computed, or ("splat",)."""

    root: str
    steps: tuple

    def text(self) -> str:
        out = self.root
        for step in self.steps:
            if step[0] == "attr":
                out += "." + step[1]
            elif step[0] == "splat":
                out += "[*]"
            elif step[1] is None:
                out += "[...]"
            else:
                out += "[" + json.dumps(step[1]) + "]"
        return out


def _flatten(node) -> tuple[Any, list]:
    """Unwind a postfix chain down to its root: (root node, steps)."""
    steps: list = []
    while True:
        if isinstance(node, GetAttr):
            steps.append(("attr", node.name))
            node = node.source
        elif isinstance(node, Index):
            key = node.key.value if isinstance(node.key, Lit) else None
            if isinstance(node.key, Template) and all(isinstance(p, str) for p in node.key.parts):
                key = "".join(node.key.parts)
            steps.append(("index", key))
            node = node.source
        else:
            steps.reverse()
            return node, steps


def references(node, bound: frozenset[str] = frozenset()) -> list[Ref]:
    """The static traversals in an expression, in source order, minus names in `bound`
    (and the variables of `for` expressions and template `for` directives)."""
    out: list[Ref] = []
    _refs(node, bound, out)
    return out


def _refs(node, bound, out) -> None:
    if node is None or isinstance(node, (Lit, str)):
        return
    if isinstance(node, (GetAttr, Index, Var)):
        root, steps = _flatten(node)
        if isinstance(root, Var):
            if root.name not in bound and root != SPLAT_ITEM:
                out.append(Ref(root.name, tuple(steps)))
        else:
            _refs(root, bound, out)
        # index expressions inside the chain
        n = node
        while isinstance(n, (GetAttr, Index)):
            if isinstance(n, Index):
                _refs(n.key, bound, out)
            n = n.source
        return
    if isinstance(node, Splat):
        root, steps = _flatten(node.source)
        each_root, each_steps = _flatten(node.each)
        if isinstance(root, Var) and root.name not in bound:
            out.append(Ref(root.name, tuple(steps) + (("splat",),) + tuple(each_steps)))
        elif not isinstance(root, Var):
            _refs(root, bound, out)
        n = node.source
        while isinstance(n, (GetAttr, Index)):
            if isinstance(n, Index):
                _refs(n.key, bound, out)
            n = n.source
        n = node.each
        while isinstance(n, (GetAttr, Index)):
            if isinstance(n, Index):
                _refs(n.key, bound, out)
            n = n.source
        return
    if isinstance(node, Template):
        for part in node.parts:
            _refs(part, bound, out)
        return
    if isinstance(node, TemplateIf):
        _refs(node.cond, bound, out)
        _refs(node.then, bound, out)
        _refs(node.other, bound, out)
        return
    if isinstance(node, TemplateFor):
        _refs(node.coll, bound, out)
        inner = bound | {node.value_var} | ({node.key_var} if node.key_var else set())
        _refs(node.body, frozenset(inner), out)
        return
    if isinstance(node, TupleCons):
        for item in node.items:
            _refs(item, bound, out)
        return
    if isinstance(node, ObjectCons):
        for key, value in node.items:
            if not (isinstance(key, Lit)):
                # `(expr) = v` or a bare traversal used as a key: HCL reads a lone
                # identifier as a string, anything else as an expression
                _refs(key, bound, out)
            _refs(value, bound, out)
        return
    if isinstance(node, Call):
        for arg in node.args:
            _refs(arg, bound, out)
        return
    if isinstance(node, Unary):
        _refs(node.operand, bound, out)
        return
    if isinstance(node, Binary):
        _refs(node.left, bound, out)
        _refs(node.right, bound, out)
        return
    if isinstance(node, Cond):
        _refs(node.cond, bound, out)
        _refs(node.then, bound, out)
        _refs(node.other, bound, out)
        return
    if isinstance(node, For):
        _refs(node.coll, bound, out)
        inner = frozenset(bound | {node.value_var} | ({node.key_var} if node.key_var else set()))
        _refs(node.key, inner, out)
        _refs(node.value, inner, out)
        _refs(node.cond, inner, out)
        return
    if isinstance(node, Paren):
        _refs(node.expr, bound, out)
        return
    raise TypeError(f"unknown node {node!r}")


def calls(node) -> list[str]:
    """Names of the functions an expression calls."""
    out: list[str] = []

    def walk(n):
        if isinstance(n, Call):
            out.append(n.name)
        if isinstance(n, tuple):
            for x in n:
                walk(x)
        elif hasattr(n, "__dataclass_fields__"):
            for f in n.__dataclass_fields__:
                walk(getattr(n, f))

    walk(node)
    return out


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unknown:
    """A value known only after apply (or a variable without a default)."""

    label: str

    def placeholder(self) -> str:
        return f"<{self.label}>"


class Resolver:
    """Values of the names an expression refers to. Override what the configuration has."""

    def var(self, name: str):
        return Unknown(f"var.{name}")

    def local(self, name: str):
        return Unknown(f"local.{name}")

    def resource(self, rtype: str, name: str):
        return Unknown(f"{rtype}.{name}")

    def data(self, rtype: str, name: str):
        return Unknown(f"data.{rtype}.{name}")

    def other(self, root: str):
        if root == "path":
            return {"module": ".", "root": ".", "cwd": "."}
        if root == "terraform":
            return {"workspace": "default"}
        raise EvalError(f"unknown name {root!r}")


class Evaluator:
    def __init__(self, resolver: Resolver, scope: dict | None = None):
        self.resolver = resolver
        self.scope = dict(scope or {})

    def with_scope(self, **names) -> Evaluator:
        return Evaluator(self.resolver, {**self.scope, **names})

    # -- dispatch --------------------------------------------------------------------
    def eval(self, node):
        method = getattr(self, "_" + type(node).__name__)
        return method(node)

    def _Lit(self, node):
        return node.value

    def _Paren(self, node):
        return self.eval(node.expr)

    def _Template(self, node):
        if len(node.parts) == 1 and not isinstance(node.parts[0], (str, TemplateIf, TemplateFor)):
            return self.eval(node.parts[0])  # "${x}" alone is x itself, of x's type (HCL)
        out = []
        for part in node.parts:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, TemplateIf):
                cond = self.eval(part.cond)
                branch = part.then if truthy(cond) else part.other
                if branch is not None:
                    out.append(to_template_string(self.eval(branch)))
            elif isinstance(part, TemplateFor):
                for k, v in iterate(self.eval(part.coll)):
                    names = {part.value_var: v}
                    if part.key_var:
                        names[part.key_var] = k
                    out.append(to_template_string(self.with_scope(**names).eval(part.body)))
            else:
                out.append(to_template_string(self.eval(part)))
        return "".join(out)

    def _TupleCons(self, node):
        return [self.eval(i) for i in node.items]

    def _ObjectCons(self, node):
        out = {}
        for key, value in node.items:
            k = self.eval(key)
            if isinstance(k, Unknown):
                k = k.placeholder()
            out[to_string(k)] = self.eval(value)
        return out

    def _Var(self, node):
        name = node.name
        if name in self.scope:
            return self.scope[name]
        if name in ("var", "local", "data") or name in ("path", "terraform", "count", "each", "self"):
            return _Namespace(self, name)
        return _ResourceType(self, name)

    def _GetAttr(self, node):
        return get_attr(self.eval(node.source), node.name)

    def _Index(self, node):
        return get_index(self.eval(node.source), self.eval(node.key))

    def _Splat(self, node):
        source = self.eval(node.source)
        if isinstance(source, Unknown):
            return Unknown(source.label + "[*]")
        if source is None:
            return []
        items = source if isinstance(source, list) else list(source.values()) if isinstance(source, dict) else [source]
        return [self.with_scope(**{"*": item}).eval(node.each) for item in items]

    def _Call(self, node):
        name = node.name
        if name == "can":
            try:
                value = self.eval(node.args[0])
                return not isinstance(value, Unknown) or True
            except (EvalError, ValueError, KeyError, IndexError, TypeError):
                return False
        if name == "try":
            for arg in node.args:
                try:
                    return self.eval(arg)
                except (EvalError, ValueError, KeyError, IndexError, TypeError):
                    continue
            raise EvalError("try(): no argument could be evaluated")
        fn = FUNCTIONS.get(name)
        if fn is None:
            raise EvalError(f"function {name}() is not implemented in hcl_eval")
        args = [self.eval(a) for a in node.args]
        if node.expand_final:
            args = args[:-1] + list(args[-1])
        if any(isinstance(a, Unknown) for a in args) and name not in _UNKNOWN_AWARE:
            return Unknown(f"{name}(...)")
        return fn(*args)

    def _Unary(self, node):
        value = self.eval(node.operand)
        if isinstance(value, Unknown):
            return value
        if node.op == "!":
            return not truthy(value)
        return _num(-value)

    def _Binary(self, node):
        op = node.op
        if op in ("&&", "||"):
            left = self.eval(node.left)
            if not isinstance(left, Unknown):
                if op == "&&" and not truthy(left):
                    return False
                if op == "||" and truthy(left):
                    return True
            right = self.eval(node.right)
            if isinstance(left, Unknown) or isinstance(right, Unknown):
                return Unknown(f"({op})")
            return truthy(right)
        left, right = self.eval(node.left), self.eval(node.right)
        if isinstance(left, Unknown) or isinstance(right, Unknown):
            if op in ("==", "!=") and (left is None or right is None):
                # a variable without a default is never null here: it has to be set
                return op == "!="
            return Unknown(f"({op})")
        if op == "==":
            return left == right
        if op == "!=":
            return left != right
        left, right = to_number(left), to_number(right)
        if op == "<":
            return left < right
        if op == ">":
            return left > right
        if op == "<=":
            return left <= right
        if op == ">=":
            return left >= right
        if op == "+":
            return _num(left + right)
        if op == "-":
            return _num(left - right)
        if op == "*":
            return _num(left * right)
        if op == "/":
            if right == 0:
                raise EvalError("division by zero")
            return _num(left / right)
        if op == "%":
            return _num(math.fmod(left, right))
        raise EvalError(f"operator {op}")

    def _Cond(self, node):
        cond = self.eval(node.cond)
        if isinstance(cond, Unknown):
            raise EvalError(f"condition depends on {cond.placeholder()}, known only after apply")
        return self.eval(node.then if truthy(cond) else node.other)

    def _For(self, node):
        coll = self.eval(node.coll)
        if isinstance(coll, Unknown):
            raise EvalError(f"for expression over {coll.placeholder()}, known only after apply")
        out_list, out_obj = [], {}
        for k, v in iterate(coll):
            names = {node.value_var: v}
            if node.key_var:
                names[node.key_var] = k
            inner = self.with_scope(**names)
            if node.cond is not None:
                c = inner.eval(node.cond)
                if isinstance(c, Unknown):
                    raise EvalError("for expression filter known only after apply")
                if not truthy(c):
                    continue
            value = inner.eval(node.value)
            if node.is_object:
                key = inner.eval(node.key)
                key = key.placeholder() if isinstance(key, Unknown) else to_string(key)
                if node.grouping:
                    out_obj.setdefault(key, []).append(value)
                else:
                    if key in out_obj:
                        raise EvalError(f"duplicate key {key!r} in a for expression")
                    out_obj[key] = value
            else:
                out_list.append(value)
        return out_obj if node.is_object else out_list


class _Namespace:
    """`var`, `local`, `data`, `count`, `each`, `path`, ...: resolved at the next attribute."""

    def __init__(self, ev: Evaluator, name: str):
        self.ev, self.name = ev, name

    def attr(self, name: str):
        r = self.ev.resolver
        if self.name == "var":
            return r.var(name)
        if self.name == "local":
            return r.local(name)
        if self.name == "data":
            return _DataType(self.ev, name)
        if self.name in ("count", "each", "self"):
            if self.name in self.ev.scope:
                return get_attr(self.ev.scope[self.name], name)
            raise EvalError(f"{self.name}.{name} used outside a resource with {self.name}")
        return get_attr(r.other(self.name), name)


class _DataType:
    def __init__(self, ev: Evaluator, rtype: str):
        self.ev, self.rtype = ev, rtype

    def attr(self, name: str):
        return self.ev.resolver.data(self.rtype, name)


class _ResourceType:
    def __init__(self, ev: Evaluator, rtype: str):
        self.ev, self.rtype = ev, rtype

    def attr(self, name: str):
        return self.ev.resolver.resource(self.rtype, name)


class LazyObject:
    """An object whose attributes are computed on demand (a resource instance)."""

    def __init__(self, label: str, getter: Callable[[str], Any]):
        self.label, self.getter = label, getter

    def attr(self, name: str):
        return self.getter(name)


def get_attr(value, name: str):
    if isinstance(value, Unknown):
        return Unknown(f"{value.label}.{name}")
    if isinstance(value, (_Namespace, _DataType, _ResourceType, LazyObject)):
        return value.attr(name)
    if isinstance(value, dict):
        if name not in value:
            raise EvalError(f"object has no attribute {name!r}")
        return value[name]
    raise EvalError(f"cannot read attribute {name!r} of {type(value).__name__}")


def get_index(value, key):
    if isinstance(value, Unknown):
        k = key.placeholder() if isinstance(key, Unknown) else json.dumps(key)
        return Unknown(f"{value.label}[{k}]")
    if isinstance(key, Unknown):
        return Unknown(f"index {key.placeholder()}")
    if isinstance(value, list):
        i = int(to_number(key))
        if not 0 <= i < len(value):
            raise EvalError(f"index {i} out of range for a list of {len(value)}")
        return value[i]
    if isinstance(value, dict):
        k = to_string(key)
        if k not in value:
            raise EvalError(f"no element {k!r}")
        return value[k]
    if isinstance(value, LazyObject):
        return value.attr(to_string(key))
    raise EvalError(f"cannot index {type(value).__name__}")


# -- value helpers ---------------------------------------------------------------------


def _num(x):
    if isinstance(x, float) and x.is_integer() and abs(x) < 2**53:
        return int(x)
    return x


def truthy(value) -> bool:
    if isinstance(value, bool):
        return value
    if value == "true":
        return True
    if value == "false":
        return False
    raise EvalError(f"{value!r} is not a bool")


def to_number(value):
    if isinstance(value, bool):
        raise EvalError("a bool is not a number")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return _num(float(value)) if re.search(r"[.eE]", value) else int(value)
        except ValueError:
            raise EvalError(f"{value!r} is not a number") from None
    raise EvalError(f"{value!r} is not a number")


def to_string(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(_num(value)) if not float(value).is_integer() else str(int(value))
    if isinstance(value, Unknown):
        return value.placeholder()
    if value is None:
        raise EvalError("null in a string")
    raise EvalError(f"cannot convert {type(value).__name__} to a string")


def to_template_string(value) -> str:
    return value.placeholder() if isinstance(value, Unknown) else to_string(value)


def iterate(coll):
    """(key, value) pairs of a list, set or map, as Terraform's for expressions see them."""
    if isinstance(coll, list):
        return list(enumerate(coll))
    if isinstance(coll, dict):
        return sorted(coll.items())
    raise EvalError(f"cannot iterate over {type(coll).__name__}")


def to_json(value):
    """A value as jsonencode writes it: unknowns as placeholder strings."""
    if isinstance(value, Unknown):
        return value.placeholder()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, LazyObject):
        raise EvalError(f"cannot encode {value.label} as JSON")
    return value


# -- functions -------------------------------------------------------------------------


def _format(fmt, *args):
    out, i, argi = [], 0, 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        m = re.compile(r"%(%|[-+ #0]*\d*(?:\.\d+)?([sdvqftxXobeEgG]))").match(fmt, i)
        if not m:
            raise EvalError(f"format(): bad verb at {fmt[i:]!r}")
        i = m.end()
        if m.group(1) == "%":
            out.append("%")
            continue
        verb = m.group(2)
        if argi >= len(args):
            raise EvalError("format(): too few arguments")
        arg = args[argi]
        argi += 1
        if verb in "sv":
            out.append(to_template_string(arg))
        elif verb == "q":
            out.append(json.dumps(to_string(arg)))
        elif verb == "d":
            out.append(str(int(to_number(arg))))
        else:
            out.append(("%" + m.group(1)) % to_number(arg))
    return "".join(out)


def _replace(s, search, repl):
    if len(search) > 1 and search.startswith("/") and search.endswith("/"):
        py_repl = re.sub(r"\$(\d+)|\$\{(\w+)\}", lambda m: "\\g<" + (m.group(1) or m.group(2)) + ">", repl)
        return re.sub(search[1:-1], py_repl, s)
    return s.replace(search, repl)


def _regex(pattern, s):
    m = re.search(pattern, s)
    if not m:
        raise EvalError(f"regex(): no match for {pattern!r}")
    if m.groupdict():
        return m.groupdict()
    if m.groups():
        return list(m.groups())
    return m.group(0)


def _merge(*maps):
    out = {}
    for m in maps:
        if m is None:
            continue
        if not isinstance(m, dict):
            raise EvalError("merge(): arguments must be maps or objects")
        out.update(m)
    return out


def _coalesce(*args):
    for a in args:
        if a is not None and a != "":
            return a
    raise EvalError("coalesce(): no non-null argument")


def _toset(xs):
    out = []
    for x in xs:
        if x not in out:
            out.append(x)
    try:
        return sorted(out, key=lambda v: (str(type(v)), v))
    except TypeError:
        return out


def _lookup(m, k, *default):
    if k in m:
        return m[k]
    if default:
        return default[0]
    raise EvalError(f"lookup(): no {k!r}")


def _flatten_list(xs):
    out = []
    for x in xs:
        out.extend(_flatten_list(x) if isinstance(x, list) else [x])
    return out


def _one(items):
    """Terraform's one(): null for an empty list, its element for a list of one."""
    items = list(items)
    if len(items) > 1:
        raise EvalError(f"one(): {len(items)} elements")
    return items[0] if items else None


FUNCTIONS: dict[str, Callable] = {
    "abs": lambda x: _num(abs(to_number(x))),
    "alltrue": lambda xs: all(truthy(x) for x in xs),
    "anytrue": lambda xs: any(truthy(x) for x in xs),
    "base64encode": lambda s: base64.b64encode(to_string(s).encode()).decode(),
    "basename": lambda s: os.path.basename(to_string(s)),
    "ceil": lambda x: math.ceil(to_number(x)),
    "coalesce": _coalesce,
    "compact": lambda xs: [x for x in xs if x not in (None, "")],
    "concat": lambda *lists: [x for items in lists for x in items],
    "contains": lambda coll, v: v in coll,
    "distinct": lambda xs: [x for i, x in enumerate(xs) if x not in xs[:i]],
    "element": lambda xs, i: xs[int(to_number(i)) % len(xs)],
    "endswith": lambda s, suffix: to_string(s).endswith(to_string(suffix)),
    "flatten": _flatten_list,
    "floor": lambda x: math.floor(to_number(x)),
    "format": _format,
    "join": lambda sep, xs: to_string(sep).join(to_template_string(x) for x in xs),
    "jsondecode": lambda s: json.loads(s),
    "jsonencode": lambda v: json.dumps(to_json(v), separators=(",", ":")),
    "keys": lambda m: sorted(m),
    "length": lambda v: len(v),
    "one": _one,
    "lookup": lambda m, k, *default: _lookup(m, k, *default),
    "lower": lambda s: to_string(s).lower(),
    "max": lambda *xs: _num(max(to_number(x) for x in xs)),
    "merge": _merge,
    "min": lambda *xs: _num(min(to_number(x) for x in xs)),
    "range": lambda *a: list(range(*[int(to_number(x)) for x in a])),
    "regex": _regex,
    "replace": lambda s, search, repl: _replace(to_string(s), to_string(search), to_string(repl)),
    "sort": lambda xs: sorted(to_string(x) for x in xs),
    "split": lambda sep, s: to_string(s).split(to_string(sep)),
    "startswith": lambda s, prefix: to_string(s).startswith(to_string(prefix)),
    "substr": lambda s, off, n: to_string(s)[int(off) :][: None if int(n) < 0 else int(n)],
    "tolist": lambda xs: list(xs),
    "tomap": lambda m: dict(m),
    "tonumber": lambda v: None if v is None else to_number(v),
    "toset": _toset,
    "tostring": lambda v: None if v is None else to_string(v),
    "trimprefix": lambda s, p: to_string(s)[len(p) :] if to_string(s).startswith(p) else to_string(s),
    "trimspace": lambda s: to_string(s).strip(),
    "trimsuffix": lambda s, p: to_string(s)[: -len(p)] if p and to_string(s).endswith(p) else to_string(s),
    "upper": lambda s: to_string(s).upper(),
    "values": lambda m: [m[k] for k in sorted(m)],
    "zipmap": lambda ks, vs: dict(zip(ks, vs, strict=True)),
}

# Functions that take unknown arguments and still produce a known shape.
_UNKNOWN_AWARE = {
    "jsonencode",
    "merge",
    "concat",
    "join",
    "format",
    "coalesce",
    "distinct",
    "toset",
    "tolist",
    "tomap",
    "length",
    "compact",
    "flatten",
    "keys",
    "values",
    "lookup",
    "element",
}
