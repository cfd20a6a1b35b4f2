"""Hive Metastore partition filters: parse once, compile to closures, evaluate per partition.

This is the string language of ``get_partitions_by_filter`` / ``get_num_partitions_by_filter``
(Hive's metastore ``Filter.g`` and its Hive 4 successor ``PartitionFilter.g4``) as Spark's Hive
client, Trino/Presto and Hive itself send it. Keywords are case-insensitive::

    filter     := or
    or         := and (OR and)*
    and        := not (AND not)*                  -- AND binds tighter than OR
    not        := NOT not | '(' or ')' | condition
    condition  := column op constant | constant op column      -- op incl. LIKE (column first)
                | column [NOT] BETWEEN constant AND constant
                | column [NOT] IN '(' constant (',' constant)* ')'
                | column [NOT] LIKE constant
                | column IS [NOT] NULL
                | '(' STRUCT '(' column (',' column)* ')' ')' [NOT] IN
                      '(' [CONST] STRUCT '(' constant, ... ')' (',' ...)* ')'
    column     := name | `back``quoted` | '(' column ')'        -- Hive 4 sends "(col) IN (...)"
    op         := = | == | <=> | != | <> | < | <= | > | >= | LIKE
    constant   := string+ | [-]integer | [-]decimal | DATE string | TIMESTAMP string
                | yyyy-mm-dd | yyyy-mm-dd hh:mm:ss[.fff]    -- bare, as Spark sends dates

Strings are single- or double-quoted; ``\\\\``, ``\\'`` and ``\\"`` are unescaped, any other
backslash is kept as written (Hive keeps all of them, so raw values such as ``C:\\dir`` that Spark
sends unescaped still match). Adjacent strings concatenate. ``date``/``timestamp`` may be used as
column names where they cannot start a literal. Beyond Hive: ``NOT``, ``IS [NOT] NULL``,
``[NOT] LIKE`` and decimal literals; ``<=>`` means ``=`` (a constant is never NULL).

Semantics (per partition key, from its Hive type):

* integral, decimal, float/double keys compare numerically when the constant is numeric (an
  integer/decimal literal or a string that parses as one); a partition value that does not parse
  matches no comparison;
* date and timestamp keys compare as dates/timestamps when the constant parses as one;
* everything else compares the raw strings, code point by code point (``'10' < '9'``);
* ``LIKE`` matches the raw value, whole-string, case-sensitively, with SQL wildcards ``%`` (any
  run) and ``_`` (one character), ``\\`` escaping the next character, *and* Hive's legacy regex
  wildcards ``.*`` and ``.`` (Hive 4 accepts both since HIVE-29377). The legacy forms matter:
  Spark pushes ``LIKE 'us%'``/contains/ends-with as ``col like "us.*"``/``".*x.*"``/``".*x"``. A
  literal ``.`` therefore matches any character: filtering may over-select, never under-select,
  which is what clients expect (they re-check pushed-down predicates). Other regex characters are
  literal;
* the default partition (``__HIVE_DEFAULT_PARTITION__``) is SQL NULL: only ``IS NULL`` matches
  it; every comparison, including ``!=``, ``NOT IN``, ``NOT LIKE`` and ``NOT (...)``, is false.
  ``NOT`` is pushed down to the leaves, so this holds under any nesting.

Cost is bounded, because filters come from clients: a filter is at most
:data:`MAX_FILTER_LENGTH` characters with at most :data:`MAX_FILTER_TERMS` conditions, ``LIKE``
patterns are matched without backtracking (see :func:`like_matcher`: O(len(value) * len(pattern))
per value), and a compiled predicate stops with :class:`InvalidFilterError` once it has used
:data:`MAX_EVALUATION_CPU_SECONDS` of its thread's CPU time.
"""

from __future__ import annotations

import operator
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from time import thread_time
from typing import Any, Final, Literal

from catalog.exceptions import InvalidFilterError

__all__ = [
    "DEFAULT_PARTITION_NAME",
    "MAX_EVALUATION_CPU_SECONDS",
    "MAX_FILTER_LENGTH",
    "MAX_FILTER_TERMS",
    "And",
    "Between",
    "Comparison",
    "Constant",
    "FilterExpr",
    "In",
    "IsNull",
    "Like",
    "Not",
    "Or",
    "Predicate",
    "StructIn",
    "compile_expr",
    "compile_filter",
    "like_matcher",
    "like_to_regex",
    "parse_filter",
]

#: Hive's value for a NULL partition key (same as ``catalog.models.DEFAULT_PARTITION_NAME``).
DEFAULT_PARTITION_NAME: Final = "__HIVE_DEFAULT_PARTITION__"

#: Longest filter accepted, in characters.
MAX_FILTER_LENGTH: Final = 64 * 1024
#: Most conditions (comparisons, IN, LIKE, ...; a STRUCT IN counts rows x columns) in a filter.
#: Spark sends up to ``spark.sql.hive.metastorePartitionPruningInSetThreshold`` (1,000) ORed
#: equalities for one IN, plus the rest of the predicate.
MAX_FILTER_TERMS: Final = 5_000
#: CPU time (of the evaluating thread) one compiled predicate may use before it gives up.
MAX_EVALUATION_CPU_SECONDS: Final = 10.0
_BUDGET_CHECK_EVERY: Final = 64  # partitions between two looks at the clock

