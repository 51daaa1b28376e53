"""``GET /metrics``: Prometheus metrics, written by ``prometheus_client``.

One ``CollectorRegistry`` per web app (never the process-wide one, so two daemons in one test
process, or a reload, never share or re-register metrics), holding one collector that reads
the state database at scrape time: what it reports comes from the ``runs``, ``steps`` and
record tables, so it survives restarts. Only the HTTP request counters live in memory (the
connectors count them since they started; a counter reset is what Prometheus expects after
a restart).

- Counters only rise: runs are counted by their final outcome (a run under way has none yet),
  records by outcome from the counts of finished steps.
- Every gauge has a sample for every configured integration, flow and side, 0 included.
- ``accord_cursor_lag_seconds``: the age of the newest successful read of a flow's side (now −
  the end of the last step of that flow that finished ``ok`` or ``errors`` in a run that
  synced); ``+Inf`` while it was never read.
"""
from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.describe import COUNT_LABELS
from daemon.store import operator, reports

if TYPE_CHECKING:
    from daemon.control import Daemon

# generate_latest writes the classic text format; our names need no UTF-8 escaping, so it is
# announced as 0.0.4, which every Prometheus reads (newer clients default to "1.0.0").
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FINAL_OUTCOMES = ("ok", "errors", "failed", "stopped")      # others are added as they appear
SIDES = ("left", "right")
RECORD_OUTCOMES = [k for k in COUNT_LABELS if not k.startswith("read_") and k != "conflicts"]


class StepSums:
    """Sums of the counts of finished steps by (integration, flow, count), kept between
    scrapes: the steps up to the first one still running are read once; the rest each time
    (a step under way has no final counts yet)."""

    def __init__(self) -> None:
        self.mark = 0                       # the last step id summed into ``kept``
        self.kept: dict[tuple[str, str, str], int] = {}

    async def read(self, conn) -> dict[tuple[str, str, str], int]:
        sums: dict[tuple[str, str, str], int] = defaultdict(int, self.kept)
        running_seen = False
        mark, kept = self.mark, None
        for sid, integration, flow, status, counts in await reports.steps_after(conn, self.mark):
            if status == "running":
                if not running_seen:
                    running_seen, kept = True, dict(sums)
                continue
            for key, value in counts.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    sums[(integration, flow, key)] += int(value)
            if not running_seen:
                mark = sid
        self.mark, self.kept = mark, (kept if running_seen else dict(sums))
        return sums


@dataclass
class Snapshot:
    """What one scrape reports, read before ``prometheus_client`` asks for it."""
    now: datetime
    flows: dict[str, list[str]]                  # configured integration -> its flows
    runs: list[tuple[str, str, int]]
    steps: dict[tuple[str, str, str], int]
    open: dict[str, list[tuple[str, str, str, int]]]
    held: list[tuple[str, str, int]]
    last_runs: list[tuple]
    last_reads: list[tuple]
    paused: set[str]
    running: dict[str, bool]
    failing: dict[str, bool]
    http: dict[str, tuple[int, int]] = field(default_factory=dict)   # system -> (requests, 429s)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


