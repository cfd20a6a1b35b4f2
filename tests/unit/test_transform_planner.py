"""The transformation planner: bin-packing properties over seeded random inputs and edge cases."""
from __future__ import annotations

import random

import pytest

from catalog.exceptions import InvalidInputError
from catalog.transform.definition import TransformDefinition, parse_definition
from catalog.transform.planner import PartitionInput, PartitionPlan, plan, plan_partition

KiB, MiB, GiB, TiB = 1024, 1024 ** 2, 1024 ** 3, 1024 ** 4


def _files(rng: random.Random, n: int, low: int, high: int, prefix: str = "f") -> list[tuple[str, int]]:
    return [(f"s3://b/{prefix}{i:05d}.csv", rng.randint(low, high)) for i in range(n)]


def _check_invariants(part: PartitionInput, p: PartitionPlan, d: TransformDefinition) -> None:
    """The properties every plan must have."""
    sizes = dict(part.files)
    flat = [u for group in p.output_files for u in group]
    assert sorted(flat) == sorted(sizes), "every input file in exactly one output"
    assert len(flat) == len(set(flat))
    assert len(p.output_files) <= d.file_count_max
    assert len(p.estimated_bytes) == len(p.output_files)
    for group, est in zip(p.output_files, p.estimated_bytes):
        assert group, "no empty output group"
        assert est == sum(sizes[u] for u in group)
        assert group == sorted(group)
    assert p.input_bytes == sum(sizes.values())
    total = sum(sizes.values())
    if total < d.file_size_min and sizes:
        assert len(p.output_files) == 1
    if len(p.output_files) > 1:
        assert min(p.estimated_bytes) >= d.file_size_min, "no output below the minimum"
    assert (p.name, p.location) == (part.name, part.location)


DEFINITIONS = [
    TransformDefinition(),
    parse_definition("file.count.max=5; file.size.min=64MiB"),
    parse_definition("file.count.max=1000; file.size.min=10MiB; file.size.target=100MiB"),
    parse_definition("file.count.max=3; file.size.min=1MiB; file.size.target=1GiB"),
    parse_definition("file.size.min=256MiB; file.size.target=1MiB"),  # target < min
]


@pytest.mark.parametrize("seed", range(40))
def test_random_partitions_invariants(seed: int) -> None:
    rng = random.Random(seed)
    d = DEFINITIONS[seed % len(DEFINITIONS)]
    parts = []
    for j in range(rng.randint(1, 6)):
        n = rng.choice([0, 1, 2, 7, 50, 300])
        high = rng.choice([KiB, MiB, 64 * MiB, GiB, 8 * GiB])
        parts.append(PartitionInput(f"day={rng.randint(0, 10**6)}-{j}", f"s3://b/t/p{j}",
                                    _files(rng, n, 0, high, prefix=f"p{j}/")))
    plans = plan(parts, d)
    assert [p.name for p in plans] == sorted(p.name for p in parts)
    by_name = {p.name: p for p in parts}
    for p in plans:
        _check_invariants(by_name[p.name], p, d)


@pytest.mark.parametrize("seed", range(20))
def test_sizes_close_to_target(seed: int) -> None:
    """Many small files: each output lands between the minimum and about twice the target."""
    rng = random.Random(1000 + seed)
    d = parse_definition("file.count.max=1000; file.size.min=50MiB; file.size.target=100MiB")
    part = PartitionInput("p", "s3://b/p", _files(rng, rng.randint(200, 2000), KiB, 4 * MiB))
    p = plan_partition(part, d)
    _check_invariants(part, p, d)
    total = p.input_bytes
    expected = max(1, round(total / (100 * MiB)))
    assert abs(len(p.output_files) - expected) <= 1
    for est in p.estimated_bytes:
        assert 50 * MiB <= est <= 150 * MiB
    assert max(p.estimated_bytes) - min(p.estimated_bytes) <= 8 * MiB  # balanced (LPT)


@pytest.mark.parametrize("seed", range(10))
def test_deterministic_and_order_independent(seed: int) -> None:
    rng = random.Random(seed)
    d = parse_definition("file.count.max=7; file.size.min=8MiB; file.size.target=32MiB")
    parts = [PartitionInput(f"k={i}", f"/l/{i}", _files(rng, 100, 0, 4 * MiB, prefix=f"{i}/"))
             for i in range(5)]
    first = plan(parts, d)
    assert plan(parts, d) == first
    shuffled = [PartitionInput(p.name, p.location, rng.sample(p.files, len(p.files)))
                for p in rng.sample(parts, len(parts))]
    assert plan(shuffled, d) == first


