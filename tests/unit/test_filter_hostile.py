"""Hostile partition filters and name patterns: linear time, bounded size, no process-wide stall.

A backtracking regex holds the GIL for as long as it runs, so nothing in-process can time it
out: the timing checks run in a forked child that is killed if it does not answer in time.
"""

from __future__ import annotations

import gc
import multiprocessing
import random
import re
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import catalog.partition_filter as pf
from api.thrift.handler import hive_pattern
from catalog.exceptions import InvalidFilterError
from catalog.partition_filter import compile_filter, parse_filter

KEYS = [("dt", "string")]
BUDGET_S = 0.1  # per hostile case: compile + evaluate over 10,000 values, in CPU seconds


def CLOCK() -> float:  # noqa: N802 - a clock, as time.process_time
    """User CPU seconds of this process: what a backtracking attack burns. Not wall time (the
    machine is shared) and not system time: a child forked from a large test process pays its
    copy-on-write page faults there, whatever the filter does."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime

CHILD_TIMEOUT_S = 15.0

# 10,000 values: dates, the 39-byte shape of the attack, and long values (so that patterns whose
# minimum length is ~500 still reach the backtracking of a regex engine); some end in X.
VALUES = [f"2024-01-{i % 28 + 1:02d}" if i % 4 == 0
          else "a" * 39 if i % 8 in (1, 5)
          else "a" * 600 + str(i) if i % 8 == 2
          else "a" * 600 + "X" if i % 8 == 6
          else "a" * 38 + "X"
          for i in range(10_000)]


def in_child(fn: Callable[[], Any], timeout: float = CHILD_TIMEOUT_S) -> Any:
    """``fn()`` run in a forked child; fails the test if the child takes over ``timeout`` s."""
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    # The parent's objects out of the child's collections: a collection in the child would
    # otherwise touch (and copy) every page of the parent's heap, on the child's clock.
    gc.freeze()

    def run() -> None:
        try:
            sender.send(("ok", fn()))
        except BaseException as e:  # report anything, including assertion errors
            sender.send(("error", f"{type(e).__name__}: {e}"))

    child = ctx.Process(target=run, daemon=True)
    try:
        child.start()
    finally:
        gc.unfreeze()
    try:
        if not receiver.poll(timeout):
            pytest.fail(f"did not finish within {timeout:g} s (catastrophic backtracking?)")
        status, value = receiver.recv()
    finally:
        if child.is_alive():
            child.kill()
        child.join()
    if status != "ok":
        pytest.fail(value)
    return value


def like(pattern: str) -> str:
    return f"dt like '{pattern}'"


# (filter, which values it selects)
HOSTILE: dict[str, tuple[str, Callable[[str], bool]]] = {
    "attack-28-percent": (like("%" * 28 + "X"), lambda v: v.endswith("X")),
    "1k-percent": (like("%" * 1000 + "X"), lambda v: v.endswith("X")),
    "1k-underscore": (like("_%" * 500 + "X"), lambda v: len(v) > 500 and v.endswith("X")),
    "1k-alternating": (like("%a" * 500 + "%X"),
                       lambda v: v.count("a") >= 500 and v.endswith("X")),
    "1k-dot-star": (like(".*" * 500 + "X"), lambda v: v.endswith("X")),
    "1k-mixed": (like("%_.*a" * 200 + "X"),
                 lambda v: len(v) > 400 and v.count("a") >= 200 and v.endswith("aX")),
    "not-like-1k": ("dt not like '" + "%" * 1000 + "X'", lambda v: not v.endswith("X")),
    "nested-500": ("(" * 500 + like("%" * 28 + "X") + ")" * 500, lambda v: v.endswith("X")),
    "1000-or-terms": (" or ".join(f"dt = 'v{i}'" for i in range(999)) + " or dt = '2024-01-01'",
                      lambda v: v == "2024-01-01"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_filter_is_fast(case: str) -> None:
    text, expected = HOSTILE[case]

    def run() -> tuple[float, bool]:
        start = CLOCK()
        predicate = compile_filter(text, KEYS)
        selected = [v for v in VALUES if predicate((v,))]
        elapsed = CLOCK() - start
        return elapsed, selected == [v for v in VALUES if expected(v)]

    elapsed, correct = in_child(run)
    assert correct
    assert elapsed < BUDGET_S, f"{case}: {elapsed * 1000:.0f} ms over {len(VALUES):,} values"


# --- same semantics as before --------------------------------------------------------------------


def reference_regex(pattern: str) -> str:
    """The LIKE-to-regex translation the filter used before (backtracking; small inputs only)."""
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


def test_like_semantics_unchanged_on_random_patterns() -> None:
    rng = random.Random(20240601)
    pattern_chars, value_chars = "ab%_.*\\X\n", "ab.%_*\\X\n"
    default = pf.DEFAULT_PARTITION_NAME
    for _ in range(3000):
        pattern = "".join(rng.choice(pattern_chars) for _ in range(rng.randint(0, 9)))
        values = ["".join(rng.choice(value_chars) for _ in range(rng.randint(0, 10)))
                  for _ in range(10)] + [default]
        old = re.compile(reference_regex(pattern), re.DOTALL)
        for negated in (False, True):
            predicate = pf.compile_expr(pf.Like("dt", pattern, negated), KEYS)
            for v in values:
                want = v != default and (old.fullmatch(v) is not None) != negated
                assert predicate((v,)) == want, (pattern, v, negated)


# --- limits --------------------------------------------------------------------------------------


def test_overlong_filter_is_rejected_naming_the_limit() -> None:
    text = "dt = '" + "a" * (64 * 1024) + "'"
    with pytest.raises(InvalidFilterError, match="limit of 65,536"):
        parse_filter(text)
    with pytest.raises(InvalidFilterError, match="limit of 65,536"):
        compile_filter(text, KEYS)


def test_too_many_terms_are_rejected_naming_the_limit() -> None:
    text = " or ".join(["dt = 'x'"] * 5001)
    with pytest.raises(InvalidFilterError, match="more than 5,000 conditions"):
        parse_filter(text)
    structs = "(struct(dt, dt)) in (" + ", ".join(["struct('a', 'b')"] * 2501) + ")"
    with pytest.raises(InvalidFilterError, match="more than 5,000 conditions"):
        parse_filter(structs)
    assert isinstance(parse_filter(" or ".join(["dt = 'x'"] * 5000)), pf.Or)


def test_evaluation_stops_at_the_cpu_budget() -> None:
    text = " or ".join(f"dt like '%{i}%a%b_c'" for i in range(1000))
    predicate = compile_filter(text, KEYS, max_cpu_seconds=0.05)
    start = time.perf_counter()
    with pytest.raises(InvalidFilterError, match=r"filter evaluation exceeded 0\.05 s"):
        for v in VALUES * 10:
            predicate((v,))
    assert time.perf_counter() - start < 5


# --- hive name patterns --------------------------------------------------------------------------


def test_hive_pattern_hostile_inputs_are_fast_and_literal() -> None:
    def run() -> dict[str, Any]:
        names = ["a" * 50 + "!", "a" * 1000, "a" * 500 + "b", "(a+)+$", "(A+)+$", "sales"]
        start = CLOCK()
        nested = hive_pattern("(a+)+$")
        globbed = hive_pattern("*a" * 500 + "*b")
        alternatives = hive_pattern("|".join(["(x+x+)+y", "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*c",
                                              "[a-z]+", "sal.s"]))
        answers = {
            "nested": [n for n in names if nested.fullmatch(n)],
            "globbed": [n for n in names if globbed.fullmatch(n)],
            "alternatives": [n for n in names + ["x" * 40] if alternatives.fullmatch(n)],
        }
        return {"elapsed": CLOCK() - start, **answers}

    got = in_child(run)
    assert got["elapsed"] < BUDGET_S
    assert got["nested"] == ["(a+)+$", "(A+)+$"]  # literal, case-insensitive
    assert got["globbed"] == ["a" * 500 + "b"]
    assert got["alternatives"] == ["sales"]  # '.' is one character, '[a-z]+' is literal


def test_hive_pattern_keeps_hive_wildcards() -> None:
    names = ["sales", "sales_copy", "SALES_EU", "other", "events", "recent_events", "s.x"]

    def matching(pattern: str | None) -> list[str]:
        rx = hive_pattern(pattern)
        return [n for n in names if rx.fullmatch(n)]

    assert matching(None) == matching("*") == matching("") == names
    assert matching("sales_*") == ["sales_copy", "SALES_EU"]
    assert matching("SALES|other") == ["sales", "other"]
    assert matching(" sales | other ") == ["sales", "other"]
    assert matching("*event*") == ["events", "recent_events"]
    assert matching("sales.*") == ["sales_copy", "SALES_EU"]  # '.*' is one or more, as in Hive
    assert matching("**s**") == ["sales", "sales_copy", "SALES_EU", "events", "recent_events",
                                 "s.x"]
    assert matching("s.x") == ["s.x"]
    assert matching("s+x|s\\.x|s?x") == []


# --- no process-wide stall -----------------------------------------------------------------------


def test_worst_case_filter_does_not_stall_other_threads() -> None:
    def run() -> float:
        hostile = compile_filter(like("%" * 28 + "X"), KEYS)
        started, stop = threading.Event(), threading.Event()

        def worker() -> None:
            started.set()
            while not stop.is_set():
                for v in VALUES:
                    hostile((v,))

        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        started.wait()
        time.sleep(0.02)
        worst = 0.0
        for i in range(20):
            start = time.perf_counter()
            assert compile_filter(f"dt = 'd{i}'", KEYS)((f"d{i}",))
            assert hive_pattern(f"t{i}_*").fullmatch(f"t{i}_x")
            worst = max(worst, time.perf_counter() - start)
            time.sleep(0.005)
        stop.set()
        thread.join()
        return worst

    worst = in_child(run)
    assert worst < 0.1, f"a trivial call took {worst * 1000:.0f} ms"
