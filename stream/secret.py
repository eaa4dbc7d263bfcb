"""A string that never shows itself: passwords in :class:`~stream.settings.Settings`.

Settings are frozen dataclasses, and a dataclass's ``repr`` prints every field, so a plain ``str``
password would reach any log line or traceback that shows the settings. :class:`Secret` prints as
``Secret('***')`` and only :meth:`Secret.reveal` hands the value out, at the one place that passes
it to a client library.

>>> s = Secret("hunter2")
>>> s, f"{s}", s.reveal()
(Secret('***'), '***', 'hunter2')
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Secret"]


@dataclass(frozen=True)
class Secret:
    """A secret value; ``repr``/``str`` are masked, equality compares the values."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """The value itself, for the client library that needs it (never for logs)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)
