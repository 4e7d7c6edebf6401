"""RSQL as the Jamf Pro API reads it: parse a filter into a tree, compile it into a predicate.

Pure functions over plain data. ``parse`` only reads the syntax; ``compile_filter`` checks
each selector against a table of known fields and converts the arguments to the field's
type, so ``id`` compares as an integer, ``general.reportDate`` as a point in time and
``general.remoteManagement.managed`` as a boolean.

Grammar (``;`` binds tighter than ``,``)::

    or         := and ("," and)*
    and        := primary (";" primary)*
    primary    := "(" or ")" | comparison
    comparison := selector operator argument
    operator   := == != < <= > >= =lt= =le= =gt= =ge= =in= =out=
    argument   := value | "(" value ("," value)* ")"
    value      := '"' ... '"' | "'" ... "'" | unreserved characters

A ``*`` in the value of ``==`` or ``!=`` on a text field is a wildcard. Text compares
without regard to case, as Jamf Pro's database collation does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeAlias


class RsqlError(ValueError):
    """A filter that cannot be read or applied; the message names the problem."""


class FieldType(Enum):
    STRING = "text"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    DATETIME = "date-time"


@dataclass(frozen=True, slots=True)
class Field:
    """Where a filterable field lives in a record, and how its values compare."""

    path: tuple[str, ...]
    type: FieldType

    @classmethod
    def at(cls, dotted: str, type: FieldType = FieldType.STRING) -> Field:
        return cls(tuple(dotted.split(".")), type)


@dataclass(frozen=True, slots=True)
class Comparison:
    selector: str
    operator: str
    arguments: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


Node: TypeAlias = Comparison | And | Or
Predicate: TypeAlias = Callable[[Mapping[str, Any]], bool]

#: Spelling -> canonical operator.
OPERATORS: dict[str, str] = {
    "==": "==",
    "!=": "!=",
    "<": "<",
    "=lt=": "<",
    "<=": "<=",
    "=le=": "<=",
    ">": ">",
    "=gt=": ">",
    ">=": ">=",
    "=ge=": ">=",
    "=in=": "=in=",
    "=out=": "=out=",
}
_LIST_OPERATORS = frozenset({"=in=", "=out="})
_ORDER_OPERATORS = frozenset({"<", "<=", ">", ">="})
_SELECTOR = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_OPERATOR = re.compile(r"==|!=|<=|>=|<|>|=[A-Za-z]*=")
_RESERVED = frozenset("\"'();,=!<>~ \t\r\n")


# -- parsing ---------------------------------------------------------------------------


def parse(text: str) -> Node:
    """Read a filter into its tree; raise ``RsqlError`` naming the first problem."""
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> RsqlError:
        return RsqlError(f"invalid filter: {message} at position {self.pos}")

    def peek(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def describe(self) -> str:
        char = self.peek()
        return f"unexpected {char!r}" if char else "unexpected end of filter"

    def parse(self) -> Node:
        if not self.peek():
            raise self.fail("the filter is empty")
        node = self.or_()
        if self.peek():
            raise self.fail(self.describe())
        return node

    def or_(self) -> Node:
        children = [self.and_()]
        while self.peek() == ",":
            self.pos += 1
            children.append(self.and_())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_(self) -> Node:
        children = [self.primary()]
        while self.peek() == ";":
            self.pos += 1
            children.append(self.primary())
        return children[0] if len(children) == 1 else And(tuple(children))

    def primary(self) -> Node:
        if self.peek() == "(":
            self.pos += 1
            node = self.or_()
            if self.peek() != ")":
                raise self.fail(f"{self.describe()}, expected ')'")
            self.pos += 1
            return node
        return self.comparison()

    def comparison(self) -> Comparison:
        self.peek()
        match = _SELECTOR.match(self.text, self.pos)
        if match is None:
            raise self.fail(f"{self.describe()}, expected a field name")
        self.pos = match.end()
        selector = match.group()
        self.peek()
        match = _OPERATOR.match(self.text, self.pos)
        if match is None:
            raise self.fail(f"{self.describe()} after {selector!r}, expected an operator")
        if match.group() not in OPERATORS:
            raise self.fail(f"unknown operator {match.group()!r}")
        self.pos = match.end()
        operator = OPERATORS[match.group()]
        return Comparison(selector, operator, self.arguments(operator))

    def arguments(self, operator: str) -> tuple[str, ...]:
        if self.peek() != "(":
            return (self.value(),)
        if operator not in _LIST_OPERATORS:
            raise self.fail(f"operator {operator} takes a single value, not a list")
        self.pos += 1
        values = [self.value()]
        while self.peek() == ",":
            self.pos += 1
            values.append(self.value())
        if self.peek() != ")":
            raise self.fail(f"{self.describe()}, expected ')' to close the list")
        self.pos += 1
        return tuple(values)

    def value(self) -> str:
        char = self.peek()
        if char in ("'", '"'):
            return self.quoted(char)
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _RESERVED:
            self.pos += 1
        if self.pos == start:
            raise self.fail(f"{self.describe()}, expected a value")
        return self.text[start : self.pos]

    def quoted(self, quote: str) -> str:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif char == quote:
                self.pos += 1
                return "".join(out)
            else:
                out.append(char)
                self.pos += 1
        self.pos = start
        raise self.fail("unterminated quoted value")


def selectors(node: Node) -> frozenset[str]:
    """Every field name a filter mentions."""
    if isinstance(node, Comparison):
        return frozenset({node.selector})
    return frozenset().union(*(selectors(child) for child in node.children))


# -- values ----------------------------------------------------------------------------


def parse_datetime(text: str) -> datetime:
    """ISO-8601, with ``Z`` or an offset; a bare date is midnight UTC; naive means UTC."""
    value = datetime.fromisoformat(text.strip())
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def lookup(record: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path``, or None when any step along it is missing."""
    value: Any = record
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def record_value(raw: Any, type: FieldType) -> Any:
    """A record's value in comparable form: casefolded text, int, bool or datetime."""
    if raw is None:
        return None
    try:
        if type is FieldType.STRING:
            return str(raw).casefold()
        if type is FieldType.INTEGER:
            return int(raw)
        if type is FieldType.BOOLEAN:
            return raw if isinstance(raw, bool) else str(raw).lower() == "true"
        return raw if isinstance(raw, datetime) else parse_datetime(str(raw))
    except ValueError:
        return None


