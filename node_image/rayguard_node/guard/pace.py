"""How soon the guard must look again: its period follows the risk.

From its samples the guard estimates how fast memory grows and so how long until the
threshold. It samples again after a share of that time (`LOOK_AGAIN_SHARE`), between a
floor (`guard_min_refresh_ms`) and the configured period, which stays the idle ceiling.
Far below the threshold, or when memory is not growing, that is the configured period:
as cheap as a fixed poll. Close to it, the intervals shrink towards the floor, so the
threshold is seen within about one floor period of being crossed.

The rate is the larger of the last interval's growth and a decaying memory of the fastest
growth seen (half-life `PEAK_HALF_LIFE_S`): a node that has just seen a burst stays
watchful for a while, even when the next burst starts from a pause.
"""

from __future__ import annotations

from dataclasses import dataclass

LOOK_AGAIN_SHARE = 0.5  # of the time left until the threshold at the estimated rate
PEAK_HALF_LIFE_S = 5.0


@dataclass(frozen=True)
class Pace:
    floor_s: float
    ceiling_s: float

    def interval(self, headroom_bytes: int, rate_bytes_s: float) -> float:
        """Seconds until the next sample, given the bytes left below the threshold."""
        if headroom_bytes <= 0:
            return self.floor_s
        if rate_bytes_s <= 0:
            return self.ceiling_s
        return min(self.ceiling_s, max(self.floor_s, LOOK_AGAIN_SHARE * headroom_bytes / rate_bytes_s))


class GrowthRate:
    """Growth of a counter in bytes per second, from successive samples."""

    def __init__(self, half_life_s: float = PEAK_HALF_LIFE_S) -> None:
        self.half_life_s = half_life_s
        self._last: tuple[float, int] | None = None
        self.latest_bytes_s = 0.0
        self._peak_bytes_s = 0.0
        self._peak_at = 0.0

    def observe(self, now: float, used_bytes: int) -> None:
        if self._last is not None:
            then, before = self._last
            if now > then:
                self.latest_bytes_s = (used_bytes - before) / (now - then)
                if self.latest_bytes_s >= self.peak(now):
                    self._peak_bytes_s, self._peak_at = self.latest_bytes_s, now
        self._last = (now, used_bytes)

    def peak(self, now: float) -> float:
        if self._peak_bytes_s <= 0:
            return 0.0
        return self._peak_bytes_s * 0.5 ** ((now - self._peak_at) / self.half_life_s)

    def planning_rate(self, now: float) -> float:
        """The rate to plan the next sample with: never below the decayed peak."""
        return max(self.latest_bytes_s, self.peak(now))