class StateCollector(Collector):
    """Reports a ``Snapshot`` that ``refresh()`` reads from the state at each scrape."""

    def __init__(self, service: "Daemon",
                 clock: Callable[[], datetime] | None = None) -> None:
        self.service = service
        self.clock = clock or (lambda: datetime.now(timezone.utc))    # tests set their own
        self.sums = StepSums()
        self.snapshot: Snapshot | None = None

    async def refresh(self) -> None:
        svc, app = self.service, self.service.app
        assert app is not None and app.db is not None
        async with app.db.connect() as conn:
            snap = Snapshot(
                now=self.clock(),
                flows={name: [f.name for f in integ.flows]
                       for name, integ in sorted(app.integrations.items())},
                runs=await reports.run_outcomes(conn),
                steps=await self.sums.read(conn),
                open={t: await reports.open_counts(conn, t)
                      for t in ("record_errors", "reviews", "exclusions")},
                held=await reports.held_waiting(conn),
                last_runs=await reports.last_finished_runs(conn),
                last_reads=await reports.last_reads(conn),
                paused=set(await operator.paused(conn)),
                running={}, failing={})
        for name in snap.flows:
            snap.running[name] = svc.live.running(name)
            snap.failing[name] = svc.health.get(name) == "failing"
        for system, connector in sorted(app.connectors.items()):
            http = getattr(connector, "http", None)
            if http is not None and hasattr(http, "requests"):
                snap.http[system] = (http.requests, getattr(http, "throttled", 0))
        self.snapshot = snap

    def describe(self) -> Iterable[Metric]:
        return []                           # nothing to check at registration: read per scrape

    def collect(self) -> Iterable[Metric]:
        s = self.snapshot
        if s is None:
            return []
        return [*self._counters(s), *self._gauges(s), *self._lag(s), *self._http(s)]

    # --- counters --------------------------------------------------------------------------
    def _counters(self, s: Snapshot) -> list[Metric]:
        runs = CounterMetricFamily(
            "accord_runs", "Finished runs by integration and final outcome.",
            labels=["integration", "outcome"])
        by_run: dict[tuple[str, str], int] = {(i, o): 0 for i in s.flows for o in FINAL_OUTCOMES}
        by_run.update({(i, o): n for i, o, n in s.runs})
        for (integration, outcome), n in sorted(by_run.items()):
            runs.add_metric([integration, outcome], n)

        records = CounterMetricFamily(
            "accord_records", "Records by outcome (created_right, updated_left, errors, ...), "
            "from the counts of finished steps.", labels=["integration", "flow", "outcome"])
        read = CounterMetricFamily("accord_records_read", "Records read from each side, from "
                                   "the counts of finished steps.",
                                   labels=["integration", "flow", "side"])
        conflicts = CounterMetricFamily(
            "accord_conflicts", "Fields changed on both sides between two runs (decided by the "
            "flow's conflict rule, logged).", labels=["integration", "flow"])
        sums: dict[tuple[str, str, str], int] = {}
        for integration, flows in s.flows.items():
            for flow in flows:
                for key in RECORD_OUTCOMES + ["read_left", "read_right", "conflicts"]:
                    sums[(integration, flow, key)] = 0
        sums.update(s.steps)
        for (integration, flow, key), n in sorted(sums.items()):
            if key.startswith("read_"):
                read.add_metric([integration, flow, key[len("read_"):]], n)
            elif key == "conflicts":
                conflicts.add_metric([integration, flow], n)
            else:
                records.add_metric([integration, flow, key], n)
        return [runs, records, read, conflicts]

    # --- gauges ----------------------------------------------------------------------------
    def _gauges(self, s: Snapshot) -> list[Metric]:
        out: list[Metric] = []
        for table, name, help_ in (
                ("record_errors", "accord_record_errors", "Open record errors."),
                ("reviews", "accord_reviews", "Ambiguous matches awaiting review."),
                ("exclusions", "accord_exclusions", "Records left out of the sync by hand.")):
            g = GaugeMetricFamily(name, help_, labels=["integration", "flow", "side"])
            values = {(i, f, side): 0 for i, flows in s.flows.items() for f in flows
                      for side in SIDES}
            values.update({(i, f, side): n for i, f, side, n in s.open[table]})
            for labels, n in sorted(values.items()):
                g.add_metric(list(labels), n)
            out.append(g)
        held = GaugeMetricFamily("accord_held_deletes", "Deletes held by the circuit-breaker, "
                                 "not yet approved.", labels=["integration", "flow"])
        values2 = {(i, f): 0 for i, flows in s.flows.items() for f in flows}
        values2.update({(i, f): n for i, f, n in s.held})
        for labels, n in sorted(values2.items()):
            held.add_metric(list(labels), n)
        out.append(held)

        duration = GaugeMetricFamily("accord_last_run_duration_seconds",
                                     "Duration of the last finished run (0: none yet).",
                                     labels=["integration"])
        finished = GaugeMetricFamily("accord_last_run_finished_timestamp_seconds",
                                     "When the last finished run ended, Unix time (0: none yet).",
                                     labels=["integration"])
        last = {i: (0.0, 0.0) for i in s.flows}
        for integration, started, ended in s.last_runs:
            a, b = _utc(started), _utc(ended)
            last[integration] = (round(max(0.0, (b - a).total_seconds()), 3),
                                 round(b.timestamp(), 3))
        for integration, (secs, at) in sorted(last.items()):
            duration.add_metric([integration], secs)
            finished.add_metric([integration], at)
        out += [duration, finished]

        for name, help_, values3 in (
                ("accord_run_in_progress", "1 while a run of the integration is under way.",
                 s.running),
                ("accord_integration_failing", "1 when the integration's last run failed.",
                 s.failing),
                ("accord_integration_paused", "1 while an operator has paused the integration's "
                 "scheduled runs.", {i: i in s.paused for i in s.flows})):
            g = GaugeMetricFamily(name, help_, labels=["integration"])
            for integration, flag in sorted(values3.items()):
                g.add_metric([integration], int(bool(flag)))
            out.append(g)
        return out

    def _lag(self, s: Snapshot) -> list[Metric]:
        g = GaugeMetricFamily(
            "accord_cursor_lag_seconds", "Age of the newest successful read of the flow's side: "
            "now minus the end of the last step that read it (+Inf: never read).",
            labels=["integration", "flow", "side"])
        when: dict[tuple[str, str], Any] = {(i, f): None for i, flows in s.flows.items()
                                             for f in flows}
        when.update({(i, f): at for i, f, at in s.last_reads})
        for (integration, flow), at in sorted(when.items()):
            lag = math.inf if at is None else round(max(0.0, (s.now - _utc(at)).total_seconds()),
                                                    3)
            for side in SIDES:
                g.add_metric([integration, flow, side], lag)
        return [g]

    def _http(self, s: Snapshot) -> list[Metric]:
        req = CounterMetricFamily("accord_http_requests", "HTTP requests sent to each system "
                                  "(since its connector started).", labels=["system"])
        thr = CounterMetricFamily("accord_http_throttled", "HTTP 429 answers from each system "
                                  "(since its connector started).", labels=["system"])
        for system, (n, throttled) in s.http.items():
            req.add_metric([system], n)
            thr.add_metric([system], throttled)
        return [req, thr]


class Metrics:
    """The registry of one web app and its state collector."""

    def __init__(self, service: "Daemon") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = StateCollector(service)
        self.registry.register(self.collector)
        self._lock = asyncio.Lock()          # one scrape's snapshot at a time

    async def exposition(self) -> bytes:
        async with self._lock:
            await self.collector.refresh()
            return generate_latest(self.registry)
