"""asrhub.flow's Stage / Link / Inlet: the per-frame links keep reactivex's grammar.

Each case runs the same subscribe function under ``reactivex.Observable`` (the reference) and
under ``Stage``, and compares what the subscriber saw."""

from __future__ import annotations

from typing import Any

import pytest
import reactivex
from reactivex import Observable
from reactivex import operators as ops
from reactivex.disposable import Disposable
from reactivex.testing import ReactiveTest, TestScheduler

from asrhub.flow import Inlet, Stage


def _passthrough(make: type[Observable[Any]]) -> Any:
    def operator(source: Observable[Any]) -> Observable[Any]:
        def subscribe(observer: Any, scheduler: Any = None) -> Any:
            return source.subscribe(observer.on_next, observer.on_error, observer.on_completed)

        return make(subscribe)

    return operator


def _misbehaving(observer: Any, _scheduler: Any = None) -> Any:
    """Breaks the grammar on purpose: items after completion, then after an error."""
    observer.on_next(1)
    observer.on_completed()
    observer.on_next(2)
    observer.on_error(RuntimeError("late"))
    observer.on_completed()
    return Disposable()


def _times_ten(v: int) -> int:
    return v * 10


def _plus_one(v: int) -> int:
    return v + 1


def _seen(source: Observable[Any]) -> list[Any]:
    seen: list[Any] = []
    source.subscribe(seen.append, lambda e: seen.append(("error", str(e))), lambda: seen.append("done"))
    return seen


@pytest.mark.parametrize("make", [Observable, Stage])
def test_nothing_after_completion(make: type[Observable[Any]]) -> None:
    assert _seen(make(_misbehaving)) == [1, "done"]


def test_stage_matches_observable_on_the_misbehaving_source() -> None:
    assert _seen(Stage(_misbehaving)) == _seen(Observable(_misbehaving))


@pytest.mark.parametrize("make", [Observable, Stage])
def test_a_failing_subscribe_becomes_on_error(make: type[Observable[Any]]) -> None:
    def subscribe(_observer: Any, _scheduler: Any = None) -> Any:
        raise ValueError("bad")

    assert _seen(make(subscribe)) == [("error", "bad")]


@pytest.mark.parametrize("make", [Observable, Stage])
def test_dispose_stops_items_and_reaches_upstream(make: type[Observable[Any]]) -> None:
    held: list[Any] = []
    disposed: list[bool] = []

    def subscribe(observer: Any, _scheduler: Any = None) -> Any:
        held.append(observer)
        return Disposable(lambda: disposed.append(True))

    seen: list[Any] = []
    sub = make(subscribe).subscribe(seen.append)
    held[0].on_next("a")
    sub.dispose()
    held[0].on_next("b")
    held[0].on_completed()
    assert seen == ["a"] and disposed == [True]


@pytest.mark.parametrize("make", [Observable, Stage])
def test_completion_during_subscribe_disposes_the_upstream_at_once(make: type[Observable[Any]]) -> None:
    disposed: list[bool] = []

    def subscribe(observer: Any, _scheduler: Any = None) -> Any:
        observer.on_completed()
        return Disposable(lambda: disposed.append(True))

    assert _seen(make(subscribe)) == ["done"] and disposed == [True]


@pytest.mark.parametrize("make", [Observable, Stage])
def test_marbles_through_a_chain(make: type[Observable[Any]]) -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(
        ReactiveTest.on_next(210, 1),
        ReactiveTest.on_next(220, 2),
        ReactiveTest.on_completed(230),
        ReactiveTest.on_next(240, 3),
    )
    chain = reactivex.compose(_passthrough(make), ops.map(_times_ten), _passthrough(make))
    got = scheduler.start(lambda: xs.pipe(chain))
    assert got.messages == [
        ReactiveTest.on_next(210, 10),
        ReactiveTest.on_next(220, 20),
        ReactiveTest.on_completed(230),
    ]
    assert xs.subscriptions == [ReactiveTest.subscribe(200, 230)]


def test_inlet_feeds_its_one_subscriber_until_it_ends() -> None:
    inlet = Inlet()
    seen = _seen(inlet.pipe(_passthrough(Stage), ops.map(_plus_one)))
    inlet.on_next(1)
    inlet.on_completed()
    inlet.on_next(2)  # after the end: nowhere to go, no error
    assert seen == [2, "done"]
    with pytest.raises(RuntimeError, match="one subscriber"):
        inlet.subscribe(print)


def test_inlet_goes_quiet_once_its_subscriber_disposes() -> None:
    inlet = Inlet()
    seen: list[Any] = []
    sub = inlet.pipe(_passthrough(Stage)).subscribe(seen.append)
    inlet.on_next("a")
    sub.dispose()
    inlet.on_next("b")
    inlet.on_error(RuntimeError("ignored once disposed"))
    assert seen == ["a"]