#: A compiled filter: takes a partition's values in key order, says whether it matches.
Predicate = Callable[[Sequence[str]], bool]

ConstantKind = Literal["string", "integer", "decimal", "date", "timestamp"]
CompareOp = Literal["=", "!=", "<", "<=", ">", ">="]


# --- syntax tree ---------------------------------------------------------------------------------


class FilterExpr:
    """Base of the parsed filter tree (immutable, comparable with ``==``)."""

    __slots__ = ()


@dataclass(frozen=True)
class Constant:
    """A literal: ``text`` is the unquoted string, canonical integer, or date/timestamp text."""

    kind: ConstantKind
    text: str


@dataclass(frozen=True)
class Or(FilterExpr):
    operands: tuple[FilterExpr, ...]


@dataclass(frozen=True)
class And(FilterExpr):
    operands: tuple[FilterExpr, ...]


@dataclass(frozen=True)
class Not(FilterExpr):
    operand: FilterExpr


@dataclass(frozen=True)
class Comparison(FilterExpr):
    """``column op value``; ``2020 < year`` is stored as ``year > 2020``."""

    column: str
    op: CompareOp
    value: Constant


@dataclass(frozen=True)
class Between(FilterExpr):
    column: str
    low: Constant
    high: Constant
    negated: bool = False


@dataclass(frozen=True)
class In(FilterExpr):
    column: str
    values: tuple[Constant, ...]
    negated: bool = False


@dataclass(frozen=True)
class Like(FilterExpr):
    column: str
    pattern: str
    negated: bool = False


@dataclass(frozen=True)
class IsNull(FilterExpr):
    column: str
    negated: bool = False


