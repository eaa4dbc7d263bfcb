"""``seqstream worker --model ARTIFACT``: load and verify the model, then run the Faust worker.

Everything that can be wrong before the first event — a missing or corrupt artifact, a bad
setting, Redis or Kafka unreachable, the metrics port taken — stops start-up with one line (the
``seqstream`` dispatcher prints a :class:`~stream.errors.SeqstreamError` as ``seqstream worker:
...``) before anything is consumed.
"""

from __future__ import annotations

import argparse

from stream.errors import ConfigError
from stream.settings import Settings, add_flags, env_name

__all__ = ["FLAGS", "configure", "run"]

FLAGS = (
    "kafka_bootstrap", "topic_events", "topic_predictions", "topic_anomalies",
    "topic_deadletter", "topic_beats", "partitions", "app_id", "redis_url", "metrics_host",
    "metrics_port",
    "batch_max", "state_ttl_s", "state_loss", "warmup_steps", "max_gap_s",
    "max_payload_bytes", "max_future_s", "log_level",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", dest="model", default=None, metavar="ARTIFACT",
                        help=f"model artifact directory (env {env_name('model')})")
    add_flags(parser, FLAGS)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(overrides=vars(args))
    if settings.model is None:
        raise ConfigError(f"--model: expected an artifact directory (or {env_name('model')}), "
                          "got none")
    from stream.artifact import load_artifact  # torch is imported only once the flags are fine

    artifact = load_artifact(settings.model)
    from stream.worker import run_worker

    return run_worker(settings, artifact)
