"""``seqstream COMMAND ...``: each command lives in its own module, imported only when chosen.

A command module exposes ``configure(parser)`` (adds its flags) and ``run(args) -> int``. Importing
lazily keeps ``seqstream stack status`` from paying for torch or Lightning, and keeps the worker's
process free of Lightning.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

from stream.errors import SeqstreamError

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("seqstream.stack", "start, stop or check the local Kafka + Redis + Prometheus stack"),
    "train": ("training.cli", "train a forecaster on recorded data and export an artifact"),
    "worker": ("stream.cli", "run the streaming worker (Faust) for a model artifact"),
    "publish": ("seqstream.publish", "replay recorded ECG / sensor data to the events topic"),
    "tail": ("seqstream.tail", "follow the predictions or anomalies topic"),
    "view": ("seqstream.view", "a live web page of any entity: signal, forecast, flags, beats"),
    "demo": ("seqstream.demo", "stack up, train on real ECG, stream it, show results"),
    "bench": ("seqstream.bench.cli", "measure throughput and latency against baselines"),
    "evaluate": ("seqstream.evaluate", "score streamed flags and forecasts on labelled data"),
    "state": ("seqstream.state", "inspect, count or migrate the entity states kept in Redis"),
}
# The commands that need an extra of pyproject.toml: the base install is the worker's.
EXTRAS: dict[str, str] = {"publish": "publish", "train": "train", "demo": "train",
                          "evaluate": "evaluate", "bench": "evaluate"}


def _overview() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqstream", description="Streaming RNN forecasts and anomaly flags on Kafka.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<9} {h}" for n, (_, h) in COMMANDS.items())
        + "\n\n`seqstream COMMAND --help` shows a command's flags; each names its SEQSTREAM_* "
          "variable.")
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    parser.add_argument("--version", action="version", version=f"seqstream {_version()}")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError

    try:
        from seqstream import __version__
    except PackageNotFoundError:  # run from a checkout that pip never installed
        return "(not installed)"
    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        _overview().parse_args(argv[:1] or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    try:
        return _run(name, importlib.import_module(module_name), help_text, rest)
    except ModuleNotFoundError as ex:
        if ex.name == module_name:
            print(f"seqstream {name}: not available in this build ({module_name} is missing)",
                  file=sys.stderr)
            return 2
        if name in EXTRAS and (ex.name or "").split(".")[0] not in ("seqstream", "stream",
                                                                     "training"):
            print(f"seqstream {name}: expected the package {ex.name!r}, which the base "
                  f"install leaves out: pip install 'seqstream[{EXTRAS[name]}]'",
                  file=sys.stderr)
            return 2
        raise


def _run(name: str, module: ModuleType, help_text: str, rest: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"seqstream {name}", description=help_text)
    module.configure(parser)
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(module.run(args) or 0)
    except SeqstreamError as ex:
        print(f"seqstream {name}: {ex}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
