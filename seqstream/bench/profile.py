"""Where a pipeline process's main thread spends its time, from a cProfile dump.

cProfile sees the thread that runs the event loop (faust's consumer thread and the kernel are
not in it), and it adds a roughly constant cost per Python call, so shares of the per-event
paths are inflated; the summary is for *where* the time goes, the throughput table for *how
much*. Self time is summed by the package a function lives in; a C function (no file) counts
for the package of its heaviest caller, except the few named ones below. Import and start-up
time and the loop's idle wait (``epoll``) are shown apart from the busy total.

>>> _category(("/x/site-packages/faust/streams.py", 1, "f"))
'faust + mode'
"""

from __future__ import annotations

import pstats
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["summarize"]

IDLE = "idle (event loop waiting: epoll)"
STARTUP = "start-up (imports, class creation)"
PATTERNS = (
    ("/faust/", "faust + mode"), ("/mode/", "faust + mode"), ("/aiokafka/", "aiokafka"),
    ("/asyncio/", "asyncio event loop"), ("/torch/", "torch"), ("/redis/", "redis-py"),
    ("/stream/records.py", "validation (stream.records)"), ("/stream/", "seqstream (stream.*)"),
    ("/bench/", "bench pipeline glue"), ("/numpy/", "numpy"), ("importlib", STARTUP),
    ("<frozen", STARTUP),
)
BUILTINS = (("select.epoll", IDLE), ("torch.", "torch"), ("orjson", "orjson"),
            ("numpy", "numpy"), ("marshal", STARTUP), ("__build_class__", STARTUP),
            ("builtins.compile", STARTUP), ("_socket.socket", "socket I/O"))


def _category(key: tuple[str, int, str]) -> str | None:
    filename, _, name = key
    if filename == "~":
        for needle, cat in BUILTINS:
            if needle in name:
                return cat
        return None
    for needle, cat in PATTERNS:
        if needle in filename:
            return cat
    return "other Python"


def summarize(path: Path, top: int = 12) -> dict[str, Any]:
    """Self time by category (busy share excludes idle and start-up) and the top functions."""
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    by_cat: dict[str, float] = defaultdict(float)
    for key, (_, _, tt, _, callers) in stats.items():
        cat = _category(key)
        if cat is None:  # a C function: its heaviest caller's package
            heaviest = max(callers.items(), key=lambda kv: kv[1][2], default=None)
            cat = (_category(heaviest[0]) if heaviest else None) or "other C"
        by_cat[cat] += tt
    busy = sum(v for k, v in by_cat.items() if k not in (IDLE, STARTUP))
    cats = sorted(by_cat.items(), key=lambda kv: -kv[1])
    funcs = sorted(((tt, key) for key, (_, _, tt, _, _) in stats.items()
                    if _category(key) not in (IDLE, STARTUP)), reverse=True)[:top]
    return {
        "busy_s": round(busy, 3),
        "categories": [{"what": k, "seconds": round(v, 3),
                        "busy_share": None if k in (IDLE, STARTUP) else round(v / busy, 3)}
                       for k, v in cats if v >= 0.001],
        "top_functions": [{"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "self_s": round(t, 3)}
                          for t, k in funcs],
    }
