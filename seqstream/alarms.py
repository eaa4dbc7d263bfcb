"""Sample flags folded into alarms: a sustained fault is one alarm (start, end), not hundreds of
flagged samples.

Per entity, an alarm starts at a flagged sample that comes more than ``gap_s`` seconds after the
previous flag (or is the entity's first), and ends once more than ``gap_s`` seconds passed
without a flag: flags no further apart than that belong to the same alarm. (The worker's sensor
score ends its alarms the same way, over samples: :class:`stream.sensor_score.SensorScore`.)
An alarm still open is reported with its start and the time of its latest flag.

>>> t = AlarmTracker(gap_s=5.0)
>>> for ts, flag in [(0, True), (1, True), (3, True), (9, False)]:
...     print(repr(t.update("pump-1", ts, flag)))
'ALARM since 0.000 s'
'ALARM since 0.000 s (1 s)'
'ALARM since 0.000 s (3 s)'
'alarm 0.000 s - 3.000 s ended'
>>> t.update("pump-1", 10, False), t.update("pump-1", 11, True)
('', 'ALARM since 11.000 s')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Alarm", "AlarmTracker"]


@dataclass
class Alarm:
    """One entity's current alarm: first and latest flagged sample times (seconds)."""

    start: float
    last: float


class AlarmTracker:
    """Folds each entity's flags, in time order, into alarms."""

    def __init__(self, gap_s: float, clock: Callable[[float], str] | None = None) -> None:
        if not gap_s > 0:
            raise ValueError(f"alarm gap: expected a positive number of seconds, got {gap_s}")
        self.gap_s = gap_s
        self.clock = clock or (lambda ts: f"{ts:.3f} s")
        self.open: dict[str, Alarm] = {}

    def update(self, entity: str, ts: float, flagged: bool) -> str:
        """The entity's alarm status after its sample at ``ts``: ``ALARM since <start>
        (<duration>)`` while one is open, ``alarm <start> - <end> ended`` once, on the first
        sample past its end, and ``''`` otherwise."""
        alarm = self.open.get(entity)
        if alarm is not None and ts - alarm.last > self.gap_s:
            del self.open[entity]
            ended = f"alarm {self.clock(alarm.start)} - {self.clock(alarm.last)} ended"
            if not flagged:
                return ended
            alarm = None
        if not flagged:
            return self._status(alarm) if alarm is not None else ""
        if alarm is None:
            alarm = self.open[entity] = Alarm(ts, ts)
        alarm.last = ts
        return self._status(alarm)

    def _status(self, alarm: Alarm) -> str:
        span = alarm.last - alarm.start
        return f"ALARM since {self.clock(alarm.start)}" + (f" ({span:.0f} s)" if span else "")
