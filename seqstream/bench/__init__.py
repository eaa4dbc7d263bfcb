"""``seqstream bench``: throughput, latency and state cost of the worker against baselines.

See :mod:`seqstream.bench.cli` for what one run measures and :mod:`seqstream.bench.pipelines` for
the pipelines.
"""

__all__: list[str] = []
