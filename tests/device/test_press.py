"""Presses, bounces and gestures, with exact times (no sleeping)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from device.press import Gesture, PressConfig, PressDetector


def run(detector: PressDetector, edges: list[tuple[float, bool]], until: float) -> int:
    """Feed edges in time order, ticking every millisecond; count alarms."""
    alarms = 0
    t = 0.0
    pending = sorted(edges)
    while t <= until:
        while pending and pending[0][0] <= t:
            at, level = pending.pop(0)
            alarms += detector.edge(level, at)
        alarms += detector.tick(t)
        t = round(t + 0.001, 6)
    return alarms


def test_single_press_alarms_on_the_first_edge() -> None:
    d = PressDetector(PressConfig())
    assert d.edge(True, 10.0) == 1
    assert d.edge(False, 10.2) == 0
    assert d.pressed is False


def test_bounce_storm_of_a_hundred_edges_in_50ms_is_one_press() -> None:
    d = PressDetector(PressConfig())
    # 100 edges in 50 ms, ending released: contact chatter on press and release.
    edges = [(1.0 + i * 0.0005, i % 2 == 0) for i in range(100)]
    assert run(d, edges, until=2.0) == 1
    assert d.pressed is False
    assert d.edges == 100


def test_storm_ending_pressed_settles_pressed() -> None:
    d = PressDetector(PressConfig())
    edges = [(1.0 + i * 0.0005, i % 2 == 0) for i in range(99)]  # last edge presses
    assert run(d, edges, until=2.0) == 1
    assert d.pressed is True


@given(st.lists(st.floats(min_value=0.0, max_value=0.049), min_size=1, max_size=200))
def test_any_chatter_within_the_window_is_one_alarm(offsets: list[float]) -> None:
    d = PressDetector(PressConfig())
    edges = [(1.0, True)] + [(1.0 + o, i % 2 == 1) for i, o in enumerate(sorted(offsets))]
    assert run(d, edges, until=1.2) == 1


def test_two_separate_presses_are_two_alarms() -> None:
    d = PressDetector(PressConfig())
    assert run(d, [(1.0, True), (1.1, False), (1.5, True), (1.6, False)], until=2.0) == 2


def test_double_gesture_needs_two_presses_within_the_window() -> None:
    d = PressDetector(PressConfig(gesture=Gesture.DOUBLE, double_window=1.5))
    assert run(d, [(1.0, True), (1.1, False)], until=3.0) == 0  # one press: nothing
    assert run(d, [(3.5, True), (3.6, False), (4.2, True), (4.3, False)], until=5.0) == 1


def test_double_gesture_ignores_presses_too_far_apart() -> None:
    d = PressDetector(PressConfig(gesture=Gesture.DOUBLE, double_window=1.5))
    assert run(d, [(1.0, True), (1.1, False), (3.0, True), (3.1, False)], until=4.0) == 0


def test_hold_gesture_alarms_once_after_the_hold_time() -> None:
    d = PressDetector(PressConfig(gesture=Gesture.HOLD, hold=2.0))
    assert run(d, [(1.0, True), (1.5, False)], until=4.0) == 0  # too short
    d = PressDetector(PressConfig(gesture=Gesture.HOLD, hold=2.0))
    assert run(d, [(1.0, True), (5.0, False)], until=6.0) == 1  # held 4 s: one alarm
    assert d.next_deadline() is None


def test_hold_survives_bounces_while_held() -> None:
    d = PressDetector(PressConfig(gesture=Gesture.HOLD, hold=2.0))
    chatter = [(1.0 + i * 0.001, i % 2 == 0) for i in range(21)]  # ends pressed at 1.02
    assert run(d, [*chatter, (4.0, False)], until=5.0) == 1
