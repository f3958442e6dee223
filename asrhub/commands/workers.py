"""``asrhub serve --workers N``: N hub processes on one port, supervised by this one.

::

    supervisor ──spawn──▶ worker 1  (own event loop, sessions, models) ─┐
               ──spawn──▶ worker 2                                     ├─ one port, SO_REUSEPORT:
               ──spawn──▶ …                                            ┘  the kernel spreads
                                                                          new connections
    SIGTERM/SIGINT ─▶ supervisor ─SIGTERM─▶ every worker drains as a single process does
    a worker dies  ─▶ mark_process_dead(pid) (its gauges leave /metrics) ─▶ a new one starts

The supervisor loads nothing and serves nothing: it picks the port (a free one for port 0,
held with SO_REUSEPORT until the workers listen), binds one private loopback port per worker
(kept across restarts) where its siblings forward the requests that name its HTTP sessions or
Socket.io clients (:mod:`asrhub.transports.worker_routes`), makes ``PROMETHEUS_MULTIPROC_DIR`` (a fresh
temporary directory unless the environment names one, whose ``*.db`` files are then wiped), starts
the workers with the ``spawn`` method (no state shared by ``fork``), prints
``asrhub: listening on http://HOST:PORT`` once every worker listens, and exits 0 after a
graceful stop of all of them. A worker that exits before it is ready fails the start (exit 1).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import msgspec

from asrhub.settings.schema import Settings

RESTART_DELAY_S = 1.0
"""Pause before a worker that died is replaced (a crash loop costs at most one start a second)."""
KILL_AFTER_S = 15.0
"""After the drain grace: how long a worker may take to exit before it is killed."""


def worker_count(configured: int) -> int:
    return configured if configured > 0 else (os.cpu_count() or 1)


@dataclass
class _Worker:
    index: int
    process: BaseProcess


def _worker_main(
    settings: Settings, index: int, ready: Any, ports: tuple[int, ...], private: socket.socket
) -> None:
    """A worker process: the single-process server, announcing readiness to the supervisor."""
    from asrhub.commands import event_loop
    from asrhub.commands.server import serve
    from asrhub.logging import configure
    from asrhub.plugin import ProviderUnavailable

    configure(settings.log)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops us with SIGTERM
    _exit_with_parent()
    try:
        event_loop.run(
            serve(
                settings,
                gc_tuning=True,
                reuse_port=True,
                announce=False,
                on_ready=lambda: ready.put(index),
                multiprocess=True,
                worker=(index, ports),
                private=private,
            ),
            settings.server.loop,
        )
    except ProviderUnavailable as exc:
        print(f"asrhub: worker {index}: {exc}", flush=True)
        raise SystemExit(1) from None
    except OSError as exc:
        print(f"asrhub: worker {index}: cannot listen: {exc}", flush=True)
        raise SystemExit(1) from None
    except RuntimeError as exc:  # a gRPC/Wyoming listener that cannot (or may not) start
        print(f"asrhub: worker {index}: {exc}", flush=True)
        raise SystemExit(1) from None


def _reserve_port(host: str, port: int) -> socket.socket:
    """A bound, not listening SO_REUSEPORT socket: fixes the port (a free one for 0) that the
    workers then bind too; it takes no connections and is closed once they listen."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _private_socket() -> socket.socket:
    """A bound loopback socket on a free port (a worker listens on it; the supervisor keeps it,
    so a restarted worker gets the same port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
    except OSError:
        sock.close()
        raise
    return sock


def _exit_with_parent() -> None:
    """A worker whose supervisor vanished (SIGKILL) drains and exits instead of serving on."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="asrhub-parent-watch", daemon=True).start()


def _metrics_dir() -> tuple[Path, bool]:
    named = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if named:
        path = Path(named)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # a previous run's numbers must not be summed in
            stale.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="asrhub-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path, True


def run_workers(settings: Settings) -> int:
    from prometheus_client import multiprocess

    count = worker_count(settings.server.workers)
    server = settings.server
    if not settings.cluster.redis_url:
        print(
            f"asrhub: warning: {count} workers without cluster.redis_url: limits are per worker and a "
            "session resumes only if the reconnect reaches its worker (docs/cluster.md)",
            file=sys.stderr,
            flush=True,
        )
    placeholders = [_reserve_port(server.host, server.port)]
    port = placeholders[0].getsockname()[1]
    private = [_private_socket() for _ in range(count)]
    ports = tuple(sock.getsockname()[1] for sock in private)
    settings = msgspec.structs.replace(settings, server=msgspec.structs.replace(server, port=port, workers=1))
    metrics_dir, own_dir = _metrics_dir()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    stop = threading.Event()

    def on_signal(_sig: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def start(index: int) -> _Worker:
        process = ctx.Process(
            target=_worker_main,
            args=(settings, index, ready, ports, private[index]),
            name=f"asrhub-worker-{index}",
        )
        process.start()
        return _Worker(index, process)

    workers = [start(i) for i in range(count)]
    try:
        if not _wait_ready(workers, ready, stop, count):
            print("asrhub: a worker failed to start", flush=True)
            _stop_all(workers, grace_s=0.0)
            return 1
        for sock in placeholders:
            sock.close()
        placeholders = []
        print(f"asrhub: {count} workers", flush=True)
        print(f"asrhub: listening on http://{server.host}:{port}", flush=True)
        for scheme, other in (("grpc", server.grpc_port), ("tcp", server.wyoming_port)):
            if other:  # gRPC / Wyoming listeners: every worker shares these ports too
                print(f"asrhub: listening on {scheme}://{server.host}:{other}", flush=True)
        while not stop.is_set():
            wait([w.process.sentinel for w in workers], timeout=0.5)
            for i, worker in enumerate(workers):
                if worker.process.is_alive() or stop.is_set():
                    continue
                pid, code = worker.process.pid, worker.process.exitcode
                print(f"asrhub: worker {worker.index} (pid {pid}) exited with {code}: restarting", flush=True)
                if pid is not None:
                    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
                time.sleep(RESTART_DELAY_S)
                workers[i] = start(worker.index)
        print("asrhub: shutting down", flush=True)
        _stop_all(workers, grace_s=server.drain_notice_s + server.shutdown_grace_s + KILL_AFTER_S)
        return 0
    finally:
        for sock in [*placeholders, *private]:
            sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        ready.close()
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _wait_ready(workers: list[_Worker], ready: Any, stop: threading.Event, count: int) -> bool:
    seen: set[int] = set()
    while len(seen) < count:
        if stop.is_set():
            return False
        with contextlib.suppress(Exception):
            seen.add(ready.get(timeout=0.2))
            continue
        if any(not w.process.is_alive() for w in workers):
            return False
    return True


def _stop_all(workers: list[_Worker], *, grace_s: float) -> None:
    from prometheus_client import multiprocess

    for worker in workers:
        if worker.process.is_alive() and worker.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        if worker.process.pid is not None:
            multiprocess.mark_process_dead(worker.process.pid)  # type: ignore[no-untyped-call]