@dataclass(frozen=True)
class StructIn(FilterExpr):
    """``(struct(a, b)) IN (struct(1, 'x'), ...)``: rows of values for several columns."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Constant, ...], ...]
    negated: bool = False


# --- lexer ---------------------------------------------------------------------------------------

_KEYWORDS: Final = frozenset({"AND", "OR", "NOT", "BETWEEN", "IN", "LIKE", "IS", "NULL", "DATE",
                              "TIMESTAMP", "STRUCT", "CONST"})
_OPERATORS: Final = ("<=>", "<=", "<>", ">=", "==", "!=", "<", ">", "=")  # longest first
_OP_ALIASES: Final[dict[str, CompareOp]] = {"==": "=", "<=>": "=", "<>": "!="}
_TIMESTAMP_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}"
                                  r"(?:\.[0-9]{1,9})?")
_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DECIMAL_RE: Final = re.compile(r"[0-9]+\.[0-9]+")
_WORD_RE: Final = re.compile(r"\w+")
_STRING_ESCAPES: Final = frozenset("\\'\"")


@dataclass(frozen=True, slots=True)
class _Token:
    #: ident, qident, kw, string, int, decimal, date, timestamp, op, ( ) , - eof
    kind: str
    value: str  # name, unescaped string, number text, upper-case keyword, normalised operator
    pos: int
    text: str  # as written, for messages


def _error(text: str, pos: int, detail: str) -> InvalidFilterError:
    shown = text if len(text) <= 200 else text[:197] + "..."
    return InvalidFilterError(
        f"invalid partition filter at column {pos + 1}: {detail} (filter: {shown!r})")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "'\"":
            end, value = _scan_string(text, i)
            tokens.append(_Token("string", value, i, text[i:end]))
            i = end
        elif c == "`":
            end, value = _scan_quoted_identifier(text, i)
            tokens.append(_Token("qident", value, i, text[i:end]))
            i = end
        elif c in "(),-":
            tokens.append(_Token(c, c, i, c))
            i += 1
        elif c in "<>=!":
            op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            if op is None:
                raise _error(text, i, f"unexpected character {c!r} (did you mean '!='?)")
            tokens.append(_Token("op", _OP_ALIASES.get(op, op), i, op))
            i += len(op)
        elif "0" <= c <= "9":
            for kind, rx in (("timestamp", _TIMESTAMP_RE), ("date", _DATE_RE),
                             ("decimal", _DECIMAL_RE)):
                m = rx.match(text, i)
                if m:
                    tokens.append(_Token(kind, m.group(), i, m.group()))
                    i = m.end()
                    break
            else:
                i = _append_word(tokens, text, i)
        elif c == "_" or c.isalnum():
            i = _append_word(tokens, text, i)
        else:
            raise _error(text, i, f"unexpected character {c!r}")
    tokens.append(_Token("eof", "", n, ""))
    return tokens


def _append_word(tokens: list[_Token], text: str, i: int) -> int:
    m = _WORD_RE.match(text, i)
    assert m is not None  # the caller saw a word character
    word = m.group()
    if word.isascii() and word.isdigit():
        tokens.append(_Token("int", word, i, word))
    elif word.upper() in _KEYWORDS:
        tokens.append(_Token("kw", word.upper(), i, word))
    else:
        tokens.append(_Token("ident", word, i, word))
    return m.end()


def _scan_string(text: str, start: int) -> tuple[int, str]:
    quote, out, i, n = text[start], [], start + 1, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            out.append(nxt if nxt in _STRING_ESCAPES else c + nxt)
            i += 2
        elif c == quote:
            return i + 1, "".join(out)
        else:
            out.append(c)
            i += 1
    raise _error(text, start, f"unterminated string literal (no closing {quote})")


def _scan_quoted_identifier(text: str, start: int) -> tuple[int, str]:
    out, i, n = [], start + 1, len(text)
    while i < n:
        if text[i] == "`":
            if text.startswith("``", i):
                out.append("`")
                i += 2
                continue
            if not out:
                raise _error(text, start, "empty quoted identifier")
            return i + 1, "".join(out)
        out.append(text[i])
        i += 1
    raise _error(text, start, "unterminated quoted identifier (no closing `)")


# --- parser --------------------------------------------------------------------------------------

_PRECEDENCE: Final = {"OR": 1, "AND": 2, "NOT": 3}
_FLIPPED: Final[dict[CompareOp, CompareOp]] = {"=": "=", "!=": "!=", "<": ">", "<=": ">=",
                                               ">": "<", ">=": "<="}
_SOFT_KEYWORDS: Final = frozenset({"DATE", "TIMESTAMP", "STRUCT", "CONST"})  # usable as names
_PREDICATE_KEYWORDS: Final = frozenset({"NOT", "BETWEEN", "IN", "LIKE", "IS"})


def parse_filter(text: str) -> FilterExpr:
    """Parse a Hive partition filter; raises :class:`InvalidFilterError` saying where it fails."""
    if not text or not text.strip():
        raise InvalidFilterError("invalid partition filter: the filter is empty")
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidFilterError(
            f"invalid partition filter: the filter is {len(text):,} characters long, more than "
            f"the limit of {MAX_FILTER_LENGTH:,} (filter: {text[:100]!r}...)")
    return _Parser(text).parse()


class _Parser:
    """Boolean structure by operator precedence (explicit stacks, any nesting depth);
    conditions by recursive descent."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.terms = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        tok = self.peek()
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return tok

    def fail(self, tok: _Token, detail: str) -> InvalidFilterError:
        return _error(self.text, tok.pos, detail)

    @staticmethod
    def found(tok: _Token) -> str:
        return "end of input" if tok.kind == "eof" else repr(tok.text)

    def is_kw(self, tok: _Token, *words: str) -> bool:
        return tok.kind == "kw" and tok.value in words

    # boolean structure

    def parse(self) -> FilterExpr:
        operands: list[FilterExpr] = []
        ops: list[_Token] = []  # NOT / AND / OR keywords and '(' tokens
        expect_operand = True
        while True:
            tok = self.peek()
            if expect_operand:
                if self.is_kw(tok, "NOT"):
                    ops.append(self.advance())
                elif tok.kind == "(" and not self._condition_starts_with_paren():
                    ops.append(self.advance())
                else:
                    operands.append(self._condition())
                    self._count_terms(operands[-1], tok)
                    expect_operand = False
            elif self.is_kw(tok, "AND", "OR"):
                self._reduce(operands, ops, _PRECEDENCE[tok.value])
                ops.append(self.advance())
                expect_operand = True
            elif tok.kind == ")":
                self._reduce(operands, ops, 0)
                if not ops:
                    raise self.fail(tok, "unbalanced ')' (no matching '(')")
                ops.pop()
                self.advance()
            elif tok.kind == "eof":
                self._reduce(operands, ops, 0)
                if ops:
                    raise self.fail(ops[-1], "unbalanced '(' (no matching ')')")
                return operands[0]
            else:
                raise self.fail(tok, f"expected AND, OR or ')' but found {self.found(tok)}")

    def _count_terms(self, condition: FilterExpr, tok: _Token) -> None:
        self.terms += (len(condition.rows) * len(condition.columns)
                       if isinstance(condition, StructIn) else 1)
        if self.terms > MAX_FILTER_TERMS:
            raise self.fail(tok, f"more than {MAX_FILTER_TERMS:,} conditions (the limit of "
                                 f"terms in a filter)")

    @staticmethod
    def _reduce(operands: list[FilterExpr], ops: list[_Token], min_precedence: int) -> None:
        while ops and ops[-1].kind == "kw" and _PRECEDENCE[ops[-1].value] >= min_precedence:
            op = ops.pop().value
            right = operands.pop()
            if op == "NOT":
                operands.append(Not(right))
                continue
            left = operands.pop()
            cls = And if op == "AND" else Or
            parts = ((left.operands if isinstance(left, cls) else (left,))
                     + (right.operands if isinstance(right, cls) else (right,)))
            operands.append(cls(parts))

    def _condition_starts_with_paren(self) -> bool:
        """``(col) IN (...)`` / ``(STRUCT(...)) IN ...`` rather than a parenthesised expression."""
        if self.is_kw(self.peek(1), "STRUCT") and self.peek(2).kind == "(":
            return True
        return self._column_in_parens_at(0)

    def _column_in_parens_at(self, ahead: int) -> bool:
        after = self.peek(ahead + 3)
        return (self.peek(ahead).kind == "(" and self._is_column_at(ahead + 1)
                and self.peek(ahead + 2).kind == ")"
                and (after.kind == "op" or self.is_kw(after, *_PREDICATE_KEYWORDS)))

    def _is_column_at(self, ahead: int) -> bool:
        tok = self.peek(ahead)
        if tok.kind in ("ident", "qident"):
            return True
        # DATE '...' / TIMESTAMP '...' / STRUCT(...) start something else; otherwise a name.
        return (tok.kind == "kw" and tok.value in _SOFT_KEYWORDS
                and self.peek(ahead + 1).kind not in ("string", "("))

    # conditions

    def _try_column(self) -> str | None:
        if self._is_column_at(0):
            tok = self.advance()
            return tok.value if tok.kind != "kw" else tok.text
        if self._column_in_parens_at(0):
            self.advance()
            name = self._try_column()
            self.advance()  # ')'
            return name
        return None

    def _expect_column(self, after: str) -> str:
        name = self._try_column()
        if name is None:
            tok = self.peek()
            raise self.fail(tok, f"expected a partition column {after} but found {self.found(tok)}")
        return name

    def _expect(self, kind: str, what: str, context: str) -> _Token:
        tok = self.peek()
        if tok.kind != kind:
            raise self.fail(tok, f"expected {what} {context} but found {self.found(tok)}")
        return self.advance()

    def _expect_kw(self, word: str, context: str) -> None:
        tok = self.peek()
        if not self.is_kw(tok, word):
            raise self.fail(tok, f"expected {word} {context} but found {self.found(tok)}")
        self.advance()

    def _condition(self) -> FilterExpr:
        if self.peek().kind == "(" and self.is_kw(self.peek(1), "STRUCT"):
            return self._struct_in()
        column = self._try_column()
        if column is not None:
            return self._predicate(column)
        tok = self.peek()
        if tok.kind in ("eof", ")") or self.is_kw(tok, "AND", "OR"):
            raise self.fail(tok, f"expected a condition but found {self.found(tok)}")
        value = self._constant("or a partition column")
        op = self.peek()
        if self.is_kw(op, "LIKE"):
            raise self.fail(op, "LIKE needs the partition column on its left")
        if op.kind != "op":
            raise self.fail(op, f"expected a comparison operator after the constant "
                                f"but found {self.found(op)}")
        self.advance()
        column = self._expect_column(f"after {op.text!r}")
        return Comparison(column, _FLIPPED[_compare_op(op.value)], value)

    def _predicate(self, column: str) -> FilterExpr:
        tok = self.advance()
        if tok.kind == "op":
            return Comparison(column, _compare_op(tok.value), self._constant(f"after {tok.text!r}"))
        if self.is_kw(tok, "IS"):
            negated = self.is_kw(self.peek(), "NOT")
            if negated:
                self.advance()
            self._expect_kw("NULL", f"after {'IS NOT' if negated else 'IS'}")
            return IsNull(column, negated)
        negated = self.is_kw(tok, "NOT")
        if negated:
            tok = self.advance()
            if not self.is_kw(tok, "BETWEEN", "IN", "LIKE"):
                raise self.fail(tok, f"expected BETWEEN, IN or LIKE after NOT "
                                     f"but found {self.found(tok)}")
        if self.is_kw(tok, "BETWEEN"):
            low = self._constant("after BETWEEN")
            self._expect_kw("AND", "between the BETWEEN bounds")
            return Between(column, low, self._constant("after BETWEEN ... AND"), negated)
        if self.is_kw(tok, "IN"):
            return In(column, self._constant_list("IN"), negated)
        if self.is_kw(tok, "LIKE"):
            return Like(column, self._constant("after LIKE").text, negated)
        raise self.fail(tok, f"expected a comparison operator, BETWEEN, IN, LIKE or IS after "
                             f"column {column!r} but found {self.found(tok)}")

    def _constant_list(self, context: str) -> tuple[Constant, ...]:
        self._expect("(", "'('", f"after {context}")
        values = [self._constant(f"in the {context} list")]
        while self.peek().kind == ",":
            self.advance()
            values.append(self._constant(f"in the {context} list"))
        self._expect(")", "',' or ')'", f"in the {context} list")
        return tuple(values)

    def _struct_in(self) -> FilterExpr:
        self.advance()  # '('
        self.advance()  # STRUCT
        self._expect("(", "'('", "after STRUCT")
        columns = [self._expect_column("in STRUCT(...)")]
        while self.peek().kind == ",":
            self.advance()
            columns.append(self._expect_column("in STRUCT(...)"))
        self._expect(")", "',' or ')'", "in STRUCT(...)")
        self._expect(")", "')'", "after STRUCT(...)")
        negated = self.is_kw(self.peek(), "NOT")
        if negated:
            self.advance()
        self._expect_kw("IN", "after (STRUCT(...))")
        self._expect("(", "'('", "after IN")
        rows = []
        while True:
            tok = self.peek()
            if self.is_kw(tok, "CONST"):
                self.advance()
            self._expect_kw("STRUCT", "in the IN list")
            row = self._constant_list("STRUCT")
            if len(row) != len(columns):
                raise self.fail(tok, f"STRUCT has {len(row)} values for {len(columns)} columns")
            rows.append(row)
            if self.peek().kind != ",":
                break
            self.advance()
        self._expect(")", "',' or ')'", "in the IN list")
        return StructIn(tuple(columns), tuple(rows), negated)

    def _constant(self, context: str) -> Constant:
        tok = self.advance()
        if tok.kind == "string":
            parts = [tok.value]
            while self.peek().kind == "string":
                parts.append(self.advance().value)
            return Constant("string", "".join(parts))
        if tok.kind == "-":
            num = self.advance()
            if num.kind not in ("int", "decimal"):
                raise self.fail(num, f"expected a number after '-' but found {self.found(num)}")
            return _number("-" + num.value, num.kind)
        if tok.kind in ("int", "decimal"):
            return _number(tok.value, tok.kind)
        if tok.kind in ("date", "timestamp"):
            return self._temporal(tok, "date" if tok.kind == "date" else "timestamp", tok.value)
        if self.is_kw(tok, "DATE", "TIMESTAMP"):
            lit = self._expect("string", "a quoted string", f"after {tok.value}")
            kind: ConstantKind = "date" if tok.value == "DATE" else "timestamp"
            return self._temporal(lit, kind, lit.value)
        if self.is_kw(tok, "NULL"):
            raise self.fail(tok, "NULL is not a comparable value; use IS NULL or IS NOT NULL")
        raise self.fail(tok, f"expected a constant (quoted string, number, DATE '...' or "
                             f"TIMESTAMP '...') {context} but found {self.found(tok)}")

    def _temporal(self, tok: _Token, kind: ConstantKind, value: str) -> Constant:
        value = value.strip()
        parsed = _parse_date(value) if kind == "date" else _parse_timestamp(value)
        if parsed is None:
            raise self.fail(tok, f"invalid {kind} literal {value!r}")
        return Constant(kind, value)


