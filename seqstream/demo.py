"""``seqstream demo``: the README's main job.

For now it brings the local stack up and reports each part's health; the full demo (train on real
ECG, stream it through the worker, show predictions, anomalies and latency) replaces this once the
worker lands.
"""

from __future__ import annotations

import argparse

from seqstream import stack

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    stack.configure_ports(parser)


def run(args: argparse.Namespace) -> int:
    args.action = "up"
    stack.run(args)
    args.action = "status"
    return stack.run(args)
