"""``python -m seqstream.bench.proc CONFIG_JSON [PROFILE_OUT]``: one pipeline process of a
benchmark run.

The harness starts each pipeline in a process of its own (a faust app owns its process and loop,
and two processes form a two-member consumer group), stops it with SIGTERM, and with
``PROFILE_OUT`` gets a cProfile dump of the process's main thread, where the event loop runs.

``BENCH_GC_FREEZE=1`` applies :func:`freeze_startup` before any pipeline starts
(``BENCH_GC_GEN0`` overrides its young-generation threshold), to measure what the worker's own
freeze after start-up (``stream.worker.run_worker``) is worth to the other pipelines.
"""

from __future__ import annotations

import cProfile
import json
import os
import sys

__all__ = ["freeze_startup", "main"]


def freeze_startup() -> None:
    """Move everything start-up allocated into the collector's permanent generation and collect
    the young generation less often.

    Why: the per-batch garbage (parsed JSON, rows, records) triggers a collection every 700
    allocations, and the older generations' collections walk every long-lived object — torch's,
    faust's and aiokafka's modules and classes, hundreds of thousands of them — each time; the
    profile charges that to whatever C call allocated (``orjson.loads`` looked 50x slower than it
    is). Frozen objects are never walked; cyclic garbage made later is still collected.
    """
    import gc

    import faust  # noqa: F401 - loaded now so that start-up is frozen with it
    import redis.asyncio  # noqa: F401
    import torch  # noqa: F401

    import stream.engine  # noqa: F401

    gc.collect()
    gc.freeze()
    gc.set_threshold(int(os.environ.get("BENCH_GC_GEN0", "50000")), 50, 100)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from seqstream.bench.pipelines import Config, run

    cfg = Config(**json.loads(argv[0]))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    if os.environ.get("BENCH_GC_FREEZE") == "1":
        freeze_startup()
    profile_out = argv[1] if len(argv) > 1 else None
    if profile_out:  # import before profiling, so the profile shows work, not start-up
        import aiokafka  # noqa: F401
        import faust  # noqa: F401
        import redis.asyncio  # noqa: F401

        import stream.batchsend
        import stream.engine
        import stream.fastpath  # noqa: F401
    profiler = cProfile.Profile() if profile_out else None
    if profiler is not None:
        profiler.enable()
    try:
        run(cfg)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
