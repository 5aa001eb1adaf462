"""The runs table's filter expressions: a small grammar over config keys, metrics and a
run's own fields, parsed by hand (a tokenizer and a recursive-descent parser), never eval'd.

    lr < 0.01 and val/loss.min < 0.1 and opt == "adam"
    not (status in ("crashed", "stalled")) or `batch size` >= 64

Grammar (keywords and/or/not/in and true/false/null in any case):

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := operand [("==" | "!=" | "<" | "<=" | ">" | ">=") operand | ["not"] "in" list]
    operand    := number | string | true | false | null | name | "(" expr ")"
    list       := ("(" | "[") [literal ("," literal)* [","]] (")" | "]")
    name       := letters, digits, _ . / - :  (starting with a letter or _), or `any text`

A name is a config key when some run has that key; else a metric (a numeric series, its
last value, or ``.last``, ``.min``, ``.max``); else one of the run's FIELDS. Of those, the
annotations people give after the fact: ``name`` is the display name (the logged name where
there is none), ``project`` a text, ``starred`` true or false, and ``tag`` the run's tags:

    tag == "best"                 the run has the tag best (!= : it has not)
    tag in ("best", "baseline")   it has one of them (not in: none of them)
    tag                           it has any tag A run without
the key or metric matches no comparison but ``== null``. Comparing a number with a string
(or any two kinds of value) is an error, as is a name no run has: every error is a
FilterError with a sentence that says where and why, which the table shows and the API
answers with 400.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

MAX_FILTER_CHARS = 2000  # an expression longer than this is refused before it is read
MAX_DEPTH = 32  # nested parentheses and nots: deep nesting must not exhaust Python's stack
MAX_LIST_ITEMS = 1000
PARTS = ("last", "min", "max")
# The run's own fields a filter can name (after config keys and metrics of those names).
FIELDS = ("name", "status", "duration", "started", "host", "source", "id", "project", "tag", "starred")
# Fields whose value is a list (a run's tags): compared by membership, never ordered.
LIST_FIELDS = ("tag",)
COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")
KEYWORDS = {"and", "or", "not", "in", "true", "false", "null", "none"}


class FilterError(ValueError):
    """An expression that cannot be used, with a sentence for a person (and where)."""


# ---- tokens ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, name, keyword, op, end
    text: str
    value: Any
    at: int  # its column, from 1


_TOKEN = re.compile(
    r"""(?P<space>\s+)
      | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_./:\-]*)
      | (?P<quoted>`[^`]*`)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,|-)
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an "end" token; a FilterError at the first
    character that starts none."""
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(
            f"the filter is {len(text):,} characters long, over the {MAX_FILTER_CHARS:,} allowed"
        )
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise FilterError(_unexpected_character(text, pos))
        kind, raw = match.lastgroup or "", match.group()
        at = pos + 1
        pos = match.end()
        if kind == "space":
            continue
        if kind == "number":
            tokens.append(Token("number", raw, _number(raw, at), at))
        elif kind == "name" and raw.lower() in KEYWORDS:
            tokens.append(Token("keyword", raw, raw.lower(), at))
        elif kind == "name":
            tokens.append(Token("name", raw, raw, at))
        elif kind == "quoted":
            tokens.append(Token("name", raw, raw[1:-1], at))
        elif kind == "string":
            tokens.append(Token("string", raw, _unescape(raw[1:-1]), at))
        else:
            tokens.append(Token("op", raw, raw, at))
    tokens.append(Token("end", "", None, len(text) + 1))
    return tokens


def _unexpected_character(text: str, pos: int) -> str:
    char = text[pos]
    if char in "\"'":
        return f"column {pos + 1}: this string has no closing {char}"
    if char == "`":
        return f"column {pos + 1}: this `name` has no closing `"
    if char == "=":
        return f"column {pos + 1}: compare with == (a single = is not an operator)"
    if char in "&|!":
        return f"column {pos + 1}: {char!r} is not an operator here; use and, or, not"
    return f"column {pos + 1}: unexpected character {char!r}"


