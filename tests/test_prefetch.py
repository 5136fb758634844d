"""The prefetching iterator of the streamed pass: order, errors in place, early stop."""

import threading
import time

import pytest

from hyperbayes.models.prefetch import prefetched


def test_items_arrive_in_order_and_complete():
    assert list(prefetched(iter(range(1000)), depth=3)) == list(range(1000))


def test_a_producer_error_arrives_after_the_items_before_it():
    def items():
        yield from range(5)
        raise ValueError("row 73,112,905: NaN")

    got = []
    with pytest.raises(ValueError, match="73,112,905"):
        for x in prefetched(items()):
            got.append(x)
    assert got == list(range(5))


def test_the_producer_runs_ahead_by_at_most_depth():
    produced = []

    def items():
        for i in range(100):
            produced.append(i)
            yield i

    it = prefetched(items(), depth=2)
    assert next(it) == 0
    time.sleep(0.3)
    # taken 1, queued <= 2, and one more may be waiting to be put
    assert len(produced) <= 1 + 2 + 1
    it.close()


def test_stopping_early_ends_the_thread():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    it = prefetched(endless(), depth=2)
    for x in it:
        if x == 10:
            break
    it.close()
    deadline = time.monotonic() + 2
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threading.active_count() == before


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        next(prefetched([1], depth=0))
