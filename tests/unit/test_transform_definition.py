"""Transformation definitions: parsing, validation wording, canonical text and merging."""
from __future__ import annotations

import pytest

from catalog.exceptions import InvalidInputError, InvalidOptionError
from catalog.transform.definition import (
    COMPRESSIONS,
    KNOWN_KEYS,
    UNPARSEABLE_MODES,
    TransformDefinition,
    format_bytes,
    merge,
    parse_bytes,
    parse_definition,
)

KiB, MiB, GiB, TiB, PiB = 1024, 1024 ** 2, 1024 ** 3, 1024 ** 4, 1024 ** 5


def _error(text: str) -> str:
    with pytest.raises(InvalidOptionError) as e:
        parse_definition(text)
    assert isinstance(e.value, InvalidInputError)
    return str(e.value)


def test_defaults() -> None:
    d = parse_definition("")
    assert d == TransformDefinition()
    assert d.file_count_max == 100
    assert d.file_size_min == 2 * GiB
    assert d.file_size_target is None
    assert d.target_bytes == 2 * GiB  # unset target follows the minimum
    assert d.compression == "snappy"
    assert d.row_group_size == 128 * MiB
    assert d.sort_by == ()
    assert d.unparseable == "null"  # Hive's behaviour
    assert d.given == frozenset()


@pytest.mark.parametrize("text", ["", "   ", ";", " ; ;; ", "\n"])
def test_blank_text_is_defaults(text: str) -> None:
    assert parse_definition(text) == TransformDefinition()


def test_every_key() -> None:
    d = parse_definition("file.count.max=7; file.size.min=64MB; file.size.target=1GiB; "
                         "file.parquet.compression=zstd; sort.by=day,id; row.group.size=32MiB; "
                         "unparseable=fail")
    assert (d.file_count_max, d.file_size_min, d.file_size_target) == (7, 64 * MiB, GiB)
    assert (d.compression, d.sort_by, d.row_group_size) == ("zstd", ("day", "id"), 32 * MiB)
    assert d.unparseable == "fail"
    assert d.target_bytes == GiB
    assert d.given == frozenset(KNOWN_KEYS)


@pytest.mark.parametrize("codec", COMPRESSIONS)
def test_each_compression(codec: str) -> None:
    assert parse_definition(f"file.parquet.compression={codec.upper()}").compression == codec


def test_whitespace_case_and_trailing_semicolon() -> None:
    d = parse_definition("  FILE.COUNT.MAX =  3 ;\tsort.by = a , b_2 ;  ")
    assert d.file_count_max == 3
    assert d.sort_by == ("a", "b_2")
    assert d.given == {"file.count.max", "sort.by"}


