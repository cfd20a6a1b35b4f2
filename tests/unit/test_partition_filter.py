"""Hive partition filter grammar: parsing, precedence, typed comparison semantics, errors."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from catalog.exceptions import InvalidFilterError
from catalog.partition_filter import (
    DEFAULT_PARTITION_NAME,
    And,
    Between,
    Comparison,
    Constant,
    In,
    IsNull,
    Like,
    Not,
    Or,
    StructIn,
    compile_filter,
    like_to_regex,
    parse_filter,
)

KEYS = [("year", "int"), ("region", "string"), ("ds", "date")]
PARTS = [
    ("2018", "us", "2018-06-01"),
    ("2019", "eu", "2019-12-31"),
    ("2020", "us-east", "2020-01-01"),
    ("2021", "ap", "2021-02-28"),
    ("9", "9", "2009-09-09"),
    ("10", "10", "2010-10-10"),
]


def matching(text: str, keys: Sequence[tuple[str, str]] = KEYS,
             parts: Sequence[Sequence[str]] = PARTS, col: int = 0) -> list[str]:
    """Values of column ``col`` of the partitions the filter selects, in order."""
    pred = compile_filter(text, keys)
    return [p[col] for p in parts if pred(p)]


def year(value: int) -> Comparison:
    return Comparison("year", "=", Constant("integer", str(value)))


# --- parse tree ----------------------------------------------------------------------------------


def test_and_binds_tighter_than_or() -> None:
    assert parse_filter("year = 1 or year = 2 and year = 3") == Or((year(1), And((year(2), year(3)))))
    assert parse_filter("year = 1 and year = 2 or year = 3") == Or((And((year(1), year(2))), year(3)))


def test_parentheses_override_precedence() -> None:
    assert parse_filter("(year = 1 or year = 2) and year = 3") == And((Or((year(1), year(2))), year(3)))


def test_not_binds_tighter_than_and() -> None:
    assert parse_filter("not year = 1 and year = 2") == And((Not(year(1)), year(2)))
    assert parse_filter("not (year = 1 and year = 2)") == Not(And((year(1), year(2))))
    assert parse_filter("NOT NOT year = 1") == Not(Not(year(1)))


def test_chains_are_flattened() -> None:
    assert parse_filter("((year = 1 or year = 2) or year = 3) or year = 4") == \
        Or((year(1), year(2), year(3), year(4)))


def test_keywords_are_case_insensitive() -> None:
    assert parse_filter("year = 1 Or year = 2 AnD NoT year = 3") == \
        Or((year(1), And((year(2), Not(year(3))))))
    assert parse_filter("year nOt BeTwEeN 1 aNd 2") == \
        Between("year", Constant("integer", "1"), Constant("integer", "2"), negated=True)


@pytest.mark.parametrize(("text", "op"), [
    ("2020 < year", ">"), ("2020 <= year", ">="), ("2020 > year", "<"), ("2020 >= year", "<="),
    ("2020 = year", "="), ("2020 != year", "!="), ("2020 <> year", "!="),
])
def test_constant_on_the_left_is_flipped(text: str, op: str) -> None:
    assert parse_filter(text) == Comparison("year", op, Constant("integer", "2020"))  # type: ignore[arg-type]


def test_operator_aliases_normalise() -> None:
    assert parse_filter("year == 5") == parse_filter("year <=> 5") == parse_filter("year = 5")
    assert parse_filter("year <> 5") == parse_filter("year != 5")


def test_constants() -> None:
    assert parse_filter("year = -5") == Comparison("year", "=", Constant("integer", "-5"))
    assert parse_filter("year = - 007") == Comparison("year", "=", Constant("integer", "-7"))
    assert parse_filter("year = 1.50") == Comparison("year", "=", Constant("decimal", "1.50"))
    assert parse_filter("ds = date '2020-01-02'") == Comparison("ds", "=", Constant("date", "2020-01-02"))
    assert parse_filter("ds = 2020-01-02") == Comparison("ds", "=", Constant("date", "2020-01-02"))
    assert parse_filter("ts = TIMESTAMP '2020-01-02 03:04:05'") == \
        Comparison("ts", "=", Constant("timestamp", "2020-01-02 03:04:05"))
    assert parse_filter("ts = 2020-01-02 03:04:05.123") == \
        Comparison("ts", "=", Constant("timestamp", "2020-01-02 03:04:05.123"))


def test_other_condition_forms() -> None:
    us, eu = Constant("string", "us"), Constant("string", "eu")
    assert parse_filter("region in ('us', \"eu\")") == In("region", (us, eu))
    assert parse_filter("(region) NOT IN ('us')") == In("region", (us,), negated=True)
    assert parse_filter("region like 'u%'") == Like("region", "u%")
    assert parse_filter("region not like 'u%'") == Like("region", "u%", negated=True)
    assert parse_filter("region is null") == IsNull("region")
    assert parse_filter("region IS NOT NULL") == IsNull("region", negated=True)
    assert parse_filter("(struct(year, region)) in (const struct(1, 'us'), struct(2, 'eu'))") == \
        StructIn(("year", "region"), ((Constant("integer", "1"), us), (Constant("integer", "2"), eu)))


# --- quoting -------------------------------------------------------------------------------------


def test_quoted_identifiers_and_strings() -> None:
    assert parse_filter("`year` = 1") == year(1)
    assert parse_filter("`we``ird` = 'x'") == Comparison("we`ird", "=", Constant("string", "x"))
    assert parse_filter('region = "it\'s"') == Comparison("region", "=", Constant("string", "it's"))
    assert parse_filter(r"region = 'it\'s'") == Comparison("region", "=", Constant("string", "it's"))
    assert parse_filter(r'region = "say \"hi\""') == \
        Comparison("region", "=", Constant("string", 'say "hi"'))
    assert parse_filter(r"region = 'a\\b'") == Comparison("region", "=", Constant("string", "a\\b"))


def test_unknown_backslash_sequences_are_kept_as_written() -> None:
    # Spark sends raw values unescaped; Hive keeps every backslash.
    assert parse_filter(r'region = "C:\data\new"') == \
        Comparison("region", "=", Constant("string", r"C:\data\new"))
    assert matching(r'region = "C:\data"', parts=[("1", r"C:\data", "2020-01-01")], col=1) == \
        [r"C:\data"]


def test_adjacent_strings_concatenate() -> None:
    assert parse_filter("region = 'us' \"-\" 'east'") == \
        Comparison("region", "=", Constant("string", "us-east"))


def test_keyword_named_columns() -> None:
    keys = [("date", "date"), ("timestamp", "string")]
    parts = [("2020-01-01", "a"), ("2020-01-02", "b")]
    assert matching("date = date '2020-01-02'", keys, parts) == ["2020-01-02"]
    assert matching("date >= '2020-01-01' and timestamp = 'a'", keys, parts) == ["2020-01-01"]
    assert matching("(date) in (2020-01-01)", keys, parts) == ["2020-01-01"]


def test_column_names_are_case_insensitive() -> None:
    assert matching("YEAR = 2020 and `Region` = 'us-east'") == ["2020"]
    assert matching("year = 2020", keys=[("Year", "INT"), ("r", "string"), ("d", "date")]) == ["2020"]


# --- every operator ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("year = 2020", ["2020"]),
    ("year == 2020", ["2020"]),
    ("year <=> 2020", ["2020"]),
    ("year != 2020", ["2018", "2019", "2021", "9", "10"]),
    ("year <> 2020", ["2018", "2019", "2021", "9", "10"]),
    ("year < 2019", ["2018", "9", "10"]),
    ("year <= 2019", ["2018", "2019", "9", "10"]),
    ("year > 2019", ["2020", "2021"]),
    ("year >= 2019", ["2019", "2020", "2021"]),
    ("year between 2019 and 2020", ["2019", "2020"]),
    ("year not between 2019 and 2020", ["2018", "2021", "9", "10"]),
    ("year in (2018, 2021, 3)", ["2018", "2021"]),
    ("year not in (2018, 2021)", ["2019", "2020", "9", "10"]),
    ("(year) in (9)", ["9"]),
    ("year like '20%'", ["2018", "2019", "2020", "2021"]),
    ("year not like '20%'", ["9", "10"]),
    ("year is not null", ["2018", "2019", "2020", "2021", "9", "10"]),
    ("year is null", []),
])
def test_each_operator_on_an_int_key(text: str, expected: list[str]) -> None:
    assert matching(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("2019 < year", ["2020", "2021"]),
    ("2019 <= year", ["2019", "2020", "2021"]),
    ("2019 > year", ["2018", "9", "10"]),
    ("2019 >= year", ["2018", "2019", "9", "10"]),
    ("2019 = year", ["2019"]),
    ("2019 != year", ["2018", "2020", "2021", "9", "10"]),
    ("'us' = region", ["2018"]),
    ("'eu' < region", ["2018", "2020"]),
])
def test_constant_on_the_left(text: str, expected: list[str]) -> None:
    assert matching(text) == expected


def test_precedence_in_evaluation() -> None:
    # AND first: 2018 or (2019 and region us) -> only 2018 (2019 is eu)
    assert matching("year = 2018 or year = 2019 and region = 'us'") == ["2018"]
    assert matching("(year = 2018 or year = 2019) and region = 'eu'") == ["2019"]
    assert matching("not year = 2018 and year > 2017") == ["2019", "2020", "2021"]
    assert matching("not (year = 2018 or year < 2000)") == ["2019", "2020", "2021"]


# --- typed comparison ----------------------------------------------------------------------------


def test_integral_keys_compare_as_numbers_and_string_keys_as_strings() -> None:
    assert matching("year > 9") == ["2018", "2019", "2020", "2021", "10"]
    # as strings '10' < '9' (and letters sort after digits)
    assert matching("region > '9'", col=1) == ["us", "eu", "us-east", "ap"]
    assert matching("region > '9'", parts=[("1", "10", "2020-01-01"), ("1", "a", "2020-01-01")],
                    col=1) == ["a"]
    assert matching("region > 9", parts=[("1", "10", "2020-01-01")], col=1) == []
    assert matching("region < 9", parts=[("1", "10", "2020-01-01")], col=1) == ["10"]


def test_numeric_string_constant_compares_numerically_on_a_numeric_key() -> None:
    assert matching("year > '9'") == ["2018", "2019", "2020", "2021", "10"]
    assert matching("year = 'x'") == []


@pytest.mark.parametrize("hive_type", ["tinyint", "smallint", "int", "bigint", "INT",
                                       "decimal(10,2)", "float", "double"])
def test_numeric_key_types(hive_type: str) -> None:
    keys = [("n", hive_type)]
    parts = [("9",), ("10",), ("-3",), ("abc",), (DEFAULT_PARTITION_NAME,)]
    assert matching("n > 9", keys, parts) == ["10"]
    assert matching("n < 0", keys, parts) == ["-3"]
    assert matching("n in (9, -3)", keys, parts) == ["9", "-3"]
    assert matching("n between -3 and 9", keys, parts) == ["9", "-3"]


def test_decimal_and_float_keys_with_fractions() -> None:
    parts = [("0.1",), ("1.50",), ("2",), ("NaN",)]
    assert matching("x = 1.5", [("x", "decimal(5,2)")], parts) == ["1.50"]
    assert matching("x = 0.1", [("x", "double")], parts) == ["0.1"]
    assert matching("x < 1.6 and x > 0.5", [("x", "float")], parts) == ["1.50"]
    assert matching("x != 2", [("x", "double")], parts) == ["0.1", "1.50"]  # NaN matches nothing
    assert matching("x > 1.5", [("x", "int")], [("1",), ("2",)]) == ["2"]


def test_unparsable_numeric_value_matches_no_comparison_even_negated() -> None:
    parts = [("abc", "x", "2020-01-01"), ("5", "x", "2020-01-01")]
    assert matching("year > 1", parts=parts) == ["5"]
    assert matching("not year > 1", parts=parts) == []
    assert matching("year != 1", parts=parts) == ["5"]
    assert matching("year not in (1)", parts=parts) == ["5"]


def test_date_keys() -> None:
    assert matching("ds > date '2019-12-31'", col=2) == ["2020-01-01", "2021-02-28"]
    assert matching("ds >= '2019-12-31' and ds < 2021-01-01", col=2) == \
        ["2019-12-31", "2020-01-01"]
    assert matching("ds between date '2010-01-01' and '2019-01-01'", col=2) == \
        ["2018-06-01", "2010-10-10"]
    assert matching("ds in (2020-01-01, '2009-09-09')", col=2) == ["2020-01-01", "2009-09-09"]
    assert matching("ds < timestamp '2009-09-09 12:00:00'", col=2) == ["2009-09-09"]
    assert matching("ds = 'not a date'", col=2) == []


def test_timestamp_keys() -> None:
    keys = [("ts", "timestamp")]
    parts = [("2020-01-01 00:00:00",), ("2020-01-01 12:30:00.5",), ("2020-01-02 00:00:00",)]
    assert matching("ts > timestamp '2020-01-01 00:00:00'", keys, parts) == \
        ["2020-01-01 12:30:00.5", "2020-01-02 00:00:00"]
    assert matching("ts = date '2020-01-02'", keys, parts) == ["2020-01-02 00:00:00"]
    assert matching("ts < '2020-01-01 12:30:00.500'", keys, parts) == ["2020-01-01 00:00:00"]


def test_string_comparison_is_lexicographic() -> None:
    parts = [("1", v, "2020-01-01") for v in ("a", "B", "ab", "b", "")]
    assert matching("region < 'b'", parts=parts, col=1) == ["a", "B", "ab", ""]
    assert matching("region between 'a' and 'ab'", parts=parts, col=1) == ["a", "ab"]


def test_mixed_in_list_and_between_bounds() -> None:
    # a numeric key with one numeric and one non-numeric constant compares each on its own terms
    assert matching("year in (2019, 'x')") == ["2019"]
    assert matching("year not in (2019, 'x')") == ["2018", "2020", "2021", "9", "10"]
    assert matching("year between 2020 and 'zzz'", col=0) == ["2020", "2021"]


def test_struct_in() -> None:
    assert matching("(struct(year, region)) in (struct(2019, 'eu'), struct(2020, 'us'))") == ["2019"]
    assert matching("(struct(year, region)) not in (struct(2019, 'eu'), struct(2018, 'us'))") == \
        ["2020", "2021", "9", "10"]


# --- LIKE ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "expected"), [
    ("us%", ["us", "us-east"]),
    ("%east", ["us-east"]),
    ("_s", ["us"]),
    ("u_", ["us"]),
    ("%", ["us", "eu", "us-east", "ap", "9", "10"]),
    ("us", ["us"]),
    ("US%", []),
    # Spark pushes startsWith / endsWith / contains as regex-style .* patterns
    ("us.*", ["us", "us-east"]),
    (".*east", ["us-east"]),
    (".*s-e.*", ["us-east"]),
    ("u.", ["us"]),
])
def test_like(pattern: str, expected: list[str]) -> None:
    assert matching(f"region like '{pattern}'", col=1) == expected


def test_like_escapes_and_literal_characters() -> None:
    parts = [("1", v, "2020-01-01") for v in ("50%", "500", "a_b", "axb", "a+b", "aab", "a\\b")]
    assert matching(r"region like '50\%'", parts=parts, col=1) == ["50%"]
    assert matching(r"region like '50\\%'", parts=parts, col=1) == ["50%"]
    assert matching(r"region like 'a\_b'", parts=parts, col=1) == ["a_b"]
    assert matching("region like 'a+b'", parts=parts, col=1) == ["a+b"]  # not a regex '+'
    assert matching("region like 'a\\\\\\\\b'", parts=parts, col=1) == ["a\\b"]
    assert like_to_regex("a.*b_%") == "a.*b..*"


def test_like_with_the_column_on_the_right_is_rejected() -> None:
    with pytest.raises(InvalidFilterError, match="LIKE needs the partition column on its left"):
        parse_filter("'us%' like region")


# --- default partition (NULL) --------------------------------------------------------------------


NULLS = [("2020", "us", "2020-01-01"), ("2020", DEFAULT_PARTITION_NAME, "2020-01-01"),
         (DEFAULT_PARTITION_NAME, "eu", DEFAULT_PARTITION_NAME)]


@pytest.mark.parametrize(("text", "expected"), [
    ("region is null", [DEFAULT_PARTITION_NAME]),
    ("region is not null", ["us", "eu"]),
    ("region = 'us'", ["us"]),
    ("region != 'us'", ["eu"]),
    ("region not in ('us')", ["eu"]),
    ("region not like 'x%'", ["us", "eu"]),
    ("not region = 'us'", ["eu"]),
    ("not (region = 'us' or region > 'zz')", ["eu"]),
    (f"region = '{DEFAULT_PARTITION_NAME}'", []),
    ("region >= ''", ["us", "eu"]),
])
def test_default_partition_is_null(text: str, expected: list[str]) -> None:
    assert matching(text, parts=NULLS, col=1) == expected


def test_default_partition_on_typed_keys_and_custom_name() -> None:
    assert matching("year is null or ds is null", parts=NULLS, col=1) == ["eu"]
    assert matching("not year = 1", parts=NULLS, col=1) == ["us", DEFAULT_PARTITION_NAME]
    pred = compile_filter("region is null", KEYS, default_partition_name="~null~")
    assert pred(("1", "~null~", "2020-01-01")) is True
    assert pred(("1", DEFAULT_PARTITION_NAME, "2020-01-01")) is False


# --- what Spark 4 sends --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("year = 2020", ["2020"]),
    ('region = "us"', ["2018"]),
    ("(year >= 2019 and year <= 2020)", ["2019", "2020"]),
    ("((year >= 2019 and year <= 2020) and region = \"us-east\")", ["2020"]),
    ("(region = \"us\" or region = \"eu\")", ["2018", "2019"]),
    ("(region != \"us\" and region != \"eu\")", ["2020", "2021", "9", "10"]),
    ("(ds = 2020-01-01 or ds = 2021-02-28)", ["2020", "2021"]),
    ("ds >= 2020-01-01", ["2020", "2021"]),
    ('region like "us.*"', ["2018", "2020"]),
    ('region like ".*-east"', ["2020"]),
    ("2019 < year and year != 2021", ["2020"]),
])
def test_spark_filters(text: str, expected: list[str]) -> None:
    assert matching(text) == expected


# --- errors --------------------------------------------------------------------------------------


def test_unknown_column_is_named() -> None:
    with pytest.raises(InvalidFilterError, match=r"unknown partition column 'month'.*year, region, ds"):
        compile_filter("year = 1 and month = 2", KEYS)
    with pytest.raises(InvalidFilterError, match="'nope'"):
        compile_filter("(struct(year, nope)) in (struct(1, 2))", KEYS)
    with pytest.raises(InvalidFilterError, match="not partitioned"):
        compile_filter("year = 1", [])


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("   \n", "empty"),
    ("(year = 1", r"column 1: unbalanced '\('"),
    ("((year = 1) or (year = 2)", r"column 1: unbalanced '\('"),
    ("year = 1)", r"column 9: unbalanced '\)'"),
    ("year = 1 2", "column 10: expected AND, OR or '\\)' but found '2'"),
    ("year = 1 region = 2", "column 10: expected AND, OR"),
    ("region = 'us", "column 10: unterminated string literal"),
    ('region = "us\\"', "column 10: unterminated string literal"),
    ("`year = 1", "column 1: unterminated quoted identifier"),
    ("year =", "column 7: expected a constant .* but found end of input"),
    ("year = 1 and", "column 13: expected a condition but found end of input"),
    ("year = 1 or or year = 2", "column 13: expected a condition but found 'or'"),
    ("()", "column 2: expected a condition but found '\\)'"),
    ("year", "column 5: expected a comparison operator, BETWEEN, IN, LIKE or IS after column 'year'"),
    ("year ! 1", "column 6: unexpected character '!'"),
    ("year = @", "column 8: unexpected character '@'"),
    ("year in ()", "column 10: expected a constant"),
    ("year in (1, 2", "column 14: expected ',' or '\\)' in the IN list"),
    ("year between 1", "column 15: expected AND between the BETWEEN bounds"),
    ("year not = 1", "column 10: expected BETWEEN, IN or LIKE after NOT"),
    ("year is 1", "column 9: expected NULL after IS"),
    ("year = null", "use IS NULL"),
    ("1 = 2", "column 5: expected a partition column after '='"),
    ("1 year", "column 3: expected a comparison operator after the constant"),
    ("year = month", "column 8: expected a constant"),
    ("year = -x", "column 9: expected a number after '-'"),
    ("ds = date '2020-13-01'", "column 11: invalid date literal '2020-13-01'"),
    ("ts = timestamp 'noon'", "column 16: invalid timestamp literal"),
    ("ds = date 2020", "column 11: expected a quoted string after DATE"),
    ("(struct(year, region)) in (struct(1))", "STRUCT has 1 values for 2 columns"),
    ("``= 1", "empty quoted identifier"),
])
def test_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(InvalidFilterError, match=message):
        parse_filter(text)
    with pytest.raises(InvalidFilterError, match=message):
        compile_filter(text, KEYS)


def test_error_message_quotes_the_filter() -> None:
    with pytest.raises(InvalidFilterError) as info:
        parse_filter("year = 1 and (region = 'us'")
    assert "year = 1 and (region = 'us'" in str(info.value)
    assert "column 14" in str(info.value)


# --- robustness and speed ------------------------------------------------------------------------


def test_deep_nesting_and_long_chains() -> None:
    deep = "(" * 3000 + "year = 2020" + ")" * 3000
    assert parse_filter(deep) == year(2020)
    assert matching(deep) == ["2020"]
    # Spark renders a left-deep OR of equalities as nested parentheses
    nested = "year = 0"
    for i in range(1, 1500):
        nested = f"({nested} or year = {i})"
    tree = parse_filter(nested)
    assert isinstance(tree, Or) and len(tree.operands) == 1500
    assert matching(nested) == ["9", "10"]


def test_hundred_thousand_partitions() -> None:
    keys = [("year", "int"), ("month", "int"), ("region", "string")]
    regions = ["us-east", "us-west", "eu-central", "ap-south"]
    parts = [(str(2000 + i // 4000), str(i % 12 + 1), regions[i % 4]) for i in range(100_000)]
    pred = compile_filter("(year >= 2010 and year <= 2014) and month in (1, 2, 3) "
                          "and region like 'us%' and not region = 'us-west'", keys)
    start = time.perf_counter()
    selected = [p for p in parts if pred(p)]
    elapsed = time.perf_counter() - start
    expected = [p for p in parts if 2010 <= int(p[0]) <= 2014 and int(p[1]) <= 3
                and p[2] == "us-east"]
    assert selected == expected and len(selected) > 0
    assert elapsed < 10  # generous; typically ~0.1 s


# --- ORed equalities as a set lookup -------------------------------------------------------------


def test_ored_equalities_mean_the_same_as_before() -> None:
    """ORed equalities on one column are evaluated as a set lookup: same answers, NULL and
    mixed-kind constants included, under NOT too."""
    import random

    rng = random.Random(7)
    keys = [("n", "int"), ("s", "string"), ("d", "date")]
    constants = {"n": ["1", "2", "'3'", "'x'", "-4", "2.0", "'__HIVE_DEFAULT_PARTITION__'"],
                 "s": ["'a'", "'b'", "1", "'__HIVE_DEFAULT_PARTITION__'", "'2020-01-01'"],
                 "d": ["'2020-01-01'", "2020-01-02", "'bad'", "timestamp '2020-01-01 00:00:00'"]}
    values = {"n": ["1", "2", "3", "x", "-4", "02", DEFAULT_PARTITION_NAME],
              "s": ["a", "b", "1", "2020-01-01", DEFAULT_PARTITION_NAME],
              "d": ["2020-01-01", "2020-01-02", "bad", DEFAULT_PARTITION_NAME]}
    rows = [(n, s, d) for n in values["n"] for s in values["s"] for d in values["d"]]
    for _ in range(300):
        terms = []
        for _ in range(rng.randint(2, 8)):
            col = rng.choice(list(constants))
            terms.append(f"{col} = {rng.choice(constants[col])}")
        text = " or ".join(terms)
        if rng.random() < 0.5:
            text = f"not ({text})"
        combined = compile_filter(text, keys)
        # the reference: each equality on its own (nothing to merge), combined in Python
        singles = [compile_filter(t, keys) for t in terms]
        negated = [compile_filter(f"not ({t})", keys) for t in terms]
        for row in rows:
            if text.startswith("not"):
                want = all(p(row) for p in negated)
            else:
                want = any(p(row) for p in singles)
            assert combined(row) == want, (text, row)
