"""Transformation executors, loaded by name: ``duckdb`` (embedded, default) and ``spark``.

An executor turns one partition's plan (:class:`PartitionTask`) into Parquet files below the
task's ``output_dir`` and returns the new :class:`Layout`. The job runner
(:mod:`catalog.transform.jobs`) decides what to run, in what order and in parallel; an executor
knows nothing of jobs or the state store. Every executor honours the same rules as
:func:`catalog.transform.executor.execute_partition`: output ``part-<i>.parquet`` for output
group ``i``, the whole ``output_dir`` removed on failure or cancellation, ``progress`` called
with running totals, ``cancelled()`` polled between output files.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from catalog.exceptions import InvalidOptionError
from catalog.transform.executor import ProgressFn, execute_partition

if TYPE_CHECKING:
    from catalog.config import Settings
    from catalog.fs.namespace import Namespace
    from catalog.models import Layout, Partition, Table
    from catalog.transform.definition import TransformDefinition
    from catalog.transform.planner import PartitionPlan

#: executor name -> "module:class", imported only when used.
EXECUTORS: dict[str, str] = {
    "duckdb": "catalog.transform.executors:EmbeddedExecutor",
    "spark": "catalog.transform.spark_executor:SparkExecutor",
}


@dataclass(frozen=True)
class PartitionTask:
    """One partition to transform: its plan, the source metadata to read it with, where to write
    (a namespace path) and the layout version and source fingerprint to record."""

    plan: PartitionPlan
    table: Table
    partition: Partition | None
    definition: TransformDefinition
    output_dir: str
    version: int
    source_fingerprint: str | None


class Executor(Protocol):
    """Runs partition tasks; ``run`` may be called from several threads at once."""

    def run(self, task: PartitionTask, progress: ProgressFn | None = None,
            cancelled: Callable[[], bool] | None = None) -> Layout: ...

    def close(self) -> None: ...


class EmbeddedExecutor:
    """In-process DuckDB / pyarrow: :func:`execute_partition` on the calling thread, its memory
    bounded by ``memory_limit_bytes`` (default ``settings.transform_memory_limit_bytes``)."""

    def __init__(self, fs: Namespace, options: Mapping[str, str], settings: Settings,
                 memory_limit_bytes: int | None = None) -> None:
        self.fs = fs
        self.memory_limit_bytes = (memory_limit_bytes if memory_limit_bytes is not None
                                   else settings.transform_memory_limit_bytes)

    def run(self, task: PartitionTask, progress: ProgressFn | None = None,
            cancelled: Callable[[], bool] | None = None) -> Layout:
        return execute_partition(
            task.plan, table=task.table, partition=task.partition, definition=task.definition,
            fs=self.fs, output_dir=task.output_dir, version=task.version,
            source_fingerprint=task.source_fingerprint, progress=progress, cancelled=cancelled,
            memory_limit_bytes=self.memory_limit_bytes)

    def close(self) -> None:
        pass


def load_executor(name: str, fs: Namespace, options: Mapping[str, str],
                  settings: Settings) -> Executor:
    """The executor registered as ``name``, built with the database's options (``spark.*``)."""
    target = EXECUTORS.get(name)
    if target is None:
        raise InvalidOptionError(
            f"transform.executor must be one of {', '.join(sorted(EXECUTORS))}, got '{name}'")
    module_name, _, class_name = target.partition(":")
    factory = getattr(importlib.import_module(module_name), class_name)
    executor: Executor = factory(fs, options, settings)
    return executor


__all__ = ["EXECUTORS", "EmbeddedExecutor", "Executor", "PartitionTask", "load_executor"]
