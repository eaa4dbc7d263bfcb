"""Offline quality evaluation: metrics, labels, baselines and the report of ``seqstream
evaluate``. It may import ``stream`` and ``training``; ``stream`` never imports it."""

__all__: list[str] = []
