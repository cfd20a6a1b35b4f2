"""A database's transformation options, validated at attach.

* ``transform.definition``: the default definition of the database's jobs (a job's own
  definition overrides it key by key);
* ``transform.policy``: ``manual`` (default: only jobs someone submits), ``on-change`` (a sync
  that sees a transformed partition's source change, or a new partition in a transformed table,
  submits a job for those partitions) or ``cron:<expr>`` (a five-field crontab expression, UTC:
  every table's partitions that are not transformed are submitted then);
* ``transform.executor``: ``duckdb`` (default) or ``spark`` (with ``spark.master`` and other
  ``spark.*`` options).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from catalog.exceptions import InvalidOptionError
from catalog.transform.definition import TransformDefinition, parse_definition

MANUAL, ON_CHANGE, CRON = "manual", "on-change", "cron"
#: Options of a database that belong to transformations, not to its connector.
OPTIONS = frozenset({"transform.definition", "transform.policy", "transform.executor"})
#: Option prefixes passed to an executor (``spark.master``, ``spark.executor.memory``...).
EXECUTOR_PREFIXES = ("spark.",)


def is_transform_option(key: str) -> bool:
    return key in OPTIONS or key.startswith(EXECUTOR_PREFIXES)


@dataclass(frozen=True)
class TransformPolicy:
    kind: str
    cron: str | None
    definition: TransformDefinition
    executor: str
    executor_options: dict[str, str]

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> TransformPolicy:
        """Read and check the options; :class:`InvalidOptionError` names the bad one."""
        from catalog.transform.executors import EXECUTORS

        text = options.get("transform.definition", "")
        try:
            definition = parse_definition(text) if text.strip() else TransformDefinition()
        except InvalidOptionError as e:
            raise InvalidOptionError(f"transform.definition: {e}") from e
        raw = options.get("transform.policy", MANUAL).strip()
        cron: str | None = None
        if raw.lower() in (MANUAL, ON_CHANGE):
            kind = raw.lower()
        elif raw.lower().startswith("cron:"):
            kind, cron = CRON, raw[len("cron:"):].strip()
            cron_trigger(cron)
        else:
            raise InvalidOptionError(
                f"transform.policy must be manual, on-change or cron:<crontab expression>, "
                f"got '{raw[:80]}'")
        executor = options.get("transform.executor", "duckdb").strip().lower()
        if executor not in EXECUTORS:
            raise InvalidOptionError(f"transform.executor must be one of "
                                     f"{', '.join(sorted(EXECUTORS))}, got '{executor[:40]}'")
        extra = {k: v for k, v in options.items() if k.startswith(EXECUTOR_PREFIXES)}
        return cls(kind, cron, definition, executor, extra)


def cron_trigger(expr: str) -> Any:
    """The apscheduler trigger of a five-field crontab expression (UTC)."""
    from apscheduler.triggers.cron import CronTrigger

    if len(expr.split()) != 5:
        raise InvalidOptionError(
            f"transform.policy cron expression must have 5 fields (minute hour day month "
            f"day-of-week), got '{expr[:80]}'")
    try:
        return CronTrigger.from_crontab(expr, timezone="UTC")
    except (ValueError, TypeError) as e:
        raise InvalidOptionError(f"transform.policy: bad cron expression '{expr[:80]}': {e}") from e


__all__ = ["CRON", "MANUAL", "ON_CHANGE", "OPTIONS", "TransformPolicy", "cron_trigger",
           "is_transform_option"]
