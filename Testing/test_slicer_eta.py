"""The time left of an engine run (``DeepOrganSegLib.mrml.eta``), on made-up timelines of
``--progress json`` events whose stages go at different rates per share of the bar, as the
engine's do (``segment.StagedProgress``'s weights; on a CPU the network's share is slow)."""

from __future__ import annotations

import pytest

from DeepOrganSegLib.mrml.eta import RemainingTime, StageProfile, describe_seconds

#: A run as the engine reports it: (stage, share of the bar, seconds it takes).
RUN = (("load", 0.05, 1.0), ("preprocess", 0.10, 2.0), ("inference", 0.55, 40.0),
       ("crf", 0.15, 6.0), ("postprocess", 0.10, 2.0), ("write", 0.05, 1.0))
TOTAL_S = sum(seconds for _stage, _share, seconds in RUN)


def events(run=RUN, speed: float = 1.0, steps: int = 10):
    """(stage, overall fraction, time) every tenth of each stage, ``speed`` times slower."""
    fraction = time = 0.0
    for stage, share, seconds in run:
        for step in range(steps + 1):
            yield stage, fraction + share * step / steps, time + speed * seconds * step / steps
        fraction += share
        time += speed * seconds


def follow(estimate: RemainingTime, until_s: float, speed: float = 1.0) -> None:
    for stage, fraction, time in events(speed=speed):
        if time > until_s:
            return
        estimate.observe(stage, fraction, time)


def test_no_estimate_before_a_second_of_progress():
    estimate = RemainingTime()
    assert estimate.seconds_left() is None
    follow(estimate, until_s=0.5)
    assert estimate.seconds_left() is None


def test_after_an_earlier_run_the_estimate_follows_each_stages_own_rate():
    """Halfway through the network, 20 s of it and 9 s after it are left: the earlier run's
    per-stage seconds say so, where the bar's fraction alone (36 % left) would not."""
    earlier = RemainingTime()
    follow(earlier, until_s=TOTAL_S)
    estimate = RemainingTime(earlier.profile())
    follow(estimate, until_s=3.0 + 20.0)
    assert estimate.seconds_left() == pytest.approx(20.0 + 9.0, rel=0.05)


def test_a_slower_run_than_the_earlier_one_is_estimated_at_its_own_speed():
    earlier = RemainingTime()
    follow(earlier, until_s=TOTAL_S)
    estimate = RemainingTime(earlier.profile())
    follow(estimate, until_s=2 * (3.0 + 20.0), speed=2.0)  # a volume twice as large
    assert estimate.seconds_left() == pytest.approx(2 * 29.0, rel=0.05)


def test_without_an_earlier_run_the_stages_rate_stands_for_the_rest():
    estimate = RemainingTime()
    follow(estimate, until_s=3.0 + 20.0)
    fraction = 0.15 + 0.55 / 2
    assert estimate.seconds_left() == pytest.approx((1 - fraction) * 20.0 / 0.275, rel=0.05)


def test_a_stage_that_goes_on_at_its_full_share_still_counts_its_usual_tail():
    """The network's share is full after its last tile, but it goes on (the blank background,
    then the CRF's lattice before its first iteration): the earlier run's seconds for the stage
    count, and so does the time since the last event."""
    timeline = [("inference", 0.0, 0.0), ("inference", 0.35, 10.0), ("inference", 0.7, 20.0),
                ("inference", 0.7, 30.0), ("crf", 0.7, 30.0), ("crf", 1.0, 40.0)]
    earlier = RemainingTime()
    for stage, fraction, time in timeline:
        earlier.observe(stage, fraction, time)
    estimate = RemainingTime(earlier.profile())
    for stage, fraction, time in timeline[:3]:
        estimate.observe(stage, fraction, time)
    assert estimate.seconds_left(now=25.0) == pytest.approx(40.0 - 25.0)


def test_the_profile_holds_each_stages_share_and_seconds_and_a_finished_run_has_none_left():
    estimate = RemainingTime()
    follow(estimate, until_s=TOTAL_S)
    profile = estimate.profile()
    assert [stage for stage, _share, _seconds in profile.stages] == [s for s, _, _ in RUN]
    for (_, share, seconds), (_, expected_share, expected_seconds) in zip(profile.stages, RUN):
        assert share == pytest.approx(expected_share) and seconds == pytest.approx(
            expected_seconds)
    assert estimate.seconds_left() == 0.0
    assert StageProfile().end_of("crf") is None


@pytest.mark.parametrize("seconds, said", [(0.3, "1 s"), (7.6, "8 s"), (42, "40 s"),
                                           (88, "90 s"), (200, "3 min")])
def test_the_time_left_is_said_in_steps_that_do_not_flicker(seconds, said):
    assert describe_seconds(seconds) == said
