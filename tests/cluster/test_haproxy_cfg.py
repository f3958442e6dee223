"""``deploy/haproxy.cfg`` used as shipped, never edited, for any number of nodes (issue 29):
only the documented variables (``ASRHUB_LB_BIND``, ``ASRHUB_NODE1..N``) change.

* ``haproxy -c`` accepts it with 1, 2, 5 and 16 nodes, and a started haproxy has exactly those
  servers (``hub1..hubN``, from its stats CSV). The file before this fix failed ``haproxy -c``
  with two nodes: its third ``server`` line had an empty address.
* With no node, with ``ASRHUB_NODE17`` (more than the file takes) and without
  ``ASRHUB_LB_BIND`` it refuses to start, and its message says which variable to set.
* Live with two real ``asrhub serve`` nodes (VAD only: nothing to load, they start in a second
  or two): both are up in haproxy's health checks, the ``ASRHUB_NODE`` cookie reaches each
  node, and a WebSocket session through the balancer streams real speech.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator

import aiohttp
import pytest

from tests.audio_utils import fixture, load_wav, pcm16_bytes

from .conftest import HAPROXY_CFG, HAProxy, Node, free_port, start_nodes, until, wait_for

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def lb_env(addresses: list[str], **extra: str) -> dict[str, str]:
    """The documented variables for these node addresses, and nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASRHUB_")}
    env["ASRHUB_LB_BIND"] = f"127.0.0.1:{free_port()}"
    env["ASRHUB_LB_STATS"] = f"127.0.0.1:{free_port()}"
    for i, address in enumerate(addresses, 1):
        env[f"ASRHUB_NODE{i}"] = address
    env.update(extra)
    return env


def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HAPROXY, "-c", "-f", str(HAPROXY_CFG)], env=env, capture_output=True, text=True, timeout=30
    )


def addresses(n: int) -> list[str]:
    return [f"127.0.0.1:{free_port()}" for _ in range(n)]


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_the_shipped_file_takes_n_nodes_without_editing(n: int) -> None:
    env = lb_env(addresses(n))
    result = check(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr

    # Started, it has exactly these servers (nodes that do not listen: they are simply down).
    lb = subprocess.Popen([HAPROXY, "-db", "-f", str(HAPROXY_CFG)], env=env, stdout=subprocess.DEVNULL)
    try:
        stats = int(env["ASRHUB_LB_STATS"].rsplit(":", 1)[1])
        servers: list[str] = []

        def listed() -> bool:
            import urllib.error
            import urllib.request

            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{stats}/stats;csv", timeout=2) as r:
                    rows = r.read().decode().splitlines()
            except (urllib.error.URLError, OSError):
                assert lb.poll() is None, "haproxy exited"
                return False
            header = rows[0].lstrip("# ").split(",")
            servers[:] = [
                cols["svname"]
                for cols in (dict(zip(header, row.split(","), strict=False)) for row in rows[1:])
                if cols.get("pxname") == "hubs" and cols.get("svname") not in ("FRONTEND", "BACKEND")
            ]
            return True

        wait_for(listed, 20, "haproxy's stats page")
        assert servers == [f"hub{i}" for i in range(1, n + 1)]
    finally:
        lb.terminate()
        lb.wait(10)


def test_an_empty_variable_is_left_out_like_an_unset_one() -> None:
    """``ASRHUB_NODE3=`` (compose's ``${VAR:-}`` gives that) is no third server, not an error."""
    result = check(lb_env(addresses(2), ASRHUB_NODE3=""))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("what", "env", "message"),
    [
        ("no node", lb_env([]), "no node: set ASRHUB_NODE1"),
        ("17 nodes", lb_env(addresses(17)), "ASRHUB_NODE17 is set, but this file takes at most 16 nodes"),
        ("no bind", lb_env(addresses(2), ASRHUB_LB_BIND=""), "ASRHUB_LB_BIND is not set"),
    ],
)
def test_a_configuration_that_cannot_work_is_refused_with_its_reason(
    what: str, env: dict[str, str], message: str
) -> None:
    result = check(env)
    assert result.returncode != 0, what
    assert message in result.stderr, result.stderr


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[tuple[list[Node], HAProxy]]:
    nodes = [Node(f"lb{i}", {}, ("--default-provider", "none", "--log-level", "warning")) for i in (1, 2)]
    lb = HAProxy(nodes)  # sets ASRHUB_NODE1 and ASRHUB_NODE2 only
    try:
        start_nodes(nodes)
        lb.start()
        yield nodes, lb
    finally:
        lb.stop()
        for node in nodes:
            node.close()


async def test_live_with_two_nodes_both_serve_through_the_balancer(
    two_nodes: tuple[list[Node], HAProxy],
) -> None:
    nodes, lb = two_nodes
    loop = asyncio.get_running_loop()

    async def both_up() -> bool:
        states = await loop.run_in_executor(None, lb.servers_up)
        return states == {"hub1": True, "hub2": True}

    await until(both_up, 30, "haproxy to see exactly hub1 and hub2 up")

    async with aiohttp.ClientSession() as http:
        # The cookie haproxy sets names the node; a request that carries it reaches that node.
        for name, node in zip(("hub1", "hub2"), nodes, strict=True):
            assert node.proc is not None
            async with http.get(f"{lb.url}/healthz", cookies={"ASRHUB_NODE": name}) as r:
                assert r.status == 200
                assert (await r.json())["pid"] == node.proc.pid

        samples, _rate = load_wav(fixture("quick_fox.wav"))
        async with http.ws_connect(f"{lb.url.replace('http', 'ws', 1)}/v1/stream") as ws:
            await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
            await ws.send_bytes(pcm16_bytes(samples))
            await ws.send_str(json.dumps({"type": "session.end"}))
            kinds = [json.loads(m.data)["type"] async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
    assert kinds[0] == "session.started"
    assert "vad.speech_started" in kinds and "vad.speech_ended" in kinds
    assert kinds[-1] == "session.closed"