def argument_value(text: str, selector: str, type: FieldType) -> Any:
    """A filter argument converted to the field's type, or ``RsqlError``."""
    try:
        if type is FieldType.STRING:
            return text.casefold()
        if type is FieldType.INTEGER:
            return int(text)
        if type is FieldType.BOOLEAN:
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        return parse_datetime(text)
    except ValueError:
        raise RsqlError(
            f"invalid filter: {text!r} is not a valid {type.value} for field {selector!r}"
        ) from None


# -- compiling -------------------------------------------------------------------------


def compile_filter(node: Node, fields: Mapping[str, Field]) -> Predicate:
    """A predicate over record dicts; ``RsqlError`` for unknown fields or bad values."""
    if isinstance(node, Comparison):
        return _compile_comparison(node, fields)
    parts = tuple(compile_filter(child, fields) for child in node.children)
    if isinstance(node, And):
        return lambda record: all(part(record) for part in parts)
    return lambda record: any(part(record) for part in parts)


def predicate(text: str, fields: Mapping[str, Field]) -> Predicate:
    """Parse and compile in one step."""
    return compile_filter(parse(text), fields)


def _compile_comparison(node: Comparison, fields: Mapping[str, Field]) -> Predicate:
    field = fields.get(node.selector)
    if field is None:
        raise RsqlError(f"invalid filter: unknown field {node.selector!r}")
    op, path, type = node.operator, field.path, field.type
    if op in _ORDER_OPERATORS and type is FieldType.BOOLEAN:
        raise RsqlError(f"invalid filter: operator {op} does not apply to {node.selector!r}")

    def value(record: Mapping[str, Any]) -> Any:
        return record_value(lookup(record, path), type)

    if op in _LIST_OPERATORS:
        wanted = frozenset(argument_value(a, node.selector, type) for a in node.arguments)
        if op == "=in=":
            return lambda record: value(record) in wanted
        return lambda record: value(record) not in wanted

    text = node.arguments[0]
    if op in ("==", "!=") and type is FieldType.STRING and "*" in text:
        pattern = re.compile(
            ".*".join(re.escape(part) for part in text.split("*")), re.IGNORECASE | re.DOTALL
        )

        def matches(record: Mapping[str, Any]) -> bool:
            raw = lookup(record, path)
            return raw is not None and pattern.fullmatch(str(raw)) is not None

        if op == "==":
            return matches
        return lambda record: not matches(record)

    target = argument_value(text, node.selector, type)
    if op == "==":
        return lambda record: value(record) == target
    if op == "!=":
        return lambda record: value(record) != target
    return _ordered(op, target, value)


def _ordered(op: str, target: Any, value: Callable[[Mapping[str, Any]], Any]) -> Predicate:
    # A missing value is neither less nor greater than anything, as in SQL.
    if op == "<":
        return lambda r: (v := value(r)) is not None and v < target
    if op == "<=":
        return lambda r: (v := value(r)) is not None and v <= target
    if op == ">":
        return lambda r: (v := value(r)) is not None and v > target
    return lambda r: (v := value(r)) is not None and v >= target
