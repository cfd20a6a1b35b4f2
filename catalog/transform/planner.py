"""The transformation planner: one plan per partition, its input files bin-packed into output files.

Pure functions, no I/O. Rules, per partition (``file.count.max`` and the sizes apply to each
partition on its own):

* Input files are never split: each input file goes to exactly one output group.
* ``T = definition.target_bytes`` (``max(file.size.target, file.size.min)`` — the minimum wins over a
  smaller target).
* Number of output files ``k = min(file.count.max, #files, max(1, #big + round(small_bytes / T)))``,
  where *big* files are those of at least ``T`` bytes (each is worth an output of its own) and
  ``small_bytes`` is the total of the others; ``k`` is also at most ``max(1, total //
  file.size.min)`` so that the average output reaches the minimum.
* The files are packed longest-first into the ``k`` outputs, each into the currently lightest one
  (LPT, a first-fit-decreasing variant that balances sizes around ``total / k``).
* Then, while there are two or more outputs and the lightest is below ``file.size.min``, it is
  dissolved: its files go, largest first, to the then lightest outputs (small leftovers merge).
  So no output is below the minimum unless the whole partition is (then there is exactly one).
* An empty partition (no files) yields a plan with **zero output files**; the executor writes an
  empty layout for it.
* Deterministic: ties break by URI, files inside an output are sorted by URI, outputs are ordered by
  their first URI, plans by partition name.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from catalog.exceptions import InvalidInputError
from catalog.transform.definition import TransformDefinition


@dataclass(frozen=True)
class PartitionInput:
    """A partition to transform: its name (``k=v/...``, ``""`` for an unpartitioned table), its
    source location and its files as ``(uri, size_bytes)``."""

    name: str
    location: str
    files: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class PartitionPlan:
    """The plan of one partition: ``output_files[i]`` lists the input URIs that make output file
    ``i``; ``estimated_bytes[i]`` is the sum of their sizes."""

    name: str
    location: str
    output_files: list[list[str]]
    estimated_bytes: list[int]

    @property
    def input_bytes(self) -> int:
        """Total bytes read for this partition."""
        return sum(self.estimated_bytes)


def plan_partition(partition: PartitionInput, definition: TransformDefinition) -> PartitionPlan:
    """Bin-pack one partition's files per the module rules. Raises :class:`InvalidInputError` on a
    negative size or a URI listed twice."""
    seen: set[str] = set()
    for uri, size in partition.files:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInputError(
                f"partition '{partition.name}': file '{uri}' has an invalid size {size!r}")
        if uri in seen:
            raise InvalidInputError(f"partition '{partition.name}': file '{uri}' is listed twice")
        seen.add(uri)
    if not partition.files:
        return PartitionPlan(partition.name, partition.location, [], [])

    target = definition.target_bytes
    minimum = definition.file_size_min
    files = sorted(partition.files, key=lambda f: (-f[1], f[0]))  # largest first, then by URI
    total = sum(s for _, s in files)
    big = sum(1 for _, s in files if s >= target)
    small_bytes = total - sum(s for _, s in files if s >= target)
    wanted = max(1, big + (2 * small_bytes + target) // (2 * target))  # round half up
    k = min(definition.file_count_max, len(files), wanted, max(1, total // minimum))

    # LPT: each file into the lightest output; the heap's (load, index) breaks ties by index.
    groups: list[list[tuple[str, int]]] = [[] for _ in range(k)]
    heap = [(0, i) for i in range(k)]
    for item in files:
        load, i = heapq.heappop(heap)
        groups[i].append(item)
        heapq.heappush(heap, (load + item[1], i))

    # Repair: dissolve the lightest output while it is below the minimum, its files (largest
    # first) going to the then lightest outputs. Loads only grow, so the heap stays valid.
    while len(heap) > 1 and heap[0][0] < minimum:
        _, i = heapq.heappop(heap)
        leftovers, groups[i] = groups[i], []
        for item in leftovers:
            load, j = heapq.heappop(heap)
            groups[j].append(item)
            heapq.heappush(heap, (load + item[1], j))

    bins = [(load, sorted(u for u, _ in groups[i])) for load, i in heap]
    bins.sort(key=lambda b: b[1][0])
    return PartitionPlan(partition.name, partition.location,
                         [uris for _, uris in bins], [load for load, _ in bins])


def plan(partitions: Sequence[PartitionInput], definition: TransformDefinition) -> list[PartitionPlan]:
    """One :class:`PartitionPlan` per partition, ordered by partition name. Raises
    :class:`InvalidInputError` when a partition name appears twice."""
    counts = Counter(p.name for p in partitions)
    dup = sorted(n for n, c in counts.items() if c > 1)
    if dup:
        raise InvalidInputError(f"partitions listed twice: {', '.join(repr(n) for n in dup)}")
    return [plan_partition(p, definition) for p in sorted(partitions, key=lambda p: p.name)]


__all__ = ["PartitionInput", "PartitionPlan", "plan", "plan_partition"]
