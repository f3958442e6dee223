"""Installed as a user would: ``uv build`` → a fresh venv with only the wheel → ``asrhub serve``.

The wheel's dependencies come from the registry (uv's cache, offline when it is warm), pinned to
the versions of uv.lock so the install takes seconds. The venv runs outside the checkout (cwd is a
temp dir, no PYTHONPATH), so nothing can be imported from the repository by accident.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.audio_utils import fixture, fixture_entry, wer

ROOT = Path(__file__).resolve().parents[2]
UV = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
WEB_ASSETS = ("index.html", "main.js", "pcm-worklet.js", "protocol-adapters.js", "style.css")
SOCKET_IO = "node_modules/socket.io-client/dist/socket.io.esm.min.js"


def run(*cmd: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``uv build``: the sdist, then the wheel built FROM that sdist (uv's default)."""
    out = tmp_path_factory.mktemp("dist")
    run(UV, "build", "--quiet", "-o", str(out), cwd=ROOT)
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    pins = home / "constraints.txt"
    run(
        UV,
        "export",
        "--frozen",
        "--no-dev",
        "--no-emit-project",
        "--no-hashes",
        "-q",
        "-o",
        str(pins),
        cwd=ROOT,
    )
    run(UV, "venv", "-q", str(home / "venv"), "--python", sys.executable, cwd=home)
    python = home / "venv" / "bin" / "python"
    (wheel,) = dist.glob("*.whl")
    install = [UV, "pip", "install", "-q", "--python", str(python), "-c", str(pins), str(wheel)]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    offline = subprocess.run(
        install, cwd=home, env={**env, "UV_OFFLINE": "1"}, capture_output=True, timeout=240
    )
    if offline.returncode != 0:  # cold cache: the registry fills it
        run(*install, cwd=home, env=env)
    return home / "venv" / "bin"


def test_wheel_and_sdist_carry_the_whole_hub(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("operators", "providers", "transports"):
        assert f"asrhub/{package}/__init__.py" in names
        assert not any(n.startswith(f"{package}/") for n in names), "plug-ins must live inside asrhub/"
    for asset in (*WEB_ASSETS, SOCKET_IO):
        assert f"asrhub/web/{asset}" in names
    assert not any("node_modules/ws/" in n or n.startswith("asrhub/web/package-lock") for n in names)
    members = {m.split("/", 1)[1] for m in tarfile.open(sdist).getnames() if "/" in m}
    for tree in (
        "asrhub/__init__.py",
        "operators/__init__.py",
        "providers/whisper.py",
        "transports/static.py",
        "web/index.html",
        f"web/{SOCKET_IO}",
        "docs/protocol.md",
    ):
        assert tree in members
    # The same wheel out of the sdist as out of the checkout.
    direct = dist / "direct"
    run(UV, "build", "--wheel", "--quiet", "-o", str(direct), cwd=ROOT)
    (direct_wheel,) = direct.glob("*.whl")
    assert sorted(zipfile.ZipFile(direct_wheel).namelist()) == sorted(names)


@contextlib.contextmanager
def serving(bin_dir: Path, cwd: Path) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASRHUB_") and k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [str(bin_dir / "asrhub"), "serve", "--host", "127.0.0.1", "--port", "0", "--log-level", "warning"],
        cwd=cwd,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    listening: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("asrhub: listening on"):
                listening.append(line.split()[-1])
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(180) and listening, "the installed asrhub serve did not start"
        yield listening[0]
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0, "SIGTERM is a clean exit"
        reader.join(10)
        assert proc.stdout is not None
        proc.stdout.close()


async def test_installed_wheel_serves_ui_transcribes_and_lists_providers(venv: Path, tmp_path: Path) -> None:
    where = run(
        str(venv / "python"), "-c", "import asrhub.transports.static as s; print(s.__file__)", cwd=tmp_path
    )
    assert str(venv.parent) in where.stdout and str(ROOT) not in where.stdout
    providers = run(str(venv / "asrhub"), "providers", cwd=tmp_path).stdout
    assert any(line.startswith("whisper") and "available" in line for line in providers.splitlines())
    assert any(line.startswith("vosk") for line in providers.splitlines())
    with serving(venv, tmp_path) as url:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/") as page:
                assert page.status == 200 and "<html" in (await page.text()).lower()
            for asset in WEB_ASSETS[1:]:
                async with http.get(f"{url}/{asset}") as r:
                    assert r.status == 200, asset
            async with http.get(f"{url}/vendor/socket.io/socket.io.esm.min.js") as r:
                assert r.status == 200 and "io" in await r.text()
            form = aiohttp.FormData()
            form.add_field("file", fixture("quick_fox.wav").read_bytes(), filename="quick_fox.wav")
            form.add_field("model", "whisper-1")
            async with http.post(f"{url}/v1/audio/transcriptions", data=form) as r:
                assert r.status == 200, await r.text()
                text = (await r.json())["text"]
    assert wer(fixture_entry("quick_fox.wav")["text"], text) <= 0.1
