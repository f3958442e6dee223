"""Shared pieces of the benchmarks: the machine, the audio, server subprocesses, sampling, tables.

The benchmarks print numbers; nothing here asserts a speed. Servers (the hub, the bare baseline)
and the load generator each run in their own process, so the process under measurement never
shares its event loop or its CPU accounting with the client that loads it.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[2]
PERF = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import audio_utils as au  # noqa: E402

RATE = 16_000
SCALE_FIXTURE = "quick_fox.wav"
SPEECH_FIXTURES = ("quick_fox.wav", "weather_question.wav", "address_time.wav", "reminder.wav", "science.wav")


# --- the machine ------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": cpu,
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


# --- audio ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamAudio:
    """PCM16 bytes a client streams, and where each utterance truly is in them (stream seconds)."""

    pcm: bytes
    utterances: tuple[tuple[float, float], ...]
    duration_s: float
    speech_s: float
    """Total duration of the fixture clips in the stream (what a direct engine call would get)."""
    texts: tuple[str, ...]

    @property
    def speech_end_s(self) -> float:
        return self.utterances[-1][1]


def stream_audio(
    fixture: str = SCALE_FIXTURE, lead_s: float = 1.0, tail_s: float = 1.2, seed: int = 0, gap_s: float = 0.6
) -> StreamAudio:
    """``lead_s`` of room tone, the fixture utterance(s), ``tail_s`` of room tone.

    ``fixture`` may be a comma-separated list or ``all`` (the English utterances), joined by
    ``gap_s`` of room tone. Room tone is at -70 dBFS: at -60, webrtcvad's cold noise estimate
    flags the first frames of a stream as speech.
    """
    names = SPEECH_FIXTURES if fixture == "all" else tuple(fixture.split(","))
    parts = [au.room_noise(lead_s, seed=seed, level_db=-70.0)]
    utterances: list[tuple[float, float]] = []
    texts: list[str] = []
    t = lead_s
    speech = 0.0
    for i, name in enumerate(names):
        if i:
            parts.append(au.room_noise(gap_s, seed=seed + 2 + i, level_db=-70.0))
            t += gap_s
        clip, rate = au.load_wav(au.fixture(name))
        assert rate == RATE, f"{name}: {rate} Hz"
        entry = au.fixture_entry(name)
        segs = entry["segments"]
        utterances.append((t + float(segs[0]["start"]), t + float(segs[-1]["end"])))
        texts.append(str(entry["text"]))
        parts.append(clip)
        t += len(clip) / RATE
        speech += len(clip) / RATE
    parts.append(au.room_noise(tail_s, seed=seed + 1, level_db=-70.0))
    x = np.concatenate(parts)
    return StreamAudio(
        pcm=au.pcm16_bytes(x),
        utterances=tuple(utterances),
        duration_s=len(x) / RATE,
        speech_s=speech,
        texts=tuple(texts),
    )


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} after {timeout} s")


def hub_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASRHUB_")}
    env.update(
        {
            "ASRHUB_LIMITS__MAX_SESSIONS": "20000",
            "ASRHUB_LIMITS__MAX_SESSIONS_PER_KEY": "20000",
            # the load generator is one client address opening thousands of connections
            "ASRHUB_SERVER__MAX_CONNECTIONS": "0",
            "ASRHUB_SERVER__MAX_CONNECTIONS_PER_ADDRESS": "0",
            "ASRHUB_LOG_LEVEL": "warning",
            "ASRHUB_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


class ListeningProcess:
    """A server subprocess listening on 127.0.0.1:``port``: ``with`` it waits until the port
    answers (up to 180 s, a model loads first) and stops it on leaving (``stop_signal``, then a
    kill after 15 s); its output goes to ``log_path``."""

    stop_signal = signal.SIGINT
    port: int
    log_path: Path

    def _start(self, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.proc.pid)

    def __enter__(self) -> Self:
        try:
            wait_port(self.port, self.proc, timeout=180.0)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Server(ListeningProcess):
    """A server subprocess (the hub or the bare baseline) listening on 127.0.0.1:port."""

    def __init__(self, kind: str, *, provider: str = "none", env: dict[str, str] | None = None) -> None:
        self.kind = kind
        self.port = free_port()
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"asrhub-bench-{kind}-{self.port}.log"
        if kind == "hub":
            cmd = [sys.executable, "-m", "asrhub", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
            environ = hub_env({"ASRHUB_DEFAULT_PROVIDER": provider, **(env or {})})
        elif kind == "bare":
            cmd = [sys.executable, str(PERF / "bare_vad_server.py"), "--port", str(self.port)]
            environ = hub_env(env)
        else:
            raise ValueError(kind)
        self._start(cmd, environ, cwd=ROOT)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Sampler:
    """Samples a process's CPU time and RSS every ``interval`` seconds on a thread; with
    ``tree``, the sums over the process and all its children (a supervisor and its workers)."""

    def __init__(self, proc: psutil.Process, interval: float = 0.2, *, tree: bool = False) -> None:
        self.proc = proc
        self.interval = interval
        self.tree = tree
        self.samples: list[tuple[float, float, int]] = []
        self.system: list[tuple[float, float]] = []
        """(time, busy CPU seconds of the whole machine): to see what else was running."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                cpu, rss = self._read()
                now = time.monotonic()
                self.samples.append((now, cpu, rss))
                m = psutil.cpu_times()
                self.system.append(
                    (now, m.user + m.nice + m.system + m.irq + m.softirq + getattr(m, "steal", 0.0))
                )
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def _read(self) -> tuple[float, int]:
        """(CPU seconds, RSS bytes) of the process, or of its whole tree; psutil.Error if the
        process itself is gone (a child that exits meanwhile just stops counting)."""
        if not self.tree:
            t = self.proc.cpu_times()
            return t.user + t.system, self.proc.memory_info().rss
        cpu, rss = 0.0, 0
        for i, p in enumerate([self.proc, *self.proc.children(recursive=True)]):
            try:
                t = p.cpu_times()
                cpu += t.user + t.system
                rss += p.memory_info().rss
            except psutil.Error:
                if i == 0:
                    raise
        return cpu, rss

    def peak_rss(self) -> int:
        """The largest RSS sampled so far (0 before the first sample)."""
        return max((s[2] for s in self.samples), default=0)

    def machine_busy(self, start: float, end: float) -> float:
        """Busy CPU % of the whole machine over [start, end] (every process; 2 cores = 200)."""
        inside = [s for s in self.system if start <= s[0] <= end] or self.system[-2:]
        if len(inside) < 2:
            return float("nan")
        return 100.0 * (inside[-1][1] - inside[0][1]) / max(inside[-1][0] - inside[0][0], 1e-9)

    def window(self, start: float, end: float) -> tuple[float, int]:
        """(CPU % over [start, end], max RSS in it); CPU % of one core, so 2 cores can read 200."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            inside = self.samples[-2:]
        if len(inside) < 2:
            return float("nan"), 0
        (t0, c0, _), (t1, c1, _) = inside[0], inside[-1]
        return 100.0 * (c1 - c0) / max(t1 - t0, 1e-9), max(s[2] for s in inside)


def run_loadgen(args: Sequence[str], timeout: float = 600.0) -> dict[str, Any]:
    """Run tests/perf/loadgen.py in its own process; returns its JSON summary (which includes the
    load generator's own CPU seconds, ``cpu_s``: a saturated client shows as late frames)."""
    cmd = [sys.executable, str(PERF / "loadgen.py"), *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"loadgen failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


# --- tables -----------------------------------------------------------------------------------


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows, "notes": self.notes}


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def print_tables(tables: Sequence[Table]) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console(width=None if sys.stdout.isatty() else 220)
    for t in tables:
        rt = RichTable(title=t.title, title_justify="left")
        for c in t.columns:
            rt.add_column(c, justify="right" if c != t.columns[0] else "left")
        for row in t.rows:
            rt.add_row(*(fmt(v) for v in row))
        console.print(rt)
        for note in t.notes:
            console.print(f"  [dim]{note}[/dim]")
        console.print()


def markdown(tables: Sequence[Table]) -> str:
    out: list[str] = []
    for t in tables:
        out.append(f"#### {t.title}\n")
        out.append("| " + " | ".join(t.columns) + " |")
        out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(t.columns))) + "|")
        for row in t.rows:
            out.append("| " + " | ".join(fmt(v) for v in row) + " |")
        out.append("")
        for note in t.notes:
            out.append(f"- {note}")
        out.append("")
    return "\n".join(out)


