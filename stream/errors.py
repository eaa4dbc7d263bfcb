"""One exception base for the project, so callers can catch seqstream's own failures apart.

Every message says what was expected and what came, so a user can act on it without a traceback.
"""

__all__ = [
    "ArtifactError",
    "ConfigError",
    "RecordError",
    "SeqstreamError",
    "StackError",
]


class SeqstreamError(Exception):
    """Base of every error seqstream raises on purpose."""


class ConfigError(SeqstreamError, ValueError):
    """A setting (env var, flag or config file field) has a bad value."""


class ArtifactError(SeqstreamError):
    """A model artifact is missing, corrupt, or its card does not match its weights."""


class RecordError(SeqstreamError, ValueError):
    """An incoming event is invalid; ``reason`` is a short stable label used for counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StackError(SeqstreamError):
    """The local stack (Kafka, Redis, Prometheus) cannot be started, stopped or reached."""
