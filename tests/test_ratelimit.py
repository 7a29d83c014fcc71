"""TokenBucket (memnet/net/ratelimit.py) driven by an explicit clock: no sleeping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memnet.net.ratelimit import TokenBucket


def test_burst_is_available_at_once_then_refused():
    bucket = TokenBucket(rate=2, burst=5, now=100.0)
    assert [bucket.try_take(1, 100.0) for _ in range(6)] == [True] * 5 + [False]
    assert not bucket.try_take(1, 100.0)


def test_refill_at_rate():
    bucket = TokenBucket(rate=2, burst=5, now=0.0)
    assert bucket.try_take(5, 0.0)
    assert not bucket.try_take(1, 0.4)   # 0.8 tokens so far
    assert bucket.try_take(1, 0.5)       # 1.0 token
    assert not bucket.try_take(1, 0.5)
    assert bucket.try_take(2, 1.5)       # 2 more in the next second
    assert not bucket.try_take(0.5, 1.5)


def test_refill_is_capped_at_burst():
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert bucket.try_take(3, 0.0)
    # an hour idle saves up no more than the burst
    assert bucket.try_take(3, 3600.0)
    assert not bucket.try_take(1, 3600.0)


def test_a_refused_take_takes_nothing():
    bucket = TokenBucket(rate=1, burst=4, now=0.0)
    assert not bucket.try_take(5, 0.0)   # more than the burst: never possible, takes nothing
    assert bucket.try_take(4, 0.0)


def test_clock_going_backwards_adds_nothing():
    bucket = TokenBucket(rate=1, burst=2, now=10.0)
    assert bucket.try_take(2, 10.0)
    assert not bucket.try_take(1, 5.0)
    assert not bucket.try_take(1, 10.5)  # the earlier call did not move the clock back
    assert bucket.try_take(1, 11.0)


def test_reserve_within_burst_needs_no_wait():
    bucket = TokenBucket(rate=100, burst=1000, now=0.0)
    assert bucket.reserve(400, 0.0) == 0.0
    assert bucket.reserve(600, 0.0) == 0.0
    assert bucket.reserve(50, 0.0) == pytest.approx(0.5)   # 50 bytes of debt at 100/s
    assert bucket.reserve(50, 0.0) == pytest.approx(1.0)   # debt accumulates
    assert bucket.reserve(10, 2.0) == 0.0                  # 2 s repaid the debt and saved 100
    assert bucket.reserve(100, 2.0) == pytest.approx(0.1)  # 90 left: 10 bytes short


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(1, 1e7), burst=st.floats(0, 1e6),
       pieces=st.lists(st.floats(1, 1e6), min_size=1, max_size=40))
def test_pacing_delays_add_up_to_amount_over_rate(rate, burst, pieces):
    """A sender that sleeps each returned delay before sending ends at (total - burst) / rate
    (or at once, if it all fits in the burst): the average rate is the configured one."""
    bucket = TokenBucket(rate, burst, now=0.0)
    clock = 0.0
    for piece in pieces:
        delay = bucket.reserve(piece, clock)
        assert delay >= 0.0
        clock += delay
    expected = max(0.0, (sum(pieces) - burst) / rate)
    assert clock == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_pacing_without_burst_is_exactly_amount_over_rate():
    bucket = TokenBucket(rate=1000, burst=0, now=5.0)
    clock, delays = 5.0, []
    for _ in range(10):
        delays.append(bucket.reserve(250, clock))
        clock += delays[-1]
    assert delays == [pytest.approx(0.25)] * 10
    assert clock - 5.0 == pytest.approx(10 * 250 / 1000)


def test_concurrent_reservations_queue_behind_each_other():
    """Two senders reserving at the same instant: the second waits for the first's bytes too."""
    bucket = TokenBucket(rate=100, burst=0, now=0.0)
    assert bucket.reserve(100, 0.0) == pytest.approx(1.0)
    assert bucket.reserve(100, 0.0) == pytest.approx(2.0)
    assert bucket.reserve(100, 1.0) == pytest.approx(2.0)  # 300 reserved, 100 repaid


def test_rate_zero_is_unlimited():
    bucket = TokenBucket(rate=0, burst=0, now=0.0)
    assert all(bucket.try_take(1e12, 0.0) for _ in range(100))
    assert all(bucket.reserve(1e12, 0.0) == 0.0 for _ in range(100))
    assert TokenBucket(rate=0.0, burst=10, now=0.0).try_take(1e9, 0.0)
