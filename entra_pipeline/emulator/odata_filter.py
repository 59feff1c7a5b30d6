"""Graph's ``$filter``, compiled to a predicate over directory objects: a small tokenizer and a
recursive-descent parser (no ``eval``). Which operators work without advanced query mode
(``ConsistencyLevel: eventual`` plus ``$count=true``) follows each property's schema, as Graph
documents its defaults; the rest raise ``Request_UnsupportedQuery`` unless the request is in
advanced mode. String comparisons ignore case, as in Graph."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from .odata import (
    ADVANCED_OPS,
    BOOL,
    COMPLEX,
    DATETIME,
    NO_OPS,
    STRING,
    STRINGS,
    EntitySchema,
    ODataError,
    bad_request,
    unsupported,
)


# ---------------------------------------------------------------------------
# $filter: tokenizer

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[(),:/])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str  # string, datetime, number, ident, punct, end
    text: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            if text[pos] == "'":
                raise _syntax(text, pos, "unterminated string literal")
            raise _syntax(text, pos, f"unexpected character {text[pos]!r}")
        kind = match.lastgroup
        if kind != "ws":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _syntax(text: str, pos: int, detail: str) -> ODataError:
    return bad_request(f"Invalid filter clause: {detail} at position {pos} in '{text}'.")


# ---------------------------------------------------------------------------
# $filter: parser. Nodes are tuples:
#   ("and"|"or", left, right)   ("not", node)
#   ("cmp", op, path, literal)  ("in", path, [literal, ...])
#   ("func", name, path, literal)   ("any", path, var, body)
# A path is a list of (segment, position); a literal is ("lit", type, value, position).

_COMPARISON_OPS = ("eq", "ne", "gt", "ge", "lt", "le")
_FUNCTIONS = ("startswith", "endswith")
_LAMBDAS = ("any", "all")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def is_keyword(self, *words: str) -> bool:
        token = self.current
        return token.kind == "ident" and token.text.lower() in words

    def expect_punct(self, char: str) -> _Token:
        token = self.current
        if token.kind != "punct" or token.text != char:
            found = f"'{token.text}'" if token.text else "end of expression"
            raise _syntax(self.text, token.pos, f"expected '{char}' but found {found}")
        return self.advance()

    def parse(self):
        if self.current.kind == "end":
            raise _syntax(self.text, 0, "empty expression")
        node = self.parse_or()
        if self.current.kind != "end":
            raise _syntax(self.text, self.current.pos, f"unexpected '{self.current.text}'")
        return node

    def parse_or(self):
        node = self.parse_and()
        while self.is_keyword("or"):
            self.advance()
            node = ("or", node, self.parse_and())
        return node

    def parse_and(self):
        node = self.parse_not()
        while self.is_keyword("and"):
            self.advance()
            node = ("and", node, self.parse_not())
        return node

    def parse_not(self):
        if self.is_keyword("not"):
            self.advance()
            return ("not", self.parse_not())
        return self.parse_primary()

    def parse_primary(self):
        token = self.current
        if token.kind == "punct" and token.text == "(":
            self.advance()
            node = self.parse_or()
            self.expect_punct(")")
            return node
        if token.kind != "ident":
            found = f"'{token.text}'" if token.text else "end of expression"
            raise _syntax(self.text, token.pos, f"expected a property or function but found {found}")
        nxt = self.tokens[self.index + 1]
        if token.text.lower() in _FUNCTIONS and nxt.kind == "punct" and nxt.text == "(":
            return self.parse_function()
        path = self.parse_path()
        if path[-1][0].lower() in _LAMBDAS and self.current.text == "(":
            return self.parse_lambda(path)
        if self.is_keyword("in"):
            self.advance()
            self.expect_punct("(")
            values = [self.parse_literal()]
            while self.current.text == ",":
                self.advance()
                values.append(self.parse_literal())
            self.expect_punct(")")
            return ("in", path, values)
        if self.is_keyword(*_COMPARISON_OPS):
            op = self.advance().text.lower()
            return ("cmp", op, path, self.parse_literal())
        found = f"'{self.current.text}'" if self.current.text else "end of expression"
        raise _syntax(self.text, self.current.pos,
                      f"expected an operator (eq, ne, gt, ge, lt, le, in) but found {found}")

    def parse_path(self):
        token = self.advance()
        path = [(token.text, token.pos)]
        while self.current.kind == "punct" and self.current.text == "/":
            self.advance()
            segment = self.current
            if segment.kind != "ident":
                raise _syntax(self.text, segment.pos, "expected a property name after '/'")
            self.advance()
            path.append((segment.text, segment.pos))
        return path

    def parse_function(self):
        name = self.advance().text.lower()
        self.expect_punct("(")
        if self.current.kind != "ident":
            raise _syntax(self.text, self.current.pos, f"{name}() expects a property as first argument")
        path = self.parse_path()
        self.expect_punct(",")
        literal = self.parse_literal()
        self.expect_punct(")")
        return ("func", name, path, literal)

    def parse_lambda(self, path):
        lambda_name, lambda_pos = path[-1]
        if lambda_name.lower() == "all":
            raise unsupported(f"Lambda operator 'all' is not supported (position {lambda_pos}).")
        self.expect_punct("(")
        var = self.current
        if var.kind != "ident":
            raise _syntax(self.text, var.pos, "expected a lambda variable")
        self.advance()
        self.expect_punct(":")
        body = self.parse_or()
        self.expect_punct(")")
        return ("any", path[:-1], var.text, body)

    def parse_literal(self):
        token = self.advance()
        if token.kind == "string":
            return ("lit", "string", token.text[1:-1].replace("''", "'"), token.pos)
        if token.kind == "datetime":
            try:
                value = _parse_datetime(token.text)
            except ValueError:
                raise _syntax(self.text, token.pos, f"invalid date/time literal '{token.text}'") from None
            return ("lit", "datetime", value, token.pos)
        if token.kind == "number":
            return ("lit", "number", float(token.text), token.pos)
        if token.kind == "ident" and token.text.lower() in ("true", "false"):
            return ("lit", "bool", token.text.lower() == "true", token.pos)
        if token.kind == "ident" and token.text.lower() == "null":
            return ("lit", "null", None, token.pos)
        found = f"'{token.text}'" if token.text else "end of expression"
        raise _syntax(self.text, token.pos, f"expected a literal value but found {found}")


def _parse_datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------------------
# $filter: compiler

_EDM = {"string": "Edm.String", "bool": "Edm.Boolean", "datetime": "Edm.DateTimeOffset",
        "number": "Edm.Int32", "null": "null"}
_PROP_EDM = {STRING: "Edm.String", BOOL: "Edm.Boolean", DATETIME: "Edm.DateTimeOffset"}
_OP_KIND = {"eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual",
            "lt": "LessThan", "le": "LessThanOrEqual", "in": "In"}

Predicate = Callable[[dict], bool]


@dataclass
class _Operand:
    label: str  # for messages
    kind: str
    default_ops: frozenset
    getter: Callable[[Any], Any]


class _Compiler:
    def __init__(self, schema: EntitySchema, advanced: bool) -> None:
        self.schema = schema
        self.advanced = advanced

    def need_advanced(self, what: str) -> None:
        if not self.advanced:
            raise unsupported(
                f"{what} is not supported because the required parameters might be missing. "
                "Try adding $count=true query parameter and ConsistencyLevel:eventual header. "
                "Refer to https://aka.ms/graph-docs/advanced-queries for more information"
            )

    def check_op(self, operand: _Operand, op: str, *, null_literal: bool = False) -> None:
        if op not in ADVANCED_OPS.get(operand.kind, NO_OPS):
            raise unsupported(
                f"Unsupported or invalid query filter clause specified for property "
                f"'{operand.label}' of resource '{self.schema.resource}'."
            )
        if null_literal:
            self.need_advanced(f"Filtering '{operand.label}' on null values")
        elif op not in operand.default_ops:
            self.need_advanced(f"Operator '{op}' on property '{operand.label}'")

    def operand(self, path, scope: dict[str, _Operand]) -> _Operand:
        name, pos = path[0]
        if len(path) == 1 and name in scope:
            return scope[name]
        prop = self.schema.prop(name)
        if prop is None:
            raise bad_request(f"Could not find a property named '{name}' on type '{self.schema.type_name}'.")
        if not prop.filterable:
            raise unsupported(f"Filtering on property '{prop.name}' is not supported by the emulator.")
        key = prop.name
        if prop.kind == COMPLEX:
            if len(path) != 2:
                raise bad_request(
                    f"Property '{prop.name}' is a complex type; filter on one of its properties, "
                    f"e.g. {prop.name}/{prop.sub[0]}."
                )
            sub_name, sub_pos = path[1]
            subs = {s.lower(): s for s in prop.sub}
            sub = subs.get(sub_name.lower())
            if sub is None:
                raise bad_request(
                    f"Could not find a property named '{sub_name}' on type "
                    f"'microsoft.graph.{prop.name}'."
                )
            return _Operand(f"{prop.name}/{sub}", STRING, NO_OPS,
                            lambda obj, key=key, sub=sub: (obj.get(key) or {}).get(sub))
        if len(path) > 1:
            raise bad_request(f"Property '{prop.name}' has no property named '{path[1][0]}'.")
        return _Operand(prop.name, prop.kind, prop.default_ops, lambda obj, key=key: obj.get(key))

    def literal_check(self, operand: _Operand, op: str, literal) -> None:
        _, lit_type, _, _ = literal
        if lit_type == "null":
            return
        expected = {STRING: "string", BOOL: "bool", DATETIME: "datetime"}.get(operand.kind)
        if operand.kind == STRINGS:
            raise bad_request(
                f"Property '{operand.label}' is a collection; use {operand.label}/any(x:x {op} ...) instead."
            )
        if expected != lit_type:
            raise bad_request(
                "A binary operator with incompatible types was detected. Found operand types "
                f"'{_PROP_EDM.get(operand.kind, 'Edm.Untyped')}' and '{_EDM[lit_type]}' for operator "
                f"kind '{_OP_KIND.get(op, op)}'."
            )

    def compile(self, node, scope: dict[str, _Operand]) -> Predicate:
        kind = node[0]
        if kind in ("and", "or"):
            left = self.compile(node[1], scope)
            right = self.compile(node[2], scope)
            if kind == "and":
                return lambda obj: left(obj) and right(obj)
            return lambda obj: left(obj) or right(obj)
        if kind == "not":
            self.need_advanced("Operator 'not'")
            inner = self.compile(node[1], scope)
            return lambda obj: not inner(obj)
        if kind == "cmp":
            _, op, path, literal = node
            operand = self.operand(path, scope)
            self.literal_check(operand, op, literal)
            self.check_op(operand, op, null_literal=literal[1] == "null")
            return _comparison(operand, op, literal)
        if kind == "in":
            _, path, literals = node
            operand = self.operand(path, scope)
            for literal in literals:
                self.literal_check(operand, "in", literal)
            self.check_op(operand, "in", null_literal=any(lit[1] == "null" for lit in literals))
            wanted = {_normalise(operand.kind, lit[2]) for lit in literals}
            getter, value_kind = operand.getter, operand.kind
            return lambda obj: _normalise(value_kind, getter(obj)) in wanted
        if kind == "func":
            _, name, path, literal = node
            operand = self.operand(path, scope)
            if operand.kind != STRING or literal[1] != "string":
                raise bad_request(f"{name}() needs a string property and a string literal.")
            self.check_op(operand, name)
            needle = literal[2].lower()
            getter = operand.getter
            if name == "startswith":
                return lambda obj: (value := getter(obj)) is not None and value.lower().startswith(needle)
            return lambda obj: (value := getter(obj)) is not None and value.lower().endswith(needle)
        if kind == "any":
            _, path, var, body = node
            operand = self.operand(path, scope)
            if operand.kind != STRINGS:
                raise bad_request(f"Lambda 'any' needs a collection property; '{operand.label}' is not one.")
            self.check_op(operand, "any")
            # Inside the lambda, eq/startswith are as cheap as the collection allows.
            element_ops = frozenset({"eq", "in", "startswith"}) if "any" in operand.default_ops else NO_OPS
            inner_scope = dict(scope)
            inner_scope[var] = _Operand(f"{operand.label}/{var}", STRING, element_ops, lambda element: element)
            predicate = self.compile(body, inner_scope)
            getter = operand.getter
            return lambda obj: any(predicate(element) for element in (getter(obj) or ()))
        raise AssertionError(kind)


def _normalise(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == STRING and isinstance(value, str):
        return value.lower()
    if kind == DATETIME:
        return value if isinstance(value, datetime) else _parse_datetime(value)
    return value


def _comparison(operand: _Operand, op: str, literal) -> Predicate:
    getter, kind = operand.getter, operand.kind
    wanted = _normalise(kind, literal[2])
    if op == "eq":
        return lambda obj: _normalise(kind, getter(obj)) == wanted
    if op == "ne":
        return lambda obj: _normalise(kind, getter(obj)) != wanted
    if wanted is None:
        raise bad_request(f"Operator '{op}' cannot compare with null.")
    compare = {
        "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
        "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
    }[op]

    def predicate(obj: dict) -> bool:
        value = _normalise(kind, getter(obj))
        return value is not None and compare(value, wanted)

    return predicate


def compile_filter(text: str, schema: EntitySchema, *, advanced: bool) -> Predicate:
    """Parse ``$filter`` text into a predicate over Graph objects.

    Raises :class:`ODataError`: ``Request_BadRequest`` for syntax errors and
    unknown properties, ``Request_UnsupportedQuery`` for operators that need
    advanced query mode (when ``advanced`` is false) or are not filterable.
    """
    tree = _Parser(text).parse()
    return _Compiler(schema, advanced).compile(tree, {})