def _compare_op(op: str) -> CompareOp:
    assert op in _FLIPPED, op  # the lexer produces nothing else
    return op


def _number(text: str, kind: str) -> Constant:
    if kind == "int":
        return Constant("integer", str(int(text)))
    return Constant("decimal", text)


# --- values --------------------------------------------------------------------------------------

Converter = Callable[[Any], Any]  # partition value -> comparable, or None (NULL / unparsable)

_INTEGRAL: Final = frozenset({"tinyint", "smallint", "int", "integer", "bigint"})
_DECIMAL: Final = frozenset({"decimal", "numeric"})
_FLOATING: Final = frozenset({"float", "double", "real"})
_INT_TEXT: Final = re.compile(r"[+-]?[0-9]+")
_DECIMAL_TEXT: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _key_kind(hive_type: str) -> str:
    base = re.split(r"[(<\s]", hive_type.strip().lower(), maxsplit=1)[0]
    if base in _INTEGRAL:
        return "int"
    if base in _DECIMAL:
        return "decimal"
    if base in _FLOATING:
        return "float"
    if base in ("date", "timestamp"):
        return base
    return "string"


def _to_int(value: Any) -> int | None:
    try:
        return None if "_" in value else int(value)
    except (TypeError, ValueError):
        return None


def _to_decimal(value: Any) -> Decimal | None:
    try:
        number = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        return None
    return None if number.is_nan() or "_" in value else number


