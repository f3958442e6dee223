"""``asrhub serve`` as a subprocess of a test: started on 127.0.0.1 from the repository root,
its logs (stderr) in a file, and a reader of its stdout that says when it listens."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
LISTENING = "asrhub: listening on"


def spawn_serve(
    port: int, args: Sequence[str], env: Mapping[str, str], logs: IO[str], lines: list[str] | None = None
) -> tuple[subprocess.Popen[str], threading.Event, threading.Thread]:
    """``asrhub serve --host 127.0.0.1 --port PORT *args`` with ``env`` as its whole environment
    and its stderr in ``logs``. Returns the process, an event set once it says it listens, and
    the daemon thread that reads its stdout to the end (keeping each line in ``lines`` if given)
    and closes it at EOF, that is when the process ends."""
    cmd = [sys.executable, "-m", "asrhub", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(env), stdout=subprocess.PIPE, stderr=logs, text=True)
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                if lines is not None:
                    lines.append(line)
                if line.startswith(LISTENING):
                    ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return proc, ready, reader
