"""Every code block of README.md and docs/*.md that claims to run, run as written (issue 29).

The blocks are read with markdown-it-py (the parser ``rich`` uses). By the block's language:

* ``python`` — run as a script with this venv's Python; ``sh`` / ``bash`` / ``shell`` — run by
  ``bash -e -o pipefail``; ``console`` — its ``$ `` lines run the same way (the rest is the
  output it shows). Each must exit 0 within its time limit and print something; a block that
  uses ``tests/fixtures/quick_fox.wav`` must print "fox" (the fixture says "The quick brown fox
  jumps over the lazy dog"), so a snippet that never sends audio or never reads a result fails.
* ``toml`` — a configuration example: loaded by the hub's settings loader (unknown keys and bad
  values fail).
* no language, ``text``, ``json`` — diagrams, output and wire examples: not run; but an
  untagged block that starts with a command (``asrhub``, ``python``, ``curl``, …) must say its
  language.
* any other language (``js`` …) — not run here, so it must be marked.

A block that cannot run here says so, with its reason, in an HTML comment right before its
fence — ``<!-- snippet: skip (needs a Google Cloud project) -->`` — and the report lists it as
skipped with that reason. An unmarked block that does not run fails.

What the snippets run against: one ``asrhub serve`` for the module (the real default engine,
faster-whisper tiny.en) with an API key (``ASRHUB_API_KEYS``) and its gRPC and Wyoming ports on;
the snippets get the key in ``ASRHUB_API_KEY``, the variable they read. The hub listens on free
ports, so the documented addresses ``127.0.0.1:8080``, ``:50051`` and ``:10300`` are replaced by
the hub's before a block runs; nothing else is changed. Each block runs in a fresh directory
whose entries link to the checkout's (``tests/fixtures/…``, ``.venv/…``, ``examples/…`` resolve
as in the checkout; files a block writes stay there), with this venv's ``bin`` first on
``PATH`` as after ``source .venv/bin/activate``. The blocks run three at a time, those that need
no hub (in-process ones) first, while the hub loads.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from asrhub.settings.loader import load_settings
from tests.cluster.conftest import Node, free_port

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"python", "sh", "bash", "shell", "console"}
DATA = {"", "text", "json"}
MARKER = re.compile(r"^<!--\s*snippet:\s*skip\s*\((?P<reason>.*\S.*)\)\s*-->\s*$")
ANY_MARKER = re.compile(r"<!--\s*snippet:")
COMMAND = re.compile(
    r"^\s*(\$ |asrhub |\.venv/|python3? |pytest |curl |bash |uv |pip |haproxy |redis-server )"
)
PORTS = {"8080": "http", "50051": "grpc", "10300": "wyoming"}
TIMEOUT_S = 120.0
PARALLEL = 3


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the marker's reason

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def read_blocks() -> list[Block]:
    blocks: list[Block] = []
    parser = MarkdownIt("commonmark")
    for path in DOCS:
        tokens = parser.parse(path.read_text())
        for i, token in enumerate(tokens):
            if token.type == "html_block" and ANY_MARKER.search(token.content):
                nxt = tokens[i + 1] if i + 1 < len(tokens) else None
                assert MARKER.match(token.content.strip()), (
                    f"{path.relative_to(ROOT)}: a marker reads <!-- snippet: skip (reason) -->, "
                    f"not {token.content!r}"
                )
                assert nxt is not None and nxt.type == "fence", (
                    f"{path.relative_to(ROOT)}: a snippet marker must stand right before a fence"
                )
            if token.type != "fence":
                continue
            assert token.map is not None
            prev = tokens[i - 1] if i else None
            match = (
                MARKER.match(prev.content.strip()) if prev is not None and prev.type == "html_block" else None
            )
            blocks.append(
                Block(
                    path=path,
                    line=token.map[0] + 1,
                    lang=token.info.strip().split(" ")[0].lower(),
                    code=token.content,
                    skip=match.group("reason").strip() if match else None,
                )
            )
    return blocks


BLOCKS = read_blocks()
RUNNABLE = [b for b in BLOCKS if b.lang in RUN]
TOML = [b for b in BLOCKS if b.lang == "toml"]


def script_of(block: Block) -> str:
    if block.lang == "console":
        return "\n".join(line[2:] for line in block.code.splitlines() if line.startswith("$ "))
    return block.code


# ---------------------------------------------------------------------------------- the hub


class Hub:
    """``asrhub serve`` with an API key and its gRPC and Wyoming ports; started at once, waited
    for only by the blocks that use it (the others run while it loads)."""

    def __init__(self) -> None:
        self.key = secrets.token_urlsafe(16)
        grpc, wyoming = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASRHUB_")}
        env |= {"ASRHUB_API_KEYS": self.key, "ASRHUB_LOG__LEVEL": "warning"}
        self.node = Node("snippets", env, ("--grpc-port", str(grpc), "--wyoming-port", str(wyoming)))
        self.ports = {"http": self.node.port, "grpc": grpc, "wyoming": wyoming}

    def uses(self, block: Block) -> bool:
        return any(f"127.0.0.1:{documented}" in block.code for documented in PORTS)


@dataclass(frozen=True)
class Ran:
    code: str
    returncode: int | None  # None: killed at the time limit
    stdout: str
    stderr: str


def run_block(block: Block, hub: Hub) -> Ran:
    code = script_of(block)
    if hub.uses(block):
        hub.node.wait_ready()
    for documented, name in PORTS.items():
        code = code.replace(f"127.0.0.1:{documented}", f"127.0.0.1:{hub.ports[name]}")
    with tempfile.TemporaryDirectory(prefix="asrhub-snippet-") as work:
        for entry in ROOT.iterdir():
            if entry.name != ".git":
                os.symlink(entry, Path(work) / entry.name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASRHUB_")}
        env |= {
            "ASRHUB_API_KEY": hub.key,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
        if block.lang == "python":
            (Path(work) / "snippet.py").write_text(code)
            argv = [sys.executable, "snippet.py"]
        else:
            argv = ["bash", "-e", "-o", "pipefail", "-c", code]
        proc = subprocess.Popen(
            argv,
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: whatever it started ends with it
        )
        returncode: int | None = None
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        return Ran(code, returncode, out, err)


@pytest.fixture(scope="module")
def ran(request: pytest.FixtureRequest) -> Iterator[dict[str, Future[Ran]]]:
    """Every selected runnable block, started at once on a small pool (they mostly wait on the
    hub, on imports and on model loads): the blocks that need no hub first, while it starts.
    Each test then waits for its own."""
    wanted = {
        item.callspec.params["block"].id
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.originalname == "test_block_runs_as_written"
        and hasattr(item, "callspec")
    }
    blocks = [b for b in RUNNABLE if b.skip is None and b.id in wanted]
    hub = Hub()
    try:
        if any(hub.uses(b) for b in blocks):
            hub.node.start()
        with ThreadPoolExecutor(PARALLEL) as pool:
            futures = {b.id: pool.submit(run_block, b, hub) for b in sorted(blocks, key=hub.uses)}
            try:
                yield futures
            finally:
                for future in futures.values():
                    future.cancel()
    finally:
        hub.node.close()


# ---------------------------------------------------------------------------------- the tests


def test_every_block_is_run_checked_or_marked() -> None:
    problems = []
    for block in BLOCKS:
        first = next((line for line in block.code.splitlines() if line.strip()), "")
        if block.lang in RUN or block.lang == "toml":
            continue
        if block.lang in DATA:
            if block.lang == "" and COMMAND.match(first) and block.skip is None:
                problems.append(f"{block.id}: an untagged block starts with a command: tag it (```sh …)")
        elif block.skip is None:
            problems.append(f"{block.id}: ```{block.lang} is not run here: mark it with its reason")
    assert not problems, "\n".join(problems)
    skipped = [b for b in BLOCKS if b.skip]
    print(
        f"\n{len(BLOCKS)} blocks: {len(RUNNABLE) - len([b for b in RUNNABLE if b.skip])} run, "
        f"{len(TOML)} toml loaded, {len(skipped)} marked skip"
    )


@pytest.mark.timeout(900)  # its wait includes the blocks queued before it (each <= TIMEOUT_S)
@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
def test_block_runs_as_written(block: Block, ran: dict[str, Future[Ran]]) -> None:
    if block.skip is not None:
        pytest.skip(block.skip)
    result = ran[block.id].result()
    shown = (
        f"--- code\n{result.code}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )
    assert result.returncode is not None, f"{block.id}: still running after {TIMEOUT_S:.0f} s\n{shown}"
    assert result.returncode == 0, f"{block.id}: exit {result.returncode}\n{shown}"
    assert result.stdout.strip(), f"{block.id}: printed nothing\n{shown}"
    if "quick_fox" in block.code:
        assert "fox" in result.stdout.lower(), f"{block.id}: no transcript of quick_fox.wav\n{shown}"


@pytest.mark.parametrize("block", TOML, ids=lambda b: b.id)
def test_toml_block_is_a_valid_configuration(block: Block, tmp_path: Path) -> None:
    if block.skip is not None:
        pytest.skip(block.skip)
    path = tmp_path / "asrhub.toml"
    path.write_text(block.code)
    load_settings(path, env={})
