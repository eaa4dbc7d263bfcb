"""``seqstream view``: a live web page of any patient or pump, served by seqstream itself.

It lists the entities heard since it started and shows, for the one chosen, the signal (events
topic), the 1-step forecast, the score against the threshold and the flags (predictions topic)
and, for ECG models, the detected beats with their classes (beats topic), scrolling as they
arrive; plus the fleet figures from Prometheus. Modules: :mod:`~seqstream.view.buffers` (bounded
per-entity rings), :mod:`~seqstream.view.follower` (the Kafka consumer),
:mod:`~seqstream.view.server` (aiohttp) and ``static/`` (the page: plain canvas code, no CDN).
"""

from __future__ import annotations

import argparse
import logging

from stream.errors import StackError
from stream.settings import Settings, add_flags

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, ["view_host", "view_port", "view_samples", "view_entities",
                       "prometheus_url", "kafka_bootstrap", "topic_events", "topic_predictions",
                       "topic_beats"])


def run(args: argparse.Namespace) -> int:
    from aiohttp import web

    from seqstream.view.server import make_app

    settings = Settings.from_env(overrides=vars(args))
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the page says what is wrong
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # one line per poll otherwise
    print(f"seqstream view: open http://{settings.view_host}:{settings.view_port}/ "
          f"(following {settings.topic_predictions} on {settings.kafka_bootstrap}; Ctrl-C to "
          "stop)", flush=True)
    try:
        web.run_app(make_app(settings), host=settings.view_host, port=settings.view_port,
                    print=None, handle_signals=True)
    except OSError as ex:  # the port is taken, or the address is not this machine's
        raise StackError(f"expected to serve on {settings.view_host}:{settings.view_port} "
                         f"(SEQSTREAM_VIEW_HOST, SEQSTREAM_VIEW_PORT), got {ex}") from ex
    return 0
