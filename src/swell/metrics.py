"""What ``/metrics`` exposes: one Prometheus registry per app (prometheus-client).

Counters and histograms are updated where things happen (requests in swell.api.access, ingestion
in swell.api.ingest, log flushes in swell.backends.filelog through ``observe_flush``, DSAR budget
in swell.api.dsar). What the storage front holds right now (open parts, seal failures, jobs by
status) is read at scrape time by :class:`FrontCollector`, so nothing is counted twice and a front
that lacks a part (a scale-out API node has no sealer) simply has no such series.

Cardinality is bounded: routes are route templates (``/api/2/dsar/requests/{request_id}``), never
raw paths; methods outside the HTTP set are ``OTHER``; project and org labels are ids, as many as
the deployment has projects or orgs; rejection reasons are a fixed set (:data:`REJECT_REASONS`).
No user id, insert_id, device id or key is ever a label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from swell import __version__

if TYPE_CHECKING:
    from swell.api.state import Front
    from swell.sealer import Sealer

#: Request methods kept as labels; any other is counted as OTHER.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The route label of a request no route matched (a 404 or 405 of the router).
UNMATCHED = "unmatched"
#: Why an ingestion request was refused (label ``reason``).
REJECT_REASONS = (
    "invalid_api_key",
    "invalid_body",
    "too_large",
    "throttled",
    "unavailable",
    "client_disconnected",
)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)
_GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Every metric of one app, in a registry of its own (two apps in a process do not mix)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.info = Gauge("swell_build_info", "swell's version", ["version"], registry=r)
        self.info.labels(__version__).set(1)
        self.requests = Counter(
            "swell_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "swell_http_request_duration_seconds",
            "Time from a request's start to the end of its response, by route template",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.events_ingested = Counter(
            "swell_events_ingested",
            "Events accepted by /2/httpapi and /batch (duplicates included), by project",
            ["project"],
            registry=r,
        )
        self.events_rejected = Counter(
            "swell_events_rejected",
            "Events in ingestion requests that were refused, by project ('' when the key is "
            "unknown) and reason",
            ["project", "reason"],
            registry=r,
        )
        self.ingest_rejected_requests = Counter(
            "swell_ingest_rejected_requests",
            "Ingestion requests refused, by reason (their events may not be countable)",
            ["reason"],
            registry=r,
        )
        self.log_fsync_seconds = Histogram(
            "swell_log_fsync_duration_seconds",
            "Time to write and fsync one group commit of the durable log",
            buckets=_FSYNC_BUCKETS,
            registry=r,
        )
        self.log_group_commit_frames = Histogram(
            "swell_log_group_commit_frames",
            "Frames (ingestion requests, identify calls) made durable by one fsync",
            buckets=_GROUP_BUCKETS,
            registry=r,
        )
        self.export_bytes = Counter(
            "swell_export_bytes_sent",
            "Bytes of Export API archives sent, by project",
            ["project"],
            registry=r,
        )
        self.budget_spent = Counter(
            "swell_dsar_budget_spent",
            "DSAR API cost charged, by org (the budget is SWELL_DSAR_COST_PER_HOUR)",
            ["org"],
            registry=r,
        )
        self.front = FrontCollector()
        r.register(self.front)

    def observe_flush(self, seconds: float, frames: int) -> None:
        """One group commit of the durable log: its write+fsync time and how many frames."""
        self.log_fsync_seconds.observe(seconds)
        self.log_group_commit_frames.observe(frames)

    def rejected(self, project_id: int | None, reason: str, events: int) -> None:
        self.ingest_rejected_requests.labels(reason).inc()
        if events:
            label = "" if project_id is None else str(project_id)
            self.events_rejected.labels(label, reason).inc(events)


class FrontCollector(Collector):
    """What the storage front holds, read at scrape time.

    ``sealers`` gives the sealers of this process (the embedded store's one, or those of the
    projects a scale-out worker owns; none on an API node). ``jobs`` is the last count of jobs by
    (kind, status), refreshed by the /metrics handler before each scrape (the count is a query;
    collectors are synchronous).
    """

    def __init__(self) -> None:
        self.sealers: Callable[[], Iterable[Sealer]] = lambda: ()
        self.jobs: dict[tuple[str, str], int] | None = None

    def describe(self) -> Iterable[Metric]:
        return ()  # the families depend on the front; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        sealers: list[Sealer] = list(self.sealers())
        if sealers:
            sealed = CounterMetricFamily(
                "swell_parts_sealed", "Parts sealed (blob written and catalogued)"
            )
            sealed.add_metric([], sum(s.sealed for s in sealers))
            failures = CounterMetricFamily(
                "swell_seal_failures", "Failed seal attempts (the part stays unsealed, retried)"
            )
            failures.add_metric([], sum(s.failed_attempts for s in sealers))
            retries = CounterMetricFamily(
                "swell_seal_retries", "Seal retries of parts kept unsealed by a failure"
            )
            retries.add_metric([], sum(s.retries for s in sealers))
            failing = GaugeMetricFamily(
                "swell_seal_failing", "1 while seals fail and parts wait to be sealed"
            )
            failing.add_metric([], int(any(s.failing for s in sealers)))
            parts = GaugeMetricFamily(
                "swell_open_parts",
                "Parts not yet sealed: open (taking events) or frozen (waiting for a retry)",
                labels=["state"],
            )
            part_bytes = GaugeMetricFamily(
                "swell_open_part_bytes", "Raw bytes of the parts not yet sealed", labels=["state"]
            )
            counts = {"open": 0, "frozen": 0}
            sizes = {"open": 0, "frozen": 0}
            for sealer in sealers:
                for state, part in sealer.unsealed_states():
                    counts[state] += 1
                    sizes[state] += part.raw_bytes
            for state in ("open", "frozen"):
                parts.add_metric([state], counts[state])
                part_bytes.add_metric([state], sizes[state])
            yield from (sealed, failures, retries, failing, parts, part_bytes)
        if self.jobs is not None:
            jobs = GaugeMetricFamily(
                "swell_jobs",
                "Background jobs (DSAR, deletion) by kind and status",
                labels=["kind", "status"],
            )
            for (kind, status), count in sorted(self.jobs.items()):
                jobs.add_metric([kind, status], count)
            yield jobs


def instrument(metrics: Metrics, front: Front) -> None:
    """Connect ``metrics`` to what ``front`` has: the embedded store's log and sealer, or the
    sealers of the projects a scale-out node owns (an API-only node has neither)."""
    sealer = getattr(front, "sealer", None)
    if sealer is not None:
        metrics.front.sealers = lambda: (sealer,)
    else:

        def owned() -> Iterator[Sealer]:
            workers = getattr(front, "workers", None)
            for owner in list(getattr(workers, "owners", {}).values()):
                if owner.store is not None:
                    yield owner.store.sealer

        metrics.front.sealers = owned
    log = getattr(front, "log", None)
    if log is not None and hasattr(log, "on_flush"):
        log.on_flush = metrics.observe_flush
