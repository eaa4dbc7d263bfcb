"""``seqstream bench``: throughput, latency and state cost of the worker against baselines.

See :mod:`bench.cli` for what one run measures and :mod:`bench.pipelines` for the pipelines.
"""

__all__: list[str] = []
