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
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

from catalog.exceptions import InvalidFilterError

__all__ = [
    "DEFAULT_PARTITION_NAME",
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
    "like_to_regex",
    "parse_filter",
]

#: Hive's value for a NULL partition key (same as ``catalog.models.DEFAULT_PARTITION_NAME``).
DEFAULT_PARTITION_NAME: Final = "__HIVE_DEFAULT_PARTITION__"

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
    return _Parser(text).parse()


class _Parser:
    """Boolean structure by operator precedence (explicit stacks, any nesting depth);
    conditions by recursive descent."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

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
    """The Python regex (for ``fullmatch``) of a filter LIKE pattern; see the module docstring."""
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


# --- compiler ------------------------------------------------------------------------------------

_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge}
_NEGATED: Final[dict[CompareOp, CompareOp]] = {"=": "!=", "!=": "=", "<": ">=", "<=": ">",
                                               ">": "<=", ">=": "<"}


def compile_filter(text: str, partition_keys: Sequence[tuple[str, str]], *,
                   default_partition_name: str = DEFAULT_PARTITION_NAME) -> Predicate:
    """Compile a Hive partition filter for a table's ``(name, hive_type)`` partition keys.

    The predicate takes a partition's values (strings, in key order). Raises
    :class:`InvalidFilterError` on a syntax error (saying where) or an unknown column (naming it).
    """
    return compile_expr(parse_filter(text), partition_keys,
                        default_partition_name=default_partition_name)


def compile_expr(expr: FilterExpr, partition_keys: Sequence[tuple[str, str]], *,
                 default_partition_name: str = DEFAULT_PARTITION_NAME) -> Predicate:
    """Compile a parsed filter (see :func:`compile_filter`)."""
    compiler = _Compiler(partition_keys, default_partition_name)
    try:
        return compiler.compile(expr, False)
    except RecursionError:
        raise InvalidFilterError("invalid partition filter: nested too deeply") from None


def _never(values: Sequence[str]) -> bool:
    return False


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
            parts = [self.compile(p, negate) for p in node.operands]
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
        match = re.compile(like_to_regex(node.pattern), re.DOTALL).fullmatch
        default_name = self.default_name

        def like(values: Sequence[str]) -> bool:
            v = values[idx]
            return (v is not None and v != default_name
                    and (match(v) is None) == negated)

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
