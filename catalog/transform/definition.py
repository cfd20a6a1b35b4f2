"""Transformation definitions: Alluxio's ``key=value; key=value`` syntax, parsed and validated.

A definition says how a transformation lays a partition out anew::

    file.count.max=100; file.size.min=2GiB; file.parquet.compression=zstd; sort.by=day,id

Rules (one place, one wording; every error is an :class:`InvalidOptionError` naming key and value):

* Keys (case-insensitive, stored lower case): see :data:`KNOWN_KEYS`. Unknown keys are named and the
  known keys listed; a key given twice is an error; an empty value is an error.
* Whitespace around ``;`` and ``=`` is ignored, empty segments (a trailing ``;``) are skipped, an
  empty text means "the defaults".
* Byte sizes: a whole number of bytes, or a decimal number with a unit, case-insensitive, optional
  space: ``k``/``KB``/``KiB`` = 1024, ``m``/``MB``/``MiB`` = 1024², ``g``/``GB``/``GiB`` = 1024³,
  ``t``/``TB``/``TiB`` = 1024⁴, ``p``/``PB``/``PiB`` = 1024⁵ — **1024-based for both spellings**, as
  Alluxio reads ``MB``; ``b`` means bytes. A fractional number of bytes is truncated (``0.5k`` =
  512), a fractional plain byte count (``1.5``) is refused. Sizes must be >= 1 byte and <= 1 PiB.
* ``file.count.max`` is a whole number in ``[1, 1_000_000]``.
* ``file.size.target`` unset means "equal to ``file.size.min``". A target below the minimum is
  accepted, but **the minimum wins**: :attr:`TransformDefinition.target_bytes` is
  ``max(target, min)``.
* ``sort.by`` is a comma-separated list of distinct SQL identifiers (``[A-Za-z_][A-Za-z0-9_]*``).
  An override cannot clear a default ``sort.by`` (an empty value is an error).
* ``unparseable`` (case-insensitive) is what becomes of a text field that cannot be parsed as its
  column's Hive type (LazySimpleSerDe sources: a field that is neither the NULL format nor empty,
  of a numeric, boolean, date or timestamp column, whose value Hive reads as NULL; see
  :mod:`catalog.transform.executor`): ``null`` (default: NULL, as Hive reads it, silently),
  ``fail`` (the partition, so the job, fails naming the file, line, column and value of the
  first one) or ``side-file`` (NULL in the served data, as Hive reads it, and the row also
  written to a Parquet side file outside the served directory). Left out of :meth:`to_text`
  when ``null``.
* Merging: keys given in a job's definition override the database default, key by key
  (:func:`merge`); :attr:`TransformDefinition.given` records which keys a definition set.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from catalog.exceptions import InvalidOptionError

KiB = 1024
MiB = 1024 ** 2
GiB = 1024 ** 3
TiB = 1024 ** 4
PiB = 1024 ** 5

#: Largest byte size any key accepts.
MAX_BYTES = PiB
#: Largest ``file.count.max``.
MAX_FILE_COUNT = 1_000_000

COMPRESSIONS: tuple[str, ...] = ("snappy", "zstd", "gzip", "lz4", "none")
#: Values of ``unparseable``; the first is the default (Hive's behaviour).
UNPARSEABLE_MODES: tuple[str, ...] = ("null", "fail", "side-file")

#: Unit suffix (lower case) -> multiplier. 1024-based throughout.
UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": KiB, "kb": KiB, "kib": KiB,
    "m": MiB, "mb": MiB, "mib": MiB,
    "g": GiB, "gb": GiB, "gib": GiB,
    "t": TiB, "tb": TiB, "tib": TiB,
    "p": PiB, "pb": PiB, "pib": PiB,
}

# key -> dataclass attribute, in canonical (to_text) order.
_KEY_FIELDS: dict[str, str] = {
    "file.count.max": "file_count_max",
    "file.size.min": "file_size_min",
    "file.size.target": "file_size_target",
    "file.parquet.compression": "compression",
    "row.group.size": "row_group_size",
    "sort.by": "sort_by",
    "unparseable": "unparseable",
}
#: The keys a definition understands, in canonical order.
KNOWN_KEYS: tuple[str, ...] = tuple(_KEY_FIELDS)

_BYTES_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)$", re.IGNORECASE)
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NON_FINITE = {"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan", "+nan", "-nan"}


def parse_bytes(key: str, raw: str) -> int:
    """``raw`` as a byte count in ``[1, MAX_BYTES]`` (units per :data:`UNITS`); errors name ``key``."""
    text = raw.strip()
    if text.lower() in _NON_FINITE:
        raise InvalidOptionError(f"{key} must be a finite byte size, got '{raw}'")
    if text.startswith("-"):
        raise InvalidOptionError(f"{key} must be a positive byte size, got '{raw}'")
    m = _BYTES_RE.match(text)
    if m is None or m.group(2).lower() not in UNITS:
        raise InvalidOptionError(
            f"{key} must be a byte size such as 512MiB, 2GB or 1048576 "
            f"(units k, KB, KiB, MB, MiB, GB, GiB, TB, TiB; 1024-based), got '{raw}'")
    number, unit = m.group(1), m.group(2).lower()
    try:
        value = Decimal(number) * UNITS[unit]
    except InvalidOperation as e:  # pragma: no cover - the regex admits only valid decimals
        raise InvalidOptionError(f"{key} must be a byte size, got '{raw}'") from e
    if UNITS[unit] == 1 and value != value.to_integral_value():
        raise InvalidOptionError(f"{key} must be a whole number of bytes, got '{raw}'")
    result = int(value)  # truncates toward zero
    if result < 1:
        raise InvalidOptionError(f"{key} must be a positive byte size, got '{raw}'")
    if result > MAX_BYTES:
        raise InvalidOptionError(f"{key} must be at most 1PiB, got '{raw}'")
    return result


def format_bytes(value: int) -> str:
    """Canonical text of a byte count: the largest binary unit dividing it exactly (``2GiB``)."""
    for suffix, unit in (("PiB", PiB), ("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


def _parse_count(key: str, raw: str) -> int:
    text = raw.strip()
    if text.lower() in _NON_FINITE:
        raise InvalidOptionError(f"{key} must be a finite whole number, got '{raw}'")
    if not re.fullmatch(r"[+-]?\d+", text):
        raise InvalidOptionError(f"{key} must be a whole number, got '{raw}'")
    value = int(text)
    if value < 1:
        raise InvalidOptionError(f"{key} must be at least 1, got '{raw}'")
    if value > MAX_FILE_COUNT:
        raise InvalidOptionError(f"{key} must be at most {MAX_FILE_COUNT}, got '{raw}'")
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    """A parser of a value among ``choices`` (case-insensitive, stored lower case)."""
    def parse(key: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise InvalidOptionError(f"{key} must be one of {', '.join(choices)}, got '{raw}'")
        return value
    return parse


def _parse_sort_by(key: str, raw: str) -> tuple[str, ...]:
    columns = tuple(c.strip() for c in raw.split(","))
    for c in columns:
        if not _IDENT_RE.match(c):
            raise InvalidOptionError(
                f"{key} must list column names (letters, digits, _), got bad column '{c}' "
                f"in '{raw}'")
    seen: set[str] = set()
    for c in columns:
        if c.lower() in seen:
            raise InvalidOptionError(f"{key} names column '{c}' twice in '{raw}'")
        seen.add(c.lower())
    return columns


@dataclass(frozen=True)
class TransformDefinition:
    """A validated transformation definition (immutable). Construct directly or via
    :func:`parse_definition`; the constructor validates like the parser.

    ``given`` is the set of keys explicitly set (used by :func:`merge`); it is not part of equality.
    """

    file_count_max: int = 100
    file_size_min: int = 2 * GiB
    #: Bin-packing target per output file; ``None`` follows ``file_size_min``.
    file_size_target: int | None = None
    compression: str = "snappy"
    row_group_size: int = 128 * MiB
    sort_by: tuple[str, ...] = ()
    #: What becomes of unparseable text values: one of :data:`UNPARSEABLE_MODES`.
    unparseable: str = "null"
    given: frozenset[str] = field(default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        _check_count("file.count.max", self.file_count_max)
        _check_bytes("file.size.min", self.file_size_min)
        if self.file_size_target is not None:
            _check_bytes("file.size.target", self.file_size_target)
        _check_bytes("row.group.size", self.row_group_size)
        if self.compression not in COMPRESSIONS:
            raise InvalidOptionError(
                f"file.parquet.compression must be one of {', '.join(COMPRESSIONS)}, "
                f"got '{self.compression}'")
        if self.unparseable not in UNPARSEABLE_MODES:
            raise InvalidOptionError(
                f"unparseable must be one of {', '.join(UNPARSEABLE_MODES)}, "
                f"got '{self.unparseable}'")
        if not isinstance(self.sort_by, tuple):
            object.__setattr__(self, "sort_by", tuple(self.sort_by))
        if self.sort_by:
            _parse_sort_by("sort.by", ",".join(self.sort_by))
        unknown = set(self.given) - set(KNOWN_KEYS)
        if unknown:
            raise InvalidOptionError(f"unknown transform definition keys {sorted(unknown)}")

    @property
    def target_bytes(self) -> int:
        """The effective bin-packing target: ``max(file.size.target or file.size.min, file.size.min)``
        — the minimum wins over a smaller target."""
        target = self.file_size_target if self.file_size_target is not None else self.file_size_min
        return max(target, self.file_size_min)

    def to_text(self, *, given_only: bool = False) -> str:
        """Canonical text (keys in :data:`KNOWN_KEYS` order, ``"; "``-joined, sizes in binary units);
        ``parse_definition(d.to_text()) == d``. Unset ``file.size.target``, empty ``sort.by`` and
        ``unparseable=null`` (the default) are left out; ``given_only`` writes only the keys in
        :attr:`given` (a given ``unparseable=null`` too: an override of another default)."""
        parts: list[str] = []
        for key, attr in _KEY_FIELDS.items():
            if given_only and key not in self.given:
                continue
            value: Any = getattr(self, attr)
            if value is None or value == ():
                continue
            if key == "unparseable" and value == "null" and not given_only:
                continue  # the default; definitions written before the key read the same
            if key == "sort.by":
                text = ",".join(value)
            elif key in ("file.size.min", "file.size.target", "row.group.size"):
                text = format_bytes(value)
            else:
                text = str(value)
            parts.append(f"{key}={text}")
        return "; ".join(parts)


def _check_count(key: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_FILE_COUNT:
        raise InvalidOptionError(f"{key} must be a whole number in [1, {MAX_FILE_COUNT}], got '{value}'")


def _check_bytes(key: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BYTES:
        raise InvalidOptionError(f"{key} must be a byte size in [1, 1PiB], got '{value}'")


_PARSERS = {
    "file.count.max": _parse_count,
    "file.size.min": parse_bytes,
    "file.size.target": parse_bytes,
    "row.group.size": parse_bytes,
    "file.parquet.compression": _one_of(COMPRESSIONS),
    "sort.by": _parse_sort_by,
    "unparseable": _one_of(UNPARSEABLE_MODES),
}


def parse_definition(text: str, defaults: TransformDefinition | None = None) -> TransformDefinition:
    """Parse ``key=value; ...`` onto ``defaults`` (the built-in defaults when ``None``): the keys in
    ``text`` override, the others keep the defaults' values. Raises :class:`InvalidOptionError`."""
    values: dict[str, Any] = {}
    for segment in text.split(";"):
        segment = segment.strip()
        if not segment:
            continue
        key, sep, raw = segment.partition("=")
        key, raw = key.strip().lower(), raw.strip()
        if not sep or not key:
            raise InvalidOptionError(
                f"transform definition entries must be key=value, got '{segment}'")
        if key not in _PARSERS:
            raise InvalidOptionError(
                f"unknown transform definition key '{key}'; known keys: {', '.join(KNOWN_KEYS)}")
        if key in values:
            raise InvalidOptionError(f"transform definition key '{key}' is given twice")
        if not raw:
            raise InvalidOptionError(f"transform definition key '{key}' has an empty value")
        values[key] = _PARSERS[key](key, raw)
    parsed = TransformDefinition(**{_KEY_FIELDS[k]: v for k, v in values.items()},
                                 given=frozenset(values))
    return merge(defaults, parsed) if defaults is not None else parsed


def merge(defaults: TransformDefinition, override: TransformDefinition) -> TransformDefinition:
    """``defaults`` with every key in ``override.given`` taken from ``override`` (a job's
    ``-o transform.definition=...`` over the database default). ``given`` is the union."""
    changes: dict[str, Any] = {_KEY_FIELDS[k]: getattr(override, _KEY_FIELDS[k])
                               for k in override.given}
    return replace(defaults, **changes, given=defaults.given | override.given)


__all__ = [
    "COMPRESSIONS", "KNOWN_KEYS", "MAX_BYTES", "MAX_FILE_COUNT", "UNITS", "UNPARSEABLE_MODES",
    "TransformDefinition",
    "format_bytes", "merge", "parse_bytes", "parse_definition",
]

# Keep the dataclass field list and the key table in step.
assert {f.name for f in fields(TransformDefinition)} - {"given"} == set(_KEY_FIELDS.values())