def _number(raw: str, at: int) -> float | int:
    try:
        value = float(raw) if any(c in raw for c in ".eE") else int(raw)
    except (ValueError, OverflowError):  # int() of 5,000 digits, say
        raise FilterError(f"column {at}: {raw[:20]!r} is not a number this filter can read") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(f"column {at}: {raw[:20]!r} is too large a number")
    return value


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body, flags=re.DOTALL)


# ---- the tree ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    value: Any
    at: int


@dataclass(frozen=True)
class Name:
    text: str
    at: int


@dataclass(frozen=True)
class Compare:
    op: str
    left: Any
    right: Any
    at: int


@dataclass(frozen=True)
class Member:
    left: Any
    values: tuple[Any, ...]
    negated: bool
    at: int


@dataclass(frozen=True)
class Truth:  # a bare operand used as a condition: a boolean config key
    operand: Any
    at: int


@dataclass(frozen=True)
class Not:
    operand: Any


@dataclass(frozen=True)
class Both:
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Either:
    parts: tuple[Any, ...]


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return token

    def at_keyword(self, *words: str) -> bool:
        return self.token.kind == "keyword" and self.token.value in words

    def at_op(self, *ops: str) -> bool:
        return self.token.kind == "op" and self.token.value in ops

    def fail(self, expected: str) -> FilterError:
        token = self.token
        found = "the end of the filter" if token.kind == "end" else repr(token.text)
        return FilterError(f"column {token.at}: expected {expected}, found {found}")

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError(f"column {self.token.at}: nested more than {MAX_DEPTH} deep")

    def parse(self):
        if self.token.kind == "end":
            raise FilterError("the filter is empty")
        tree = self.expr()
        if self.token.kind != "end":
            raise self.fail("and, or, or the end of the filter")
        return tree

    def expr(self):
        parts = [self.and_expr()]
        while self.at_keyword("or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else Either(tuple(parts))

    def and_expr(self):
        parts = [self.not_expr()]
        while self.at_keyword("and"):
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else Both(tuple(parts))

    def not_expr(self):
        if self.at_keyword("not"):
            self.take()
            self.nest()
            operand = self.not_expr()
            self.depth -= 1
            return Not(operand)
        return self.comparison()

    def comparison(self):
        at = self.token.at
        left = self.operand()
        if self.at_op(*COMPARISONS):
            op = self.take().value
            return Compare(op, left, self.operand(), at)
        negated = False
        if self.at_keyword("not") and self.tokens[self.pos + 1].value == "in":
            self.take()
            negated = True
        if self.at_keyword("in"):
            self.take()
            return Member(left, self.literal_list(), negated, at)
        if isinstance(left, Name):
            return Truth(left, at)
        if isinstance(left, Literal):
            raise self.fail("a comparison (==, !=, <, <=, >, >=, in) after this value")
        return left  # a parenthesised condition

    def operand(self):
        token = self.token
        if self.at_op("("):
            self.take()
            self.nest()
            inner = self.expr()
            self.depth -= 1
            if not self.at_op(")"):
                raise self.fail("')'")
            self.take()
            return inner
        if token.kind == "name":
            self.take()
            return Name(token.value, token.at)
        return self.literal()

    def literal(self) -> Literal:
        token = self.token
        if self.at_op("-") and self.tokens[self.pos + 1].kind == "number":
            self.take()
            number = self.take()
            return Literal(-number.value, token.at)
        if token.kind in ("number", "string"):
            self.take()
            return Literal(token.value, token.at)
        if self.at_keyword("true", "false", "null", "none"):
            self.take()
            return Literal({"true": True, "false": False}.get(token.value), token.at)
        raise self.fail("a name, a number, a string, true, false or null")

    def literal_list(self) -> tuple[Literal, ...]:
        if not self.at_op("(", "["):
            raise self.fail('a list after in, such as ("adam", "sgd")')
        closing = ")" if self.take().value == "(" else "]"
        items: list[Literal] = []
        while not self.at_op(closing):
            items.append(self.literal())
            if len(items) > MAX_LIST_ITEMS:
                raise FilterError(f"column {self.token.at}: a list of more than {MAX_LIST_ITEMS} values")
            if self.at_op(","):
                self.take()
            elif not self.at_op(closing):
                raise self.fail(f"',' or '{closing}'")
        self.take()
        return tuple(items)


def parse(text: str):
    """The tree of an expression (Either, Both, Not, Compare, Member, Truth), or a FilterError."""
    return _Parser(text).parse()


# ---- names and values --------------------------------------------------------------------

# What a name refers to: ("config", key), ("metric", series, part) or ("field", name).
Ref = tuple[str, ...]


def resolve(name: str, config_keys: Iterable[str], metrics: Iterable[str]) -> Ref | None:
    """What ``name`` refers to among the runs' config keys and metrics (see the module's
    doc), or None when no run has it."""
    keys, series = set(config_keys), set(metrics)
    if name in keys:
        return ("config", name)
    base, dot, part = name.rpartition(".")
    if dot and part in PARTS and base in series:
        return ("metric", base, part)
    if name in series:
        return ("metric", name, "last")
    if name in FIELDS:
        return ("field", name)
    return None


def kind_of(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@dataclass
class Filter:
    """A parsed expression with its names resolved: ``matches(lookup, label)`` for a run,
    ``lookup(ref)`` giving the run's value of a reference (None when it has none), and
    ``label`` naming the run in an error."""

    text: str
    tree: Any
    refs: dict[str, Ref]

    @property
    def metrics(self) -> set[str]:
        """The series the filter reads (their summaries are needed for every run)."""
        return {ref[1] for ref in self.refs.values() if ref[0] == "metric"}

    def matches(self, lookup: Callable[[Ref], Any], label: str = "a run") -> bool:
        return bool(self._eval(self.tree, lookup, label))

    def _value(self, node, lookup, label):
        if isinstance(node, Literal):
            return node.value, None
        if isinstance(node, Name):
            return lookup(self.refs[node.text]), node.text
        return self._eval(node, lookup, label), None

    def _listed(self, node) -> bool:
        return (
            isinstance(node, Name)
            and self.refs.get(node.text, ("",))[0] == "field"
            and node.text in LIST_FIELDS
        )

    def _eval_list(self, node, lookup, label) -> bool:
        """A comparison with a list field (tag): membership of the other side's string."""
        if isinstance(node, Truth):
            return bool(_as_list(lookup(self.refs[node.operand.text])))
        if isinstance(node, Member):
            have = _as_list(lookup(self.refs[node.left.text]))
            wanted = [item.value for item in node.values]
            for value in wanted:
                if not isinstance(value, str):
                    raise FilterError(
                        f"column {node.at}: {node.left.text} is compared with text, not {_shown(value)}"
                    )
            return any(value in have for value in wanted) != node.negated
        listed, other = (node.left, node.right) if self._listed(node.left) else (node.right, node.left)
        if node.op not in ("==", "!="):
            raise FilterError(f"column {node.at}: {listed.text} can only be compared with == or != "
                              f'(such as {listed.text} == "best")')  # fmt: skip
        value, _ = self._value(other, lookup, label)
        if self._listed(other) or not isinstance(value, str):
            raise FilterError(f"column {node.at}: {listed.text} is compared with text, not {_shown(value)}")
        return (value in _as_list(lookup(self.refs[listed.text]))) == (node.op == "==")

    def _eval(self, node, lookup, label) -> bool:
        if isinstance(node, Truth | Member) and self._listed(
            node.operand if isinstance(node, Truth) else node.left
        ):
            return self._eval_list(node, lookup, label)
        if isinstance(node, Compare) and (self._listed(node.left) or self._listed(node.right)):
            return self._eval_list(node, lookup, label)
        if isinstance(node, Either):
            return any(self._eval(p, lookup, label) for p in node.parts)
        if isinstance(node, Both):
            return all(self._eval(p, lookup, label) for p in node.parts)
        if isinstance(node, Not):
            return not self._eval(node.operand, lookup, label)
        if isinstance(node, Truth):
            value, name = self._value(node.operand, lookup, label)
            if kind_of(value) not in ("boolean", "null"):
                raise FilterError(f"column {node.at}: {name} is {_shown(value)} in {label}, not true or "
                                  f"false; compare it with a value (such as {name} == ...)")  # fmt: skip
            return bool(value)
        if isinstance(node, Member):
            value, name = self._value(node.left, lookup, label)
            kind = kind_of(value)
            if kind == "null":
                return node.negated
            same = [item.value for item in node.values if kind_of(item.value) == kind]
            if node.values and not same:
                raise self._mismatch(node.at, name, value, node.values[0].value, label)
            return (value in same) != node.negated
        left, left_name = self._value(node.left, lookup, label)
        right, right_name = self._value(node.right, lookup, label)
        lk, rk = kind_of(left), kind_of(right)
        if "null" in (lk, rk):
            if node.op in ("==", "!="):
                return (lk == rk) == (node.op == "==")
            return False  # a run without the value is neither above nor below anything
        if lk != rk:
            if right_name and not left_name:  # name the run's value first: "lr is 'auto' ..."
                raise self._mismatch(node.at, right_name, right, left, label)
            raise self._mismatch(node.at, left_name, left, right, label)
        if node.op == "==":
            return left == right
        if node.op == "!=":
            return left != right
        if lk not in ("number", "string"):
            raise FilterError(f"column {node.at}: only numbers and strings can be ordered with "
                              f"{node.op}, not {lk} values")  # fmt: skip
        return _ORDER[node.op](left, right)

    @staticmethod
    def _mismatch(at: int, name: str | None, value: Any, other: Any, label: str) -> FilterError:
        where = f"{name} is {_shown(value)} in {label}" if name else f"{_shown(value)}"
        return FilterError(f"column {at}: {where}, compared with {_shown(other)}; "
                           f"a {kind_of(value)} cannot be compared with a {kind_of(other)}")  # fmt: skip


def _as_list(value: Any) -> list:
    """A list field's value as a list (None, a run without any: empty)."""
    return list(value) if isinstance(value, list | tuple | set | frozenset) else []


def _shown(value: Any) -> str:
    kind = kind_of(value)
    text = repr(value) if kind in ("string", "number") else kind
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} (a {kind})" if kind in ("string", "number") else f"a {kind}"


def compile_filter(text: str, config_keys: Iterable[str], metrics: Iterable[str]) -> Filter:
    """``text`` parsed, its names resolved against the runs' ``config_keys`` and numeric
    ``metrics``: a FilterError when it does not parse or names what no run has."""
    tree = parse(text)
    keys, series = set(config_keys), set(metrics)
    refs: dict[str, Ref] = {}
    for name in _names(tree):
        ref = resolve(name.text, keys, series)
        if ref is None:
            raise FilterError(_unknown(name, keys, series))
        refs[name.text] = ref
    found = Filter(text, tree, refs)
    # Two literals compared: checked now, so the mistake is named even when no run is listed.
    found.matches(lambda ref: None, "no run")
    return found


def _unknown(name: Name, keys: set[str], series: set[str]) -> str:
    known = sorted(keys | series | set(FIELDS))
    close = difflib.get_close_matches(name.text, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"column {name.at}: no listed run has a config key or metric named {name.text!r}{hint}"


def _names(tree) -> list[Name]:
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Name):
            out.append(node)
        elif isinstance(node, Either | Both):
            stack.extend(node.parts)
        elif isinstance(node, Not):
            stack.append(node.operand)
        elif isinstance(node, Compare):
            stack.extend((node.left, node.right))
        elif isinstance(node, Member | Truth):
            stack.append(node.left if isinstance(node, Member) else node.operand)
    return out