@pytest.mark.parametrize("raw,expected", [
    ("1", 1), ("2147483648", 2 * GiB), ("10b", 10), ("10 B", 10),
    ("1k", KiB), ("1K", KiB), ("1kb", KiB), ("1KB", KiB), ("1KiB", KiB), ("1 kib", KiB),
    ("1m", MiB), ("1MB", MiB), ("1MiB", MiB), ("1 mb", MiB),
    ("1g", GiB), ("1GB", GiB), ("1GiB", GiB), ("1.5GB", 3 * GiB // 2), ("1.5 GiB", 3 * GiB // 2),
    ("1t", TiB), ("1TB", TiB), ("1TiB", TiB), (".5MiB", MiB // 2), ("2.GB", 2 * GiB),
    ("0.5k", 512), ("0.001k", 1), ("1PiB", PiB), ("1PB", PiB),
])
def test_units_table(raw: str, expected: int) -> None:
    assert parse_bytes("file.size.min", raw) == expected
    assert parse_definition(f"file.size.min={raw}").file_size_min == expected


@pytest.mark.parametrize("key", ["file.size.min", "file.size.target", "row.group.size"])
@pytest.mark.parametrize("raw,fragment", [
    ("-1", "positive"), ("-5MB", "positive"), ("0", "positive"), ("0GB", "positive"),
    ("0.0001k", "positive"), ("inf", "finite"), ("NaN", "finite"), ("-infinity", "finite"),
    ("1.5", "whole number of bytes"), ("2PiB", "at most 1PiB"), ("1025TiB", "at most 1PiB"),
    ("99999999999999999999", "at most 1PiB"), ("12 parsecs", "byte size"), ("1e9", "byte size"),
    ("GB", "byte size"), ("1 G B", "byte size"), ("0x10", "byte size"),
])
def test_bad_byte_values_name_key_and_value(key: str, raw: str, fragment: str) -> None:
    message = _error(f"{key}={raw}")
    assert key in message
    assert f"'{raw}'" in message
    assert fragment in message


@pytest.mark.parametrize("raw,fragment", [
    ("0", "at least 1"), ("-3", "at least 1"), ("1.5", "whole number"), ("ten", "whole number"),
    ("inf", "finite"), ("nan", "finite"), ("1000001", "at most 1000000"), ("5k", "whole number"),
])
def test_bad_file_count(raw: str, fragment: str) -> None:
    message = _error(f"file.count.max={raw}")
    assert "file.count.max" in message and f"'{raw}'" in message and fragment in message


def test_file_count_bounds_accepted() -> None:
    assert parse_definition("file.count.max=1").file_count_max == 1
    assert parse_definition("file.count.max=1000000").file_count_max == 1_000_000


def test_unknown_key_is_named_and_known_keys_listed() -> None:
    message = _error("file.count.max=3; file.size.max=1GB")
    assert "'file.size.max'" in message
    for key in KNOWN_KEYS:
        assert key in message


def test_duplicate_key() -> None:
    message = _error("file.count.max=3; FILE.COUNT.MAX=4")
    assert "'file.count.max'" in message and "twice" in message


@pytest.mark.parametrize("key", KNOWN_KEYS)
def test_empty_value(key: str) -> None:
    message = _error(f"{key}= ;")
    assert f"'{key}'" in message and "empty value" in message


@pytest.mark.parametrize("text", ["file.count.max", "=5", " = ", "sort.by a"])
def test_not_key_value(text: str) -> None:
    assert f"'{text.strip()}'" in _error(text)


def test_bad_compression_lists_allowed() -> None:
    message = _error("file.parquet.compression=brotli")
    assert "file.parquet.compression" in message and "'brotli'" in message
    for codec in COMPRESSIONS:
        assert codec in message


@pytest.mark.parametrize("raw,bad", [
    ("a,,b", ""), ("1col", "1col"), ("a-b", "a-b"), ("a b", "a b"), ("a,", ""),
    ("x;y", "x"), ("`a`", "`a`"), ("a.b", "a.b"),
])
def test_bad_sort_columns(raw: str, bad: str) -> None:
    if ";" in raw:  # the ';' ends the entry: 'y' is then an entry without '='
        assert "'y'" in _error(f"sort.by={raw}")
        return
    message = _error(f"sort.by={raw}")
    assert "sort.by" in message and f"'{bad}'" in message


def test_sort_column_twice() -> None:
    message = _error("sort.by=a,b,A")
    assert "sort.by" in message and "'A'" in message and "twice" in message


def test_constructor_validates_too() -> None:
    with pytest.raises(InvalidOptionError, match="file.count.max"):
        TransformDefinition(file_count_max=0)
    with pytest.raises(InvalidOptionError, match="file.size.min"):
        TransformDefinition(file_size_min=-1)
    with pytest.raises(InvalidOptionError, match="file.size.target"):
        TransformDefinition(file_size_target=2 * PiB)
    with pytest.raises(InvalidOptionError, match="brotli"):
        TransformDefinition(compression="brotli")
    with pytest.raises(InvalidOptionError, match="sort.by"):
        TransformDefinition(sort_by=("ok", "not ok"))
    assert TransformDefinition(sort_by=["a"]).sort_by == ("a",)  # type: ignore[arg-type]


def test_target_smaller_than_min_min_wins() -> None:
    d = parse_definition("file.size.min=1GiB; file.size.target=256MiB")
    assert d.file_size_target == 256 * MiB  # kept as given (and written back by to_text)
    assert d.target_bytes == GiB
    assert parse_definition("file.size.min=1GiB; file.size.target=4GiB").target_bytes == 4 * GiB


@pytest.mark.parametrize("value,text", [
    (1, "1"), (1000, "1000"), (KiB, "1KiB"), (1536, "1536"), (3 * MiB // 2, "1536KiB"),
    (2 * GiB, "2GiB"), (3 * TiB, "3TiB"), (PiB, "1PiB"), (2_000_000_000, "1953125KiB"), (2_000_000_001, "2000000001"),
])
def test_format_bytes(value: int, text: str) -> None:
    assert format_bytes(value) == text
    assert parse_bytes("k", text) == value


def test_to_text_canonical() -> None:
    assert TransformDefinition().to_text() == (
        "file.count.max=100; file.size.min=2GiB; file.parquet.compression=snappy; "
        "row.group.size=128MiB")
    d = parse_definition("sort.by=b,a; file.size.target=1.5GB;row.group.size=1000;"
                         "file.parquet.compression=GZIP;file.count.max=9;file.size.min=1GB")
    assert d.to_text() == ("file.count.max=9; file.size.min=1GiB; file.size.target=1536MiB; "
                           "file.parquet.compression=gzip; row.group.size=1000; sort.by=b,a")
    assert d.to_text(given_only=True) == d.to_text()
    assert parse_definition("file.count.max=5").to_text(given_only=True) == "file.count.max=5"


@pytest.mark.parametrize("text", [
    "", "file.count.max=1", "file.size.min=1", "file.size.target=7; sort.by=x",
    "file.size.min=1.5GB; file.size.target=3 kb; row.group.size=1PiB; file.parquet.compression=none",
    "sort.by=a,b,c_1; file.count.max=1000000",
])
def test_round_trip(text: str) -> None:
    d = parse_definition(text)
    again = parse_definition(d.to_text())
    assert again == d
    assert again.to_text() == d.to_text()
    assert parse_definition(d.to_text(given_only=True)) == d


def test_round_trip_over_nondefault_definition() -> None:
    d = TransformDefinition(file_count_max=3, file_size_min=5, file_size_target=4 * MiB,
                            compression="lz4", row_group_size=GiB + 1, sort_by=("z",))
    assert parse_definition(d.to_text()) == d


def test_merge_job_overrides_database_default() -> None:
    db = parse_definition("file.count.max=10; file.parquet.compression=zstd; sort.by=day")
    job = parse_definition("file.count.max=3; file.size.min=1MiB")
    merged = merge(db, job)
    assert merged.file_count_max == 3  # overridden
    assert merged.file_size_min == MiB  # overridden (the db had the built-in default)
    assert merged.compression == "zstd"  # kept from the database
    assert merged.sort_by == ("day",)  # kept from the database
    assert merged.row_group_size == 128 * MiB  # built-in default
    assert merged.given == {"file.count.max", "file.parquet.compression", "sort.by",
                            "file.size.min"}
    # the job's definition parsed onto the database default is the same thing
    assert parse_definition("file.count.max=3; file.size.min=1MiB", defaults=db) == merged
    # an override that repeats a default value still counts as given
    assert merge(db, parse_definition("file.parquet.compression=snappy")).compression == "snappy"


def test_merge_with_nothing_given_keeps_defaults() -> None:
    db = parse_definition("file.count.max=10; sort.by=a")
    assert merge(db, parse_definition("")) == db
    assert parse_definition("", defaults=db) == db
    # non-given fields of the override do not leak in, even if they differ from the defaults
    assert merge(db, TransformDefinition(file_count_max=1)).file_count_max == 10


def test_merge_errors_still_reported_against_defaults() -> None:
    db = parse_definition("file.count.max=10")
    with pytest.raises(InvalidOptionError, match="file.size.min"):
        parse_definition("file.size.min=0", defaults=db)


def test_frozen() -> None:
    d = TransformDefinition()
    with pytest.raises(AttributeError):
        d.file_count_max = 5  # type: ignore[misc]


@pytest.mark.parametrize("raw,expected", [
    ("null", "null"), ("NULL", "null"), ("fail", "fail"), (" Fail ", "fail"),
    ("side-file", "side-file"), ("SIDE-FILE", "side-file"),
])
def test_unparseable_values(raw: str, expected: str) -> None:
    d = parse_definition(f"unparseable={raw}")
    assert d.unparseable == expected
    assert d.given == {"unparseable"}


@pytest.mark.parametrize("raw", ["drop", "side_file", "sidefile", "true", "0", "null,fail"])
def test_bad_unparseable_names_key_value_and_modes(raw: str) -> None:
    message = _error(f"unparseable={raw}")
    assert "unparseable" in message and f"'{raw}'" in message
    for mode in UNPARSEABLE_MODES:
        assert mode in message
    with pytest.raises(InvalidOptionError, match="unparseable"):
        TransformDefinition(unparseable=raw)


def test_unparseable_in_text() -> None:
    # The default is left out (definitions written before the key read the same) ...
    assert "unparseable" not in TransformDefinition().to_text()
    assert "unparseable" not in parse_definition("unparseable=null").to_text()
    # ... unless given (an override of another default); the others are written.
    assert parse_definition("unparseable=null").to_text(given_only=True) == "unparseable=null"
    side = parse_definition("sort.by=a; unparseable=side-file")
    assert side.to_text().endswith("sort.by=a; unparseable=side-file")
    for d in (side, parse_definition("unparseable=fail"), parse_definition("unparseable=null")):
        assert parse_definition(d.to_text()) == d
        assert parse_definition(d.to_text(given_only=True)) == d


def test_unparseable_merge() -> None:
    db = parse_definition("unparseable=side-file; file.count.max=3")
    assert merge(db, parse_definition("file.count.max=4")).unparseable == "side-file"
    job = merge(db, parse_definition("unparseable=null"))
    assert job.unparseable == "null"
    assert parse_definition(job.to_text()).unparseable == "null"  # what a job stores
    assert parse_definition(job.to_text(given_only=True), defaults=db).unparseable == "null"
