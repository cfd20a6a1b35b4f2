"""Prometheus metrics of the Strata process (prometheus-client), served at ``GET /metrics``.

Two sources, one scrape:

* **process-wide instruments** in :data:`PROCESS_REGISTRY`: the S3 gateway's requests by
  operation and status (``strata_s3_requests_total``) and their latency from the first byte
  received to the last byte sent (``strata_s3_request_duration_seconds``), fed by the
  gateway's one hook (:meth:`GatewayMetrics.observe`); plus the standard ``process_*``,
  ``python_gc_*`` and ``python_info`` metrics;
* **the block store, read at scrape time** (:class:`CacheCollector`): its own counters and
  gauges from :meth:`catalog.cache.BlockStore.stats` (hits, misses, bytes served per tier, bytes
  read from under storage, evictions, capacity/used/pinned per directory), and the async-persist
  queue's length and age when the namespace has one. Nothing is counted twice: the store's
  counters are the truth, the collector only relabels them.

:func:`metrics_registry` joins both for one service; :func:`render` is the body and content type
of a scrape.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: Latency buckets (seconds) of gateway requests: sub-millisecond cache hits to multi-second
#: large objects and slow under storage.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0)
#: The operation label of requests refused before they were routed (bad signature, bad key).
UNROUTED = "Unrouted"

#: The registry of the process-wide instruments (one per process, like the process itself).
PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)


class _Forward(Collector):
    """Yields what other collectors collect (the process collectors live in the default
    registry already; they are shared, never registered twice)."""

    def __init__(self, collectors: Iterable[Any]) -> None:
        self.collectors = list(collectors)

    def collect(self) -> Iterable[Metric]:
        for c in self.collectors:
            yield from c.collect()


PROCESS_REGISTRY.register(_Forward([PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR]))


class GatewayMetrics:
    """The S3 gateway's request counter and latency histogram."""

    def __init__(self, registry: CollectorRegistry | None = PROCESS_REGISTRY) -> None:
        self.requests = Counter(
            "strata_s3_requests", "S3 gateway requests by operation and HTTP status",
            ["operation", "status"], registry=registry)
        self.latency = Histogram(
            "strata_s3_request_duration_seconds",
            "S3 gateway request latency, first byte in to last byte out, by operation",
            ["operation"], buckets=LATENCY_BUCKETS, registry=registry)
        self.sendfile_bytes = Counter(
            "strata_s3_sendfile_bytes",
            "GetObject body bytes sent from cached block files with sendfile (zero-copy)",
            registry=registry)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, operation: str, status: int, seconds: float) -> None:
        """Count one finished request (the gateway's hook)."""
        key = (operation, status)
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a lookup: once per kind of answer
            children = self._children[key] = (self.requests.labels(operation, str(status)),
                                               self.latency.labels(operation))
        children[0].inc()
        children[1].observe(seconds)


#: The gateway instruments every :class:`api.s3.app.S3Gateway` of this process reports to.
GATEWAY = GatewayMetrics()


