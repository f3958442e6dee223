"""The door's protocol-free pieces (asrhub/door): keys, Host and Origin rules, the gate's caps,
the deadline timer. What each protocol does with them: tests/transports/test_door.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from asrhub.door import Deadline, Door, Gate, Hosts, Keys, is_loopback
from asrhub.door.hosts import host_name
from asrhub.errors import HubError
from asrhub.settings.schema import ServerSettings, Settings


def test_keys_identify_a_caller_by_a_fingerprint_and_refuse_the_rest() -> None:
    keys = Keys(("alpha", "beta"))
    assert keys.identify("alpha") != keys.identify("beta")
    assert keys.identify("alpha") == keys.identify("alpha") and "alpha" not in str(keys.identify("alpha"))
    for presented in (None, "", "alph", "alpha ", "gamma"):
        with pytest.raises(HubError) as refused:
            keys.identify(presented)
        assert refused.value.code == "unauthorized" and refused.value.fatal
    assert Keys().identify(None) is None and not Keys().required


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8080", "127.0.0.1"),
        ("LOCALHOST", "localhost"),
        ("localhost.:80", "localhost"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("hub.example.com:443", "hub.example.com"),
    ],
)
def test_host_names_lose_port_brackets_case_and_the_trailing_dot(header: str, name: str) -> None:
    assert host_name(header) == name


def test_a_loopback_hub_answers_only_to_loopback_names() -> None:
    hosts = Hosts.build(bind="127.0.0.1", allowed_hosts=(), allowed_origins=())
    for ok in ("127.0.0.1:8080", "localhost", "localhost:1234", "[::1]:80", None):
        assert hosts.host_allowed(ok), ok
    for bad in ("evil.example", "evil.example:8080", "127.0.0.1.nip.io", "localhost.evil.example", "0.0.0.0"):
        assert not hosts.host_allowed(bad), bad
    assert is_loopback("127.0.0.2") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_listed_hosts_and_subdomains_otherwise_any() -> None:
    listed = Hosts.build(
        bind="127.0.0.1", allowed_hosts=("hub.example.com", "*.example.org"), allowed_origins=()
    )
    assert listed.host_allowed("hub.example.com:443") and listed.host_allowed("a.b.example.org")
    assert not listed.host_allowed("localhost") and not listed.host_allowed("example.org.evil.com")
    assert Hosts.build(bind="0.0.0.0", allowed_hosts=(), allowed_origins=()).host_allowed("anything")
    assert Hosts.build(bind="127.0.0.1", allowed_hosts=("*",), allowed_origins=()).host_allowed("anything")


def test_origins_same_host_listed_or_star() -> None:
    hosts = Hosts.build(bind="127.0.0.1", allowed_hosts=(), allowed_origins=("https://app.example",))
    assert hosts.origin_allowed(None, "127.0.0.1:8080")
    assert hosts.origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert hosts.origin_allowed("https://APP.example/", "127.0.0.1:8080")
    assert not hosts.origin_allowed("http://evil.example", "127.0.0.1:8080")
    assert Hosts.build(bind="::1", allowed_hosts=(), allowed_origins=("*",)).origin_allowed("http://x", None)


def test_the_gate_counts_per_address_and_in_total_and_gives_back_once() -> None:
    gate = Gate(total=3, per_address=2)
    a1, a2 = gate.enter("10.0.0.1", "http"), gate.enter("10.0.0.1", "grpc")
    with pytest.raises(HubError) as per_address:
        gate.enter("10.0.0.1", "wyoming")
    assert per_address.value.code == "capacity" and "10.0.0.1" in per_address.value.message
    b = gate.enter("10.0.0.2", "http")
    with pytest.raises(HubError) as total:
        gate.enter(None, "http")
    assert "3 connections" in total.value.message and gate.refused == 2
    assert len(gate) == 3 and gate.at("10.0.0.1") == 2 and gate.kinds() == {"http": 2, "grpc": 1}
    a1.leave()
    a1.leave()  # idempotent
    assert len(gate) == 2 and gate.at("10.0.0.1") == 1
    for ticket in (a2, b):
        ticket.leave()
    assert len(gate) == 0 and gate.kinds() == {} and gate.at("10.0.0.1") == 0
    unlimited = Gate()
    tickets = [unlimited.enter("10.0.0.1", "http") for _ in range(1000)]
    assert len(unlimited) == 1000 and all(t.inside for t in tickets)


class FakeClock:
    """Virtual time for :class:`Deadline` (its loop's ``time`` and ``call_at``): ``advance``
    runs what falls due, in order — the deadline's logic, not the machine's load."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, Callable[[], None], FakeTimer]] = []
        self._seq = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer()
        self._seq += 1
        self._timers.append((when, self._seq, callback, timer))
        return timer

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            due = sorted((t for t in self._timers if t[0] <= end and not t[3].cancelled), key=lambda t: t[:2])
            if not due:
                break
            when, _seq, callback, _timer = due[0]
            self._timers.remove(due[0])
            self.now = max(self.now, when)
            callback()
        self.now = end


class FakeTimer:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def test_a_deadline_fires_once_unless_touched_held_or_disarmed() -> None:
    clock = FakeClock()
    fired: list[str] = []
    deadline = Deadline(clock)  # type: ignore[arg-type]
    deadline.arm(1.0, lambda: fired.append("plain"))
    clock.advance(0.99)
    assert fired == []
    clock.advance(0.02)
    assert fired == ["plain"] and not deadline.armed
    clock.advance(5)
    assert fired == ["plain"]  # once

    deadline.arm(1.0, lambda: fired.append("touched"))
    for _ in range(10):  # touched every 0.5 s for 5 s: never idle for 1 s
        clock.advance(0.5)
        deadline.touch()
    assert fired == ["plain"]
    clock.advance(1.0)
    assert fired == ["plain", "touched"]

    holding = [True]
    deadline.arm(1.0, lambda: fired.append("held"), hold=lambda: holding[0])
    clock.advance(10)
    assert fired[-1] == "touched"  # the hub was not reading: not the client's silence
    holding[0] = False
    clock.advance(1.0)
    assert fired[-1] == "held"

    deadline.arm(1.0, lambda: fired.append("disarmed"))
    deadline.disarm()
    clock.advance(5)
    assert fired[-1] == "held"


def test_the_door_from_settings() -> None:
    server = ServerSettings(api_keys=("k1, k2",), max_connections=10, max_connections_per_address=0)
    door = Door.from_settings(Settings(server=server))
    assert door.keys.keys == ("k1", "k2") and door.gate.total == 10 and door.gate.per_address == 0
    assert door.start_timeout_s == 10.0 and not door.hosts.host_allowed("evil.example")