def test_empty_partition_has_zero_outputs() -> None:
    p = plan_partition(PartitionInput("k=1", "/l/k=1", []), TransformDefinition())
    assert p.output_files == [] and p.estimated_bytes == [] and p.input_bytes == 0
    plans = plan([PartitionInput("b", "/b", [("x", 5)]), PartitionInput("a", "/a")],
                 TransformDefinition())
    assert [(q.name, len(q.output_files)) for q in plans] == [("a", 0), ("b", 1)]


def test_one_huge_file() -> None:
    part = PartitionInput("", "/t", [("s3://b/huge.csv", 5 * TiB)])
    p = plan_partition(part, TransformDefinition())
    assert p.output_files == [["s3://b/huge.csv"]]  # files are never split
    assert p.estimated_bytes == [5 * TiB]


def test_huge_file_and_small_ones() -> None:
    files = [("s3://b/huge", 100 * GiB)] + [(f"s3://b/s{i:02d}", 100 * MiB) for i in range(50)]
    p = plan_partition(PartitionInput("", "/t", files), TransformDefinition())
    _check_invariants(PartitionInput("", "/t", files), p, TransformDefinition())
    assert ["s3://b/huge"] in p.output_files  # the big file stands alone
    assert sorted(p.estimated_bytes) == [2500 * MiB, 2500 * MiB, 100 * GiB]


def test_many_tiny_files_into_one_output() -> None:
    files = [(f"s3://b/t{i:05d}", 1000) for i in range(10_000)]
    p = plan_partition(PartitionInput("d=1", "/d", files), TransformDefinition())
    assert len(p.output_files) == 1
    assert p.output_files[0] == sorted(u for u, _ in files)
    assert p.estimated_bytes == [10_000_000]


def test_file_count_max_caps_outputs() -> None:
    files = [(f"f{i:03d}", GiB) for i in range(100)]
    d = parse_definition("file.count.max=4; file.size.min=1GiB")
    p = plan_partition(PartitionInput("", "/", files), d)
    assert len(p.output_files) == 4
    assert p.estimated_bytes == [25 * GiB] * 4


def test_target_drives_count_when_above_min() -> None:
    files = [(f"f{i:03d}", 10 * MiB) for i in range(100)]  # 1000 MiB
    d = parse_definition("file.size.min=10MiB; file.size.target=100MiB")
    p = plan_partition(PartitionInput("", "/", files), d)
    assert p.estimated_bytes == [100 * MiB] * 10


def test_target_smaller_than_min_min_wins() -> None:
    """file.size.target=1MiB with file.size.min=100MiB packs to 100MiB outputs, not 1MiB ones."""
    files = [(f"f{i:03d}", MiB) for i in range(1000)]
    d = parse_definition("file.size.min=100MiB; file.size.target=1MiB")
    p = plan_partition(PartitionInput("", "/", files), d)
    assert len(p.output_files) == 10
    assert p.estimated_bytes == [100 * MiB] * 10


def test_leftover_below_min_is_merged() -> None:
    # 3.4 units of the minimum: 3 outputs, none below the minimum (not 4 with a 0.4 leftover).
    files = [(f"f{i:02d}", 10 * MiB) for i in range(34)]
    d = parse_definition("file.size.min=100MiB")
    p = plan_partition(PartitionInput("", "/", files), d)
    assert len(p.output_files) == 3
    assert min(p.estimated_bytes) >= 100 * MiB


def test_uneven_files_repair_keeps_minimum() -> None:
    # 2.1 x min but one file is 1.9 x min: two outputs would leave one at 0.2 x min -> one output.
    files = [("big", 190 * MiB), ("a", 10 * MiB), ("b", 10 * MiB)]
    d = parse_definition("file.size.min=100MiB")
    p = plan_partition(PartitionInput("", "/", files), d)
    assert p.output_files == [["a", "b", "big"]]


def test_total_below_min_is_one_output() -> None:
    files = [("x", 5), ("y", 0), ("z", 7)]
    p = plan_partition(PartitionInput("", "/", files), TransformDefinition())
    assert p.output_files == [["x", "y", "z"]] and p.estimated_bytes == [12]


def test_bad_inputs() -> None:
    d = TransformDefinition()
    with pytest.raises(InvalidInputError, match="'a' is listed twice"):
        plan_partition(PartitionInput("p", "/", [("a", 1), ("a", 2)]), d)
    with pytest.raises(InvalidInputError, match="'a' has an invalid size -1"):
        plan_partition(PartitionInput("p", "/", [("a", -1)]), d)
    with pytest.raises(InvalidInputError, match="'p'"):
        plan([PartitionInput("p", "/1"), PartitionInput("p", "/2")], d)