class CacheCollector(Collector):
    """The block store's statistics (and the persist queue's) as metrics, read at scrape time.

    ``fs`` gives the namespace (:class:`catalog.fs.namespace.Namespace`: ``.cache`` a
    :class:`catalog.cache.BlockStore` or None, its persister's queue). A namespace without a
    block store yields no cache metrics.
    """

    def __init__(self, fs: Callable[[], Any]) -> None:
        self._fs = fs

    def collect(self) -> Iterator[Metric]:
        fs = self._fs()
        cache = getattr(fs, "cache", None)
        if cache is not None:
            yield from self._cache(cache.stats())
        yield from self._persist_queue(fs)

    @staticmethod
    def _cache(stats: Any) -> Iterator[Metric]:
        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=["tier"])

        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=["tier", "dir"])

        hits = counter("strata_cache_hits", "block reads served from this tier")
        misses = counter("strata_cache_misses",
                         "cold blocks fetched from under storage and cached into this tier")
        served = counter("strata_cache_served_bytes", "bytes served from this tier's blocks")
        evictions = counter("strata_cache_evictions",
                            "blocks moved out of this tier (down a tier, or dropped from the "
                            "last one) to make room")
        capacity = gauge("strata_cache_capacity_bytes", "quota of a storage directory")
        used = gauge("strata_cache_used_bytes", "bytes of blocks a storage directory holds")
        blocks = gauge("strata_cache_blocks", "blocks a storage directory holds")
        pinned = gauge("strata_cache_pinned_bytes", "bytes of pinned blocks")
        unpersisted = gauge("strata_cache_unpersisted_bytes",
                            "bytes of blocks not yet persisted to under storage")
        failing = gauge("strata_cache_dir_failing",
                        "1 while a directory takes no new blocks after a failed write")
        for t in stats.tiers:
            hits.add_metric([t.alias], t.hits)
            misses.add_metric([t.alias], t.misses)
            served.add_metric([t.alias], t.bytes_served)
            evictions.add_metric([t.alias], t.evictions)
            for d in t.dirs:
                labels = [t.alias, str(d.path)]
                capacity.add_metric(labels, d.capacity_bytes)
                used.add_metric(labels, d.used_bytes)
                blocks.add_metric(labels, d.blocks)
                pinned.add_metric(labels, d.pinned_bytes)
                unpersisted.add_metric(labels, d.unpersisted_bytes)
                failing.add_metric(labels, 1.0 if d.failing else 0.0)
        yield from (hits, misses, served, evictions, capacity, used, blocks, pinned,
                    unpersisted, failing)
        yield CounterMetricFamily("strata_cache_ufs_read_bytes",
                                  "bytes the block store read from under storage",
                                  value=stats.bytes_from_ufs)
        yield CounterMetricFamily("strata_cache_pass_through_reads",
                                  "block reads served without caching (NO_CACHE, or no tier "
                                  "could take the block)", value=stats.pass_through)
        yield GaugeMetricFamily("strata_cache_hit_ratio",
                                "block reads served from the cache / all block reads, since start",
                                value=stats.hit_ratio)

    @staticmethod
    def _persist_queue(fs: Any) -> Iterator[Metric]:
        entries = _queue_entries(fs)
        if entries is None:
            return
        now = time.time()
        oldest = min((e.enqueued_at for e in entries), default=now)
        yield GaugeMetricFamily("strata_persist_queue_length",
                                "ASYNC_THROUGH files waiting to be persisted", value=len(entries))
        yield GaugeMetricFamily("strata_persist_queue_oldest_age_seconds",
                                "age of the oldest entry of the persist queue (0 when empty)",
                                value=max(0.0, now - oldest))
        yield GaugeMetricFamily("strata_persist_queue_failing",
                                "entries of the persist queue whose last attempt failed",
                                value=sum(1 for e in entries if e.last_error))


def _queue_entries(fs: Any) -> list[Any] | None:
    """The namespace's persist queue (:class:`catalog.fs.cached.QueueEntry` rows), None when it
    has none (no block store). Uses ``fs.persist_queue()`` when the namespace offers it, else its
    file table, as :class:`catalog.fs.persist.Persister` does."""
    if getattr(fs, "persister", None) is None:
        return None
    public = getattr(fs, "persist_queue", None)
    if callable(public):
        return list(public())
    files = getattr(fs, "_files", None)
    return list(files.entries()) if files is not None else None


def metrics_registry(fs: Callable[[], Any]) -> CollectorRegistry:
    """A registry for one service's scrape: the process-wide instruments and its block store."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Forward([PROCESS_REGISTRY]))
    registry.register(CacheCollector(fs))
    return registry


def render(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """The body and content type of a scrape, in the format the ``Accept`` header asks for
    (Prometheus text 0.0.4 by default; OpenMetrics when asked)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