def _to_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number or "_" in value else number


def _parse_date(value: Any) -> date | None:
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        return None


def _parse_timestamp(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value).replace(tzinfo=None)
    except (TypeError, ValueError):
        return None


def _date_as_timestamp(value: Any) -> datetime | None:
    day = _parse_date(value)
    return None if day is None else datetime.combine(day, time())


def _constant_number(const: Constant) -> int | Decimal | None:
    if const.kind == "integer":
        return int(const.text)
    if const.kind == "decimal":
        return Decimal(const.text)
    if const.kind == "string":
        text = const.text.strip()
        if _INT_TEXT.fullmatch(text):
            return int(text)
        if _DECIMAL_TEXT.fullmatch(text):
            return Decimal(text)
    return None


def like_to_regex(pattern: str) -> str:
    """The Python regex (for ``fullmatch``) of a filter LIKE pattern; see the module docstring.

    This is the reference for the semantics only: a backtracking regex engine takes exponential
    time on it (``%%%...%X``), so filters are matched with :func:`like_matcher`.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "%" or pattern.startswith(".*", i):
            out.append(".*")
            i += 1 if c == "%" else 2
            continue
        out.append("." if c in "_." else re.escape(c))
        i += 1
    return "".join(out)


_ONE: Final = 1  # LIKE token: any one character (``_``, ``.``); literal characters are str
_RUN: Final = 2  # LIKE token: any run of characters (``%``, ``.*``)
_LikeToken = str | int


def _like_tokens(pattern: str) -> list[_LikeToken]:
    """Exactly the reading of :func:`like_to_regex`: escapes first, then runs, then one-chars."""
    out: list[_LikeToken] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            out.append(pattern[i + 1])
            i += 2
        elif c == "%":
            out.append(_RUN)
            i += 1
        elif pattern.startswith(".*", i):
            out.append(_RUN)
            i += 2
        else:
            out.append(_ONE if c in "_." else c)
            i += 1
    return out


@dataclass(frozen=True, slots=True)
class _Segment:
    """A fixed-length piece of a LIKE pattern between runs: literals and one-char wildcards."""

    length: int
    regex: str  # literals escaped, '.' for a one-char wildcard: no repetition, no alternation
    text: str | None  # all literal
    rx: re.Pattern[str] | None  # compiled ``regex`` when it has a one-char wildcard
    # text and rx both None: one-char wildcards only, fits anywhere there is room

    def at(self, value: str, pos: int) -> bool:
        """Matches at ``pos`` (the caller made sure ``value`` has ``length`` characters there)."""
        if self.text is not None:
            return value.startswith(self.text, pos)
        if self.rx is not None:
            return self.rx.match(value, pos) is not None
        return True


def _segment(tokens: list[_LikeToken]) -> _Segment:
    regex = "".join(re.escape(t) if isinstance(t, str) else "." for t in tokens)
    if all(isinstance(t, str) for t in tokens):
        return _Segment(len(tokens), regex, "".join(str(t) for t in tokens), None)
    if all(t == _ONE for t in tokens):
        return _Segment(len(tokens), regex, None, None)
    return _Segment(len(tokens), regex, None, re.compile(regex, re.DOTALL))


def like_matcher(pattern: str) -> Callable[[str], bool]:
    """Whole-string matcher of a filter LIKE pattern, same semantics as :func:`like_to_regex`.

    Linear, never backtracking: a block of wildcards is normalised to its one-char wildcards
    followed by at most one run (``%_%_`` = ``__%``: one-chars commute with runs). That leaves
    fixed-length segments between runs: the first must match at the start, the last at the end
    (``startswith``/``endswith``, or a repetition-free regex when the segment holds ``_``), and
    each middle one is taken at its leftmost fit after the previous: for fixed-length pieces the
    leftmost fit is always as good as any other, so no choice is ever revisited. The middle
    segments run in C as one regex of atomic lazy groups, ``(?>.*?seg1)(?>.*?seg2)...`` matched
    from the end of the first segment up to the start of the last: each group scans forward to
    its leftmost fit and commits (an atomic group is never re-entered, and nothing before it
    offers a choice), so a value costs O(len(value) * len(pattern)) at worst, never exponential.
    """
    tokens = _like_tokens(pattern)
    pieces: list[list[_LikeToken]] = [[]]
    i, n = 0, len(tokens)
    while i < n:
        if isinstance(tokens[i], str):
            pieces[-1].append(tokens[i])
            i += 1
            continue
        ones, run = 0, False
        while i < n and not isinstance(tokens[i], str):
            ones += tokens[i] == _ONE
            run = run or tokens[i] == _RUN
            i += 1
        pieces[-1].extend([_ONE] * ones)
        if run:
            pieces.append([])
    segments = [_segment(p) for p in pieces]
    min_length = sum(s.length for s in segments)
    if len(segments) == 1:  # no run: the value has exactly the pattern's length
        only = segments[0]
        if only.text is not None:
            literal = only.text
            return lambda value: value == literal
        if only.rx is not None:
            whole = only.rx.fullmatch
            return lambda value: whole(value) is not None
        return lambda value: len(value) == min_length
    first, *middle, last = segments
    if not middle and first.text is not None and last.text is not None:
        prefix, suffix = first.text, last.text
        return lambda value: (len(value) >= min_length and value.startswith(prefix)
                              and value.endswith(suffix))
    if len(middle) == 1 and middle[0].text is not None and not first.length and not last.length:
        needle = middle[0].text
        return lambda value: needle in value
    first_length, last_length = first.length, last.length
    if not middle:
        def ends(value: str) -> bool:
            return (len(value) >= min_length and first.at(value, 0)
                    and last.at(value, len(value) - last_length))

        return ends
    middles = re.compile("".join(f"(?>.*?{s.regex})" for s in middle), re.DOTALL).match

    def match(value: str) -> bool:
        if len(value) < min_length or not first.at(value, 0):
            return False
        end = len(value) - last_length
        return last.at(value, end) and middles(value, first_length, end) is not None

    return match


# --- compiler ------------------------------------------------------------------------------------

_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge}
_NEGATED: Final[dict[CompareOp, CompareOp]] = {"=": "!=", "!=": "=", "<": ">=", "<=": ">",
                                               ">": "<=", ">=": "<"}


def compile_filter(text: str, partition_keys: Sequence[tuple[str, str]], *,
                   default_partition_name: str = DEFAULT_PARTITION_NAME,
                   max_cpu_seconds: float | None = MAX_EVALUATION_CPU_SECONDS) -> Predicate:
    """Compile a Hive partition filter for a table's ``(name, hive_type)`` partition keys.

    The predicate takes a partition's values (strings, in key order). Raises
    :class:`InvalidFilterError` on a syntax error (saying where), an unknown column (naming it)
    or a filter over the size limits; the predicate raises it once its calls have used
    ``max_cpu_seconds`` of CPU time (``None``: no limit).
    """
    return compile_expr(parse_filter(text), partition_keys,
                        default_partition_name=default_partition_name,
                        max_cpu_seconds=max_cpu_seconds)


def compile_expr(expr: FilterExpr, partition_keys: Sequence[tuple[str, str]], *,
                 default_partition_name: str = DEFAULT_PARTITION_NAME,
                 max_cpu_seconds: float | None = MAX_EVALUATION_CPU_SECONDS) -> Predicate:
    """Compile a parsed filter (see :func:`compile_filter`)."""
    compiler = _Compiler(partition_keys, default_partition_name)
    try:
        predicate = compiler.compile(expr, False)
    except RecursionError:
        raise InvalidFilterError("invalid partition filter: nested too deeply") from None
    return predicate if max_cpu_seconds is None else _budgeted(predicate, max_cpu_seconds)


def _budgeted(predicate: Predicate, seconds: float) -> Predicate:
    """``predicate``, raising :class:`InvalidFilterError` once its calls have used ``seconds`` of
    the calling thread's CPU time (counted from the first call; the clock is read every
    :data:`_BUDGET_CHECK_EVERY` calls)."""
    clock = thread_time
    countdown = 1
    deadline = 0.0
    thread = -1
    calls = 0

    def budgeted(values: Sequence[str]) -> bool:
        nonlocal countdown, deadline, thread, calls
        countdown -= 1
        if not countdown:
            countdown = _BUDGET_CHECK_EVERY
            calls += _BUDGET_CHECK_EVERY
            now = clock()
            if thread != threading.get_ident():  # first call, or evaluated by another thread
                thread = threading.get_ident()
                deadline = now + seconds
            elif now > deadline:
                raise InvalidFilterError(
                    f"invalid partition filter: filter evaluation exceeded {seconds:g} s of CPU "
                    f"time (after about {calls:,} partitions); simplify the filter")
        return predicate(values)

    return budgeted


def _never(values: Sequence[str]) -> bool:
    return False


_MERGED: Final = IsNull("")  # placeholder for an operand folded into an earlier IN


class _Compiler:
    def __init__(self, partition_keys: Sequence[tuple[str, str]], default_name: str) -> None:
        self.keys = [name for name, _ in partition_keys]
        self.columns = {name.lower(): (i, _key_kind(hive_type))
                        for i, (name, hive_type) in enumerate(partition_keys)}
        self.default_name = default_name

        def raw(value: Any) -> Any:
            return None if value is None or value == default_name else value

        self.raw: Converter = raw

    def column(self, name: str) -> tuple[int, str]:
        found = self.columns.get(name.lower())
        if found is None:
            keys = ", ".join(self.keys) if self.keys else "none: the table is not partitioned"
            raise InvalidFilterError(f"invalid partition filter: unknown partition column "
                                     f"{name!r} (partition keys: {keys})")
        return found

    def domain(self, kind: str, const: Constant) -> tuple[Converter, Any]:
        """How to compare a key of ``kind`` with ``const``: value converter and the constant."""
        if kind in ("int", "decimal", "float"):
            number = _constant_number(const)
            if number is not None:
                if kind == "int":
                    return _to_int, number
                if kind == "decimal":
                    return _to_decimal, Decimal(number)
                return _to_float, float(number)
        elif kind == "date":
            if const.kind == "timestamp" and (stamp := _parse_timestamp(const.text)) is not None:
                return _date_as_timestamp, stamp
            if const.kind in ("date", "string") and (day := _parse_date(const.text)) is not None:
                return _parse_date, day
        elif kind == "timestamp" and const.kind in ("timestamp", "date", "string"):
            if (stamp := _parse_timestamp(const.text)) is not None:
                return _parse_timestamp, stamp
        return self.raw, const.text

    def compile(self, node: FilterExpr, negate: bool) -> Predicate:
        """``node`` (or ``NOT node``) with NOT pushed to the leaves, so NULL matches nothing."""
        if isinstance(node, Not):
            return self.compile(node.operand, not negate)
        if isinstance(node, (And, Or)):
            operands = self.merge_equalities(node.operands) if isinstance(node, Or) else node.operands
            parts = [self.compile(p, negate) for p in operands]
            return _all(parts) if isinstance(node, And) != negate else _any(parts)
        if isinstance(node, Comparison):
            op = _NEGATED[node.op] if negate else node.op
            return self.comparison(node.column, op, node.value)
        if isinstance(node, Between):
            return self.between(node, node.negated != negate)
        if isinstance(node, In):
            return self.in_list(node, node.negated != negate)
        if isinstance(node, Like):
            return self.like(node, node.negated != negate)
        if isinstance(node, IsNull):
            return self.is_null(node.column, node.negated != negate)
        if isinstance(node, StructIn):
            rows = Or(tuple(And(tuple(Comparison(c, "=", v) for c, v in zip(node.columns, row)))
                            for row in node.rows))
            return self.compile(rows, node.negated != negate)
        raise TypeError(f"not a filter expression: {node!r}")

    def merge_equalities(self, operands: tuple[FilterExpr, ...]) -> tuple[FilterExpr, ...]:
        """ORed equalities on one column (Spark's rendering of IN) as one IN: a set lookup
        instead of one call per value. Only values compared in the same domain are merged, which
        is exactly when IN and the ORed (or, negated, ANDed ``!=``) comparisons agree."""
        groups: dict[tuple[str, Converter], list[int]] = {}
        for i, p in enumerate(operands):
            if isinstance(p, Comparison) and p.op == "=" and p.column.lower() in self.columns:
                _, kind = self.columns[p.column.lower()]
                groups.setdefault((p.column.lower(), self.domain(kind, p.value)[0]), []).append(i)
        merged: dict[int, FilterExpr] = {}
        for idxs in groups.values():
            if len(idxs) > 1:
                first = operands[idxs[0]]
                assert isinstance(first, Comparison)
                merged[idxs[0]] = In(first.column, tuple(
                    c.value for c in (operands[i] for i in idxs) if isinstance(c, Comparison)))
                merged.update((i, _MERGED) for i in idxs[1:])
        if not merged:
            return operands
        return tuple(m for m in (merged.get(i, p) for i, p in enumerate(operands))
                     if m is not _MERGED)

    def comparison(self, column: str, op: CompareOp, const: Constant) -> Predicate:
        idx, kind = self.column(column)
        conv, lit = self.domain(kind, const)
        if conv is self.raw and op == "=":
            target: str = lit
            if target == self.default_name:
                return _never

            def raw_equals(values: Sequence[str]) -> bool:
                return values[idx] == target

            return raw_equals
        compare = _COMPARE[op]

        def compare_value(values: Sequence[str]) -> bool:
            x = conv(values[idx])
            return x is not None and compare(x, lit)

        return compare_value

    def between(self, node: Between, negated: bool) -> Predicate:
        idx, kind = self.column(node.column)
        conv, low = self.domain(kind, node.low)
        high_conv, high = self.domain(kind, node.high)
        if high_conv is not conv:  # bounds of different kinds: compare each on its own terms
            if negated:
                return self.compile(Or((Comparison(node.column, "<", node.low),
                                        Comparison(node.column, ">", node.high))), False)
            return self.compile(And((Comparison(node.column, ">=", node.low),
                                     Comparison(node.column, "<=", node.high))), False)
        if negated:
            def not_between(values: Sequence[str]) -> bool:
                x = conv(values[idx])
                return x is not None and (x < low or x > high)

            return not_between

        def between(values: Sequence[str]) -> bool:
            x = conv(values[idx])
            return x is not None and low <= x <= high

        return between

    def in_list(self, node: In, negated: bool) -> Predicate:
        idx, kind = self.column(node.column)
        domains = [self.domain(kind, v) for v in node.values]
        conv = domains[0][0]
        if any(c is not conv for c, _ in domains):  # mixed kinds: one comparison per value
            op: CompareOp = "!=" if negated else "="
            parts = tuple(Comparison(node.column, op, v) for v in node.values)
            return self.compile(And(parts) if negated else Or(parts), False)
        wanted = frozenset(lit for _, lit in domains
                           if not (conv is self.raw and lit == self.default_name))
        if negated:
            def not_in(values: Sequence[str]) -> bool:
                x = conv(values[idx])
                return x is not None and x not in wanted

            return not_in
        if conv is self.raw:
            def raw_in(values: Sequence[str]) -> bool:
                return values[idx] in wanted

            return raw_in

        def in_(values: Sequence[str]) -> bool:
            return conv(values[idx]) in wanted

        return in_

    def like(self, node: Like, negated: bool) -> Predicate:
        idx, _ = self.column(node.column)
        match = like_matcher(node.pattern)
        default_name = self.default_name

        def like(values: Sequence[str]) -> bool:
            v = values[idx]
            return v is not None and v != default_name and match(v) != negated

        return like

    def is_null(self, column: str, negated: bool) -> Predicate:
        idx, _ = self.column(column)
        default_name = self.default_name

        def is_null(values: Sequence[str]) -> bool:
            v = values[idx]
            return (v is None or v == default_name) != negated

        return is_null


def _all(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        first, second = parts

        def both(values: Sequence[str]) -> bool:
            return first(values) and second(values)

        return both

    def every(values: Sequence[str]) -> bool:
        for part in parts:
            if not part(values):
                return False
        return True

    return every


def _any(parts: list[Predicate]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        first, second = parts

        def either(values: Sequence[str]) -> bool:
            return first(values) or second(values)

        return either

    def some(values: Sequence[str]) -> bool:
        for part in parts:
            if part(values):
                return True
        return False

    return some
