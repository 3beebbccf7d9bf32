"""How long an engine run has left, from its ``--progress json`` events.

The engine reports one overall fraction in which each stage has its weight
(``segment.StagedProgress``: loading 5 %, preprocessing 10 %, the network 55 %, the CRF 15 %,
...), but the stages do not go equally fast per share: on a CPU the network's share takes far
longer than the loading's. So the estimate works per stage:

* a stage's share of the bar and its seconds are measured as the run goes (a stage ends where
  the next one starts) and kept as the :class:`StageProfile` of a finished run;
* the stage running now goes at its measured rate once it has run for a moment, and takes at
  least what is left of the seconds the last finished run took for it (a stage can go on at a
  full share: the network's clean-up after its last tile, the CRF's lattice before its first
  iteration);
* the stages still to come take the seconds per share the last finished run measured for them
  (its :class:`StageProfile`), scaled by how fast this run has gone so far compared with that one
  over the same stages (a larger volume, another device); without an earlier run, the rate of
  the stage now running (or of the run so far, early in a stage) stands for all of them;
* the time since the last event is taken off.

No estimate (None) until a second of progress has been seen: a number then would only jitter.
No Qt, no MRML: pytest runs it on made-up timelines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["StageProfile", "RemainingTime", "describe_seconds"]

#: Seconds of progress seen before the first estimate.
SETTLE_S = 1.0


@dataclass(frozen=True)
class StageProfile:
    """What a finished run measured: per stage, its share of the overall bar (fraction at its
    end minus at its start) and its seconds, in the order the stages ran."""

    stages: tuple[tuple[str, float, float], ...] = ()  # (stage, share, seconds)

    def seconds_per_share(self, stage: str) -> float | None:
        for name, share, seconds in self.stages:
            if name == stage and share > 0:
                return seconds / share
        return None

    def seconds_of(self, stage: str) -> float | None:
        return next((seconds for name, _share, seconds in self.stages if name == stage), None)

    def share_after(self, stage: str) -> list[tuple[str, float]]:
        """The stages after ``stage`` (all of them when it did not run) with their shares."""
        names = [name for name, _share, _seconds in self.stages]
        start = names.index(stage) + 1 if stage in names else 0
        return [(name, share) for name, share, _seconds in self.stages[start:]]

    def end_of(self, stage: str) -> float | None:
        """The overall fraction at which ``stage`` ended."""
        end = 0.0
        for name, share, _seconds in self.stages:
            end += share
            if name == stage:
                return end
        return None


@dataclass
class RemainingTime:
    """Follows one run's progress events (:meth:`observe`) and estimates its seconds left
    (:meth:`seconds_left`); :meth:`profile` is what it measured, for the next run."""

    earlier: StageProfile = field(default_factory=StageProfile)
    _started_at: float | None = None
    #: (stage, fraction at its start, time at its start), in order
    _stages: list[tuple[str, float, float]] = field(default_factory=list)
    _fraction: float = 0.0
    _time: float = 0.0

    def observe(self, stage: str, fraction: float, now: float) -> None:
        """One progress event: ``stage``, the overall ``fraction`` (0-1), at time ``now`` (s).
        Events of other kinds (warnings) carry no stage of their own: leave them out."""
        if self._started_at is None:
            self._started_at = now
        if not self._stages or self._stages[-1][0] != stage:
            self._stages.append((stage, max(fraction, self._fraction), now))
        self._fraction, self._time = max(fraction, self._fraction), now

    def profile(self) -> StageProfile:
        """Each stage's share and seconds so far (the stage now running up to now)."""
        ends = [(fraction, time) for _stage, fraction, time in self._stages[1:]]
        ends.append((self._fraction, self._time))
        return StageProfile(tuple(
            (stage, end_fraction - start_fraction, end_time - start_time)
            for (stage, start_fraction, start_time), (end_fraction, end_time)
            in zip(self._stages, ends)))

    def seconds_left(self, now: float | None = None) -> float | None:
        """The estimate at time ``now`` (default: the last event's), or None while too little
        has been seen."""
        if self._started_at is None:
            return None
        if self._fraction >= 1.0 - 1e-6:
            return 0.0
        elapsed = self._time - self._started_at
        if elapsed < SETTLE_S or self._fraction <= 0.0:
            return None
        stage, stage_fraction, stage_time = self._stages[-1]
        overall = elapsed / self._fraction  # seconds per share, this run so far
        speed = self._speed_against_earlier()
        per_share_now = self._rate_now(stage, stage_fraction, stage_time)
        if per_share_now is None:
            known = self.earlier.seconds_per_share(stage)
            per_share_now = known * speed if known is not None else overall
        since = 0.0 if now is None else max(0.0, now - self._time)
        end = self.earlier.end_of(stage)
        if end is None or end < self._fraction:  # no earlier run (or a run unlike it)
            return max(0.0, (1.0 - self._fraction) * per_share_now - since)
        left = (end - self._fraction) * per_share_now
        earlier_seconds = self.earlier.seconds_of(stage)
        if earlier_seconds is not None:
            left = max(left, earlier_seconds * speed - (self._time - stage_time))
        for later, share in self.earlier.share_after(stage):
            known = self.earlier.seconds_per_share(later)
            left += share * (known * speed if known is not None else overall)
        return max(0.0, left - since)

    def _rate_now(self, stage: str, start_fraction: float, start_time: float) -> float | None:
        """Seconds per share of the stage now running, once it has run a moment."""
        seconds, share = self._time - start_time, self._fraction - start_fraction
        return seconds / share if seconds >= SETTLE_S and share > 0 else None

    def _speed_against_earlier(self) -> float:
        """This run's seconds over the earlier run's for the stages both finished (1 when
        there is nothing to compare)."""
        now = {stage: seconds for stage, _share, seconds in self.profile().stages[:-1]}
        pairs = [(now[stage], seconds) for stage, _share, seconds in self.earlier.stages
                 if stage in now and seconds > 0]
        return sum(a for a, _ in pairs) / sum(b for _, b in pairs) if pairs else 1.0


def describe_seconds(seconds: float) -> str:
    """A time left as the status line says it: "8 s", "40 s", "3 min" (rounded so that the
    number does not flicker from one poll to the next)."""
    if seconds < 10:
        return f"{max(1, round(seconds))} s"
    if seconds < 90:
        return f"{round(seconds / 5) * 5} s"
    return f"{round(seconds / 60)} min"
