"""batch: bounded by count and by a window from the first item, keys, dropped callers, order."""

from __future__ import annotations

from typing import Any

from reactivex import operators as ops
from reactivex.testing.marbles import marbles_testing

from asrhub.operators.batch import batch


def marbles(op: Any, source: str, lookup: dict[str | float, Any] | None = None) -> list[Any]:
    with marbles_testing(timespan=1) as (start, cold, _hot, _exp):
        return start(lambda: cold(source, lookup).pipe(op, ops.map(lambda b: "".join(b))))


def expected(marble: str, lookup: dict[str | float, Any] | None = None) -> list[Any]:
    with marbles_testing(timespan=1) as (_start, _cold, _hot, exp):
        return exp(marble, lookup)


def test_count_bound_closes_a_batch_at_once() -> None:
    got = marbles(batch(3, 100), "-a-b-c-d-e-f-|")
    assert got == expected("-----x-----y-|", {"x": "abc", "y": "def"})


def test_window_opens_with_the_first_item_and_closes_after_window() -> None:
    # window of 4 ticks: a at 1 closes at 5 (b joins); c at 9 closes at 13 alone
    got = marbles(batch(8, 4), "-a-b-----c-------|")
    assert got == expected("-----x-------y---|", {"x": "ab", "y": "c"})


def test_both_bounds_and_no_empty_batches() -> None:
    got = marbles(batch(3, 3), "-(a,b,c,d)---e-|")  # four at once at tick 1, e at 13
    assert got == expected("-x--y" + "-" * 10 + "(z,|)", {"x": "abc", "y": "d", "z": "e"})


def test_completion_flushes_open_batches_in_order() -> None:
    got = marbles(batch(8, 100, key=str.isupper), "-a-B-c-|")
    assert got == expected("-------(x,y,|)", {"x": "ac", "y": "B"})


def test_keys_never_share_a_batch_and_have_their_own_windows() -> None:
    # lower case = finals, upper case = partials; each key's window starts with its own first item
    got = marbles(batch(2, 4, key=str.isupper), "-a-B-b-C-c-|")
    assert got == expected("-----x-y---(z,|)", {"x": "ab", "y": "BC", "z": "c"})


def test_items_whose_caller_left_are_dropped_without_touching_the_others() -> None:
    gone = {"b", "x"}
    got = marbles(batch(3, 4, live=lambda i: i not in gone), "-a-b-c-----x---|")
    assert got == expected("-----z---------|", {"z": "ac"})


def test_order_inside_and_across_batches_is_arrival_order() -> None:
    got = marbles(batch(2, 10), "-a-b-c-d-e-f-g-|")
    assert got == expected("---x---y---z---(w,|)", {"x": "ab", "y": "cd", "z": "ef", "w": "g"})


def test_error_drops_open_batches_and_is_passed_on() -> None:
    got = marbles(batch(3, 5), "-a-b-#")
    assert got == expected("-----#")


def test_one_failing_request_does_not_fail_the_others() -> None:
    """A batch handed to an engine that fails one item: every other item still gets its result."""

    def engine(items: list[str]) -> list[str]:
        return [f"error:{i}" if i == "b" else i.upper() for i in items]

    with marbles_testing(timespan=1) as (start, cold, _hot, exp):
        got = start(lambda: cold("-a-b-c--|").pipe(batch(3, 10), ops.map(engine), ops.map(",".join)))
        assert got == exp("-----x--|", {"x": "A,error:b,C"})


def test_window_zero_or_count_one_passes_items_straight_through() -> None:
    assert marbles(batch(1, 5), "-a-b-|") == expected("-a-b-|", {"a": "a", "b": "b"})
    assert marbles(batch(4, 0), "-a-b-|") == expected("-a-b-|", {"a": "a", "b": "b"})
