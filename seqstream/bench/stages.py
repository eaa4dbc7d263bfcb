"""Where (c)'s batches spend their time under steady load, read from the worker's own
``seqstream_stage_seconds`` histogram (:data:`stream.metrics.STAGES`) on its /metrics endpoint.

The harness scrapes the worker once its group is Stable, before the first event is sent, and
again once every prediction is appended and the last batch's stages are recorded
(:func:`settled`); per stage, the difference of the two scrapes' buckets is the run's batches::

    batches = Δcount, mean = Δsum / Δcount,
    p50, p99 = histogram_quantile over the Δbuckets (linear inside a bucket, as Prometheus does)

So the quantiles are as coarse as the buckets (1-2.5-5 steps from 0.1 ms to 10 s) and are the
figures the Grafana panel shows for the same traffic; unlike the latency percentiles, they cover
the warm-up second too.

>>> before = {"model": Hist((0.001, 0.0025, math.inf), (0.0, 0.0, 0.0), 0.0)}
>>> after = {"model": Hist((0.001, 0.0025, math.inf), (0.0, 4.0, 4.0), 0.008)}
>>> summary(before, after)["model"]
{'batches': 4, 'mean_ms': 2.0, 'p50_ms': 1.75, 'p99_ms': 2.485}
"""

from __future__ import annotations

import asyncio
import math
import time
import urllib.request
from dataclasses import dataclass

from stream.metrics import STAGES

__all__ = ["Hist", "parse", "quantile", "scrape", "settled", "summary"]

METRIC = "seqstream_stage_seconds"


@dataclass(frozen=True)
class Hist:
    """One stage's histogram as exported: upper bounds (``inf`` last), cumulative counts, sum."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    sum_s: float

    def minus(self, other: Hist) -> Hist:
        """The observations made between ``other`` (an earlier scrape) and this one."""
        return Hist(self.bounds, tuple(a - b for a, b in zip(self.counts, other.counts,
                                                               strict=True)),
                    self.sum_s - other.sum_s)


def parse(text: str) -> dict[str, Hist]:
    """Each stage's histogram from a /metrics page (Prometheus text format).

    >>> page = ('seqstream_stage_seconds_bucket{le="0.001",stage="model"} 1.0\\n'
    ...         'seqstream_stage_seconds_bucket{le="+Inf",stage="model"} 3.0\\n'
    ...         'seqstream_stage_seconds_sum{stage="model"} 0.012\\n')
    >>> parse(page)
    {'model': Hist(bounds=(0.001, inf), counts=(1.0, 3.0), sum_s=0.012)}
    """
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            stage = s.labels.get("stage", "")
            if s.name == METRIC + "_bucket":
                buckets.setdefault(stage, {})[float(s.labels["le"])] = s.value
            elif s.name == METRIC + "_sum":
                sums[stage] = s.value
    return {stage: Hist(tuple(sorted(b)), tuple(b[le] for le in sorted(b)), sums.get(stage, 0.0))
            for stage, b in buckets.items()}


def quantile(q: float, hist: Hist) -> float | None:
    """Prometheus' ``histogram_quantile`` on one histogram: None if it counts nothing; the
    highest finite bound if the quantile falls in the +Inf bucket.

    >>> h = Hist((0.001, 0.0025, 0.005, math.inf), (2.0, 2.0, 4.0, 4.0), 0.0)
    >>> quantile(0.25, h), quantile(0.75, h), quantile(0.5, h)
    (0.0005, 0.00375, 0.001)
    >>> quantile(0.99, Hist((0.001, math.inf), (0.0, 1.0), 9.0))
    0.001
    """
    bounds, counts = hist.bounds, hist.counts
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    i = next(k for k, c in enumerate(counts) if c >= rank)
    if math.isinf(bounds[i]):
        return bounds[i - 1] if i > 0 else None
    lo, below = (bounds[i - 1], counts[i - 1]) if i > 0 else (0.0, 0.0)
    inside = counts[i] - below
    return lo + (bounds[i] - lo) * ((rank - below) / inside if inside > 0 else 1.0)


def summary(before: dict[str, Hist], after: dict[str, Hist]) -> dict[str, dict[str, float | None]]:
    """Per stage of :data:`STAGES`, what happened between two scrapes: batches, mean, p50, p99
    (ms, rounded to the µs; None without batches)."""
    out: dict[str, dict[str, float | None]] = {}
    for stage in STAGES:
        if stage not in after:
            continue
        d = after[stage].minus(before[stage]) if stage in before else after[stage]
        n = round(d.counts[-1]) if d.counts else 0
        out[stage] = {"batches": n, "mean_ms": _ms(d.sum_s / n) if n else None,
                      "p50_ms": _ms(quantile(0.5, d)), "p99_ms": _ms(quantile(0.99, d))}
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


async def scrape(port: int, host: str = "127.0.0.1") -> dict[str, Hist]:
    """The worker's stage histograms now."""
    def get() -> str:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
            return r.read().decode()

    return parse(await asyncio.to_thread(get))


async def settled(port: int, timeout_s: float = 10.0) -> dict[str, Hist]:
    """A scrape once every stage has counted the same batches: the predictions are appended
    before their batch's state save is recorded, and in a benchmark every batch goes through
    every stage. After ``timeout_s``, the last scrape as it is (its counts then disagree)."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = await scrape(port)
        if len({h.counts[-1] for h in now.values()}) <= 1 or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.1)