def report(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], data: Any, json_path: Path | None = None
) -> None:
    """A benchmark's closing output: its rows as a markdown table on stdout (cells as given,
    numbers through :func:`fmt`; the first column left-aligned) and, with ``json_path``, its raw
    results (``data``) written there as JSON."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|")
    for row in rows:
        print("| " + " | ".join(fmt(v) for v in row) + " |")
    if json_path is not None:
        json_path.write_text(json.dumps(data, indent=1))


def latency_table(title: str, key: str, names: Sequence[str], rows: list[dict[str, Any]], note: str) -> Table:
    """One row per ``names`` entry of end-of-speech → final latencies, from ``rows`` of
    ``{key: name, "latency_ms": …, "wer": …, "load1": …}``: n, median, p90, max, mean WER, load."""
    table = Table(title, [key, "n", "median ms", "p90 ms", "max ms", "mean WER", "load avg (1 min)"])
    for name in names:
        mine = [r for r in rows if r[key] == name]
        lat = [r["latency_ms"] for r in mine]
        table.rows.append(
            [
                name,
                len(mine),
                percentile(lat, 50),
                percentile(lat, 90),
                max(lat),
                sum(r["wer"] for r in mine) / len(mine),
                sum(r["load1"] for r in mine) / len(mine),
            ]
        )
    table.notes.append(note)
    return table
