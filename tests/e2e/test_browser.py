"""The browser UI end to end: headless Chromium with a fake microphone playing a fixture
sentence, the page served by a real hub subprocess, one run per transport.

Environment knobs (all optional):
  E2E_HUB       command that starts a hub, default ``<repo>/.venv/bin/asrhub``;
                       it is called as ``<cmd> serve --host 127.0.0.1 --port N [--api-key K]``
  E2E_HUB_ARGS  extra arguments for ``serve`` (e.g. ``--default-provider whisper``)
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from .fake_link import FakeLink

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
FIXTURES = ROOT / "tests" / "fixtures"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TRANSPORTS = ("websocket", "socketio", "sse")
API_KEY = "secret"
MAX_WER = 0.3
FALLBACK_TEXT = "The quick brown fox jumps over the lazy dog."

# scripts/setup.sh installs both; a missing one is a broken set-up, not a reason to skip.
assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), "run scripts/setup.sh (chromium + driver)"


# ------------------------------------------------------------------------- text scoring


def normalize(text: str) -> list[str]:
    text = text.lower().replace("’", "'")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


def edit_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, wa in enumerate(a, 1):
        cur = [i]
        for j, wb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wa != wb)))
        prev = cur
    return prev[-1]


def best_wer(reference: str, hypothesis: str) -> float:
    """WER of the reference against the best-matching stretch of the hypothesis.

    The fake microphone loops the fixture, so the transcript may hold the sentence more
    than once (or a cut-off copy at the end); one good copy is what counts.
    """
    ref = normalize(reference)
    hyp = normalize(hypothesis)
    if not hyp:
        return 1.0
    n = len(ref)
    best = edit_distance(ref, hyp) / n
    for size in range(max(1, n - 3), n + 4):
        for start in range(0, max(1, len(hyp) - size + 1)):
            best = min(best, edit_distance(ref, hyp[start : start + size]) / n)
    return best


def test_best_wer_scoring() -> None:
    ref = "The quick brown fox jumps over the lazy dog."
    assert best_wer(ref, "the quick brown fox jumps over the lazy dog") == 0
    assert best_wer(ref, "The quick brown fox jumped over the lazy dog. The quick") < MAX_WER
    assert best_wer(ref, "hello world") > MAX_WER


# ------------------------------------------------------------------------- fake microphone


def _pick_fixture() -> tuple[Path, str] | None:
    manifest = FIXTURES / "manifest.json"
    if not manifest.exists():
        return None
    data = json.loads(manifest.read_text(encoding="utf-8"))
    entries = data.get("files", data) if isinstance(data, dict) else data
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        path = FIXTURES / str(entry.get("file", ""))
        if entry.get("file") == "quick_fox.wav" and path.exists():
            return path, str(entry["text"])
    for entry in entries:
        if isinstance(entry, dict) and entry.get("language") == "en" and entry.get("kind") == "utterance":
            path = FIXTURES / str(entry.get("file", ""))
            if path.exists() and float(entry.get("duration", 99)) < 6:
                return path, str(entry["text"])
    return None


def _pad_wav(src: Path, dst: Path, lead_s: float, tail_s: float) -> None:
    with wave.open(str(src), "rb") as w:
        params = w.getparams()
        frames = w.readframes(w.getnframes())
    silence = b"\0" * (params.sampwidth * params.nchannels)
    with wave.open(str(dst), "wb") as out:
        out.setnchannels(params.nchannels)
        out.setsampwidth(params.sampwidth)
        out.setframerate(params.framerate)
        out.writeframes(silence * int(lead_s * params.framerate))
        out.writeframes(frames)
        out.writeframes(silence * int(tail_s * params.framerate))


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(WAV for Chromium's fake microphone, its text). Chromium loops the file, so the
    speech is followed by enough silence for the VAD to end the utterance."""
    tmp = tmp_path_factory.mktemp("fake-mic")
    picked = _pick_fixture()
    if picked is None:
        espeak = shutil.which("espeak-ng")
        assert espeak, "no tests/fixtures/manifest.json and no espeak-ng to make speech"
        raw = tmp / "raw.wav"
        subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(raw), FALLBACK_TEXT], check=True)
        picked = (raw, FALLBACK_TEXT)
    src, text = picked
    padded = tmp / "speech.wav"
    _pad_wav(src, padded, lead_s=0.5, tail_s=3.0)
    return padded, text


# ------------------------------------------------------------------------- the hub


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hub:
    def __init__(self, log_dir: Path, api_key: str | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"hub-{self.port}.log"
        cmd = shlex.split(os.environ.get("E2E_HUB", str(ROOT / ".venv" / "bin" / "asrhub")))
        assert shutil.which(cmd[0]), f"hub command not found: {cmd[0]}"
        args = [*cmd, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if api_key:
            args += ["--api-key", api_key]
        args += shlex.split(os.environ.get("E2E_HUB_ARGS", ""))
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            args, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.tail()
                pytest.fail(f"hub exited with {self.proc.returncode}:\n{log}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        pytest.fail(f"hub did not answer /healthz within {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.log.closed:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def hubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Hub]]:
    """Both hubs start at once (loading models takes a while); each test waits for the one it uses."""
    started = {
        "open": Hub(tmp_path_factory.mktemp("hub")),
        "keyed": Hub(tmp_path_factory.mktemp("keyed-hub"), api_key=API_KEY),
    }
    try:
        yield started
    finally:
        for h in started.values():
            h.stop()


@pytest.fixture(scope="module")
def hub(hubs: dict[str, Hub]) -> Hub:
    hubs["open"].wait_ready()
    return hubs["open"]


@pytest.fixture(scope="module")
def keyed_hub(hubs: dict[str, Hub]) -> Hub:
    hubs["keyed"].wait_ready()
    return hubs["keyed"]


# ------------------------------------------------------------------------- the browser


def launch_chromium(fake_mic_wav: Path, profile_dir: Path) -> WebDriver:
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        f"--user-data-dir={profile_dir}",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_mic_wav}",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    drv.set_page_load_timeout(30)
    return drv


def _finish(drv: WebDriver, request: pytest.FixtureRequest) -> None:
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        drv.save_screenshot(str(ARTIFACTS / f"e2e-failed-{request.node.name}.png"))
        try:
            for entry in drv.get_log("browser"):  # type: ignore[attr-defined]  # Chrome-only API
                print("browser:", entry.get("level"), entry.get("message"))
        except Exception:
            pass
    drv.quit()


@pytest.fixture
def driver(speech: tuple[Path, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[WebDriver]:
    """Chromium whose microphone plays the fixture sentence (looped)."""
    drv = launch_chromium(speech[0], tmp_path / "chromium-profile")
    yield drv
    _finish(drv, request)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def by_testid(driver: WebDriver, testid: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def state_of(driver: WebDriver, testid: str) -> str:
    return by_testid(driver, testid).get_attribute("data-state") or ""


def wait_for(driver: WebDriver, cond, timeout: float, what: str):  # type: ignore[no-untyped-def]
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: cond(d))
    except TimeoutException:
        err = by_testid(driver, "error")
        detail = err.text if err.is_displayed() else "(no error shown)"
        log = by_testid(driver, "event-log").get_attribute("textContent") or ""
        pytest.fail(
            f"timed out after {timeout:.0f} s waiting for {what}; "
            f"connection={state_of(driver, 'connection-state')!r} error={detail!r}\n"
            f"final={by_testid(driver, 'transcript-final').text!r}\nevents:\n{log[-3000:]}"
        )


def open_page(driver: WebDriver, url: str, transport: str, query: str = "") -> None:
    driver.get(url + "/" + query)
    wait_for(driver, lambda d: d.execute_script("return !!window.asrhub"), 15, "the page's modules")
    Select(by_testid(driver, "transport")).select_by_value(transport)


def shot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(ARTIFACTS / f"e2e-{name}.png"))


def error_text(driver: WebDriver) -> str:
    el = by_testid(driver, "error")
    return el.text if el.is_displayed() else ""


# ------------------------------------------------------------------------- tests


def run_live_session(driver: WebDriver, expected: str, name: str) -> None:
    by_testid(driver, "start").click()
    wait_for(driver, lambda d: state_of(d, "connection-state") == "live", 30, "session.started")
    assert by_testid(driver, "stop").is_enabled()

    def heard(d: WebDriver) -> bool:
        return best_wer(expected, by_testid(d, "transcript-final").text) <= MAX_WER

    wait_for(driver, heard, 60, f"a final transcript of {expected!r}")
    assert state_of(driver, "vad-state") in {"speech", "silence", "off"}
    shot(driver, f"{name}-live")
    by_testid(driver, "stop").click()
    wait_for(driver, lambda d: state_of(d, "connection-state") == "idle", 30, "the session to close")
    assert by_testid(driver, "start").is_enabled()
    assert error_text(driver) == "", error_text(driver)
    shot(driver, name)
    final = by_testid(driver, "transcript-final").text
    assert best_wer(expected, final) <= MAX_WER, final


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_live_transcript(driver: WebDriver, hub: Hub, speech: tuple[Path, str], transport: str) -> None:
    open_page(driver, hub.url, transport)
    run_live_session(driver, speech[1], transport)


def test_live_transcript_resampled_in_worklet(driver: WebDriver, hub: Hub, speech: tuple[Path, str]) -> None:
    """The AudioContext at the device rate (48 kHz): the worklet's own resampler makes the 16 kHz."""
    open_page(driver, hub.url, "websocket", "?capture=native")
    run_live_session(driver, speech[1], "websocket-native-rate")
    rate = driver.execute_script("return window.asrhub.lastCaptureRate")
    assert rate and rate != 16000, rate


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hub_down_shows_readable_error(driver: WebDriver, hub: Hub, transport: str) -> None:
    open_page(driver, hub.url, transport)
    hub_url = by_testid(driver, "hub-url")
    hub_url.clear()
    hub_url.send_keys(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    by_testid(driver, "start").click()
    wait_for(driver, lambda d: "Cannot reach the hub" in error_text(d), 20, "the hub-down message")
    assert by_testid(driver, "error").get_attribute("data-code") == "network"
    assert state_of(driver, "connection-state") == "failed"
    assert by_testid(driver, "start").is_enabled()
    assert not by_testid(driver, "stop").is_enabled()
    if transport == "websocket":
        shot(driver, "hub-down")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_api_key_is_reported(driver: WebDriver, keyed_hub: Hub, transport: str) -> None:
    open_page(driver, keyed_hub.url, transport)
    by_testid(driver, "api-key").send_keys("not-the-key")
    by_testid(driver, "start").click()
    wait_for(driver, lambda d: "rejected the API key" in error_text(d), 20, "the unauthorized message")
    assert by_testid(driver, "error").get_attribute("data-code") == "unauthorized"
    wait_for(driver, lambda d: state_of(d, "connection-state") == "failed", 10, "the session to stop")
    assert by_testid(driver, "transcript-final").text == ""
    if transport == "websocket":
        shot(driver, "unauthorized")


def test_right_api_key_is_accepted(driver: WebDriver, keyed_hub: Hub) -> None:
    open_page(driver, keyed_hub.url, "websocket")
    by_testid(driver, "api-key").send_keys(API_KEY)
    by_testid(driver, "start").click()
    wait_for(driver, lambda d: state_of(d, "connection-state") == "live", 30, "session.started")
    by_testid(driver, "stop").click()
    wait_for(driver, lambda d: state_of(d, "connection-state") == "idle", 30, "the session to close")
    assert error_text(driver) == ""
    # The key is remembered for the next visit.
    assert driver.execute_script("return localStorage.getItem('asrhub.apiKey')") == API_KEY


def test_reconnects_after_the_page_closes_its_socket(driver: WebDriver, hub: Hub) -> None:
    """A close frame from the page ends the session on purpose (not resumable): a new one."""
    open_page(driver, hub.url, "websocket")
    by_testid(driver, "start").click()
    wait_for(driver, lambda d: state_of(d, "connection-state") == "live", 30, "session.started")
    first = driver.execute_script("return window.asrhub.ui.sessionId")
    assert driver.execute_script("return window.asrhub.ui.epoch") == 1
    driver.execute_script("window.asrhub.ui.adapter.ws.close()")

    def back(d: WebDriver) -> bool:
        again = d.execute_script("return window.asrhub.ui.epoch") >= 2
        return again and state_of(d, "connection-state") == "live"

    wait_for(driver, back, 30, "a new session after the drop")
    assert driver.execute_script("return window.asrhub.ui.sessionId") != first
    assert error_text(driver) == "", error_text(driver)
    by_testid(driver, "stop").click()
    wait_for(driver, lambda d: state_of(d, "connection-state") == "idle", 30, "the session to close")


def test_reconnects_after_hub_restart(driver: WebDriver, tmp_path_factory: pytest.TempPathFactory) -> None:
    log_dir = tmp_path_factory.mktemp("restarted-hub")
    first = Hub(log_dir)
    second: Hub | None = None
    try:
        first.wait_ready()
        open_page(driver, first.url, "websocket")
        by_testid(driver, "start").click()
        wait_for(driver, lambda d: state_of(d, "connection-state") == "live", 30, "session.started")
        first.stop()
        wait_for(
            driver,
            lambda d: state_of(d, "connection-state") in {"reconnecting", "connecting"},
            15,
            "the page to notice the drop and retry",
        )
        assert "reconnect" in by_testid(driver, "connection-state").text.lower()
        second = Hub(log_dir, port=first.port)
        second.wait_ready()
        wait_for(
            driver, lambda d: state_of(d, "connection-state") == "live", 45, "a session after reconnecting"
        )
        # The hub said why it closed (1001: restarting); the note goes once words flow again.
        wait_for(driver, lambda d: len(finals(d)) >= 1, 60, "a final after reconnecting")
        wait_for(driver, lambda d: error_text(d) == "", 10, "the restart note to clear")
        by_testid(driver, "stop").click()
        wait_for(driver, lambda d: state_of(d, "connection-state") == "idle", 30, "the session to close")
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_keyboard_only(driver: WebDriver, hub: Hub) -> None:
    open_page(driver, hub.url, "websocket")
    driver.execute_script("document.activeElement && document.activeElement.blur(); window.focus();")
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    visited = []
    for _ in range(60):
        el = driver.switch_to.active_element
        visited.append(el.get_attribute("data-testid") or el.get_attribute("id") or el.tag_name)
        if el.get_attribute("data-testid") == "start":
            break
        el.send_keys(Keys.TAB)
    else:
        pytest.fail(f"Start was never reached with Tab; focus went through {visited}")
    start = driver.switch_to.active_element
    assert start.tag_name == "button"
    # A visible focus indicator on keyboard focus.
    outline = driver.execute_script("return getComputedStyle(arguments[0]).outlineStyle", start)
    assert outline not in ("", "none"), outline
    # Every stop on the way is a labelled form control or a link, in document order.
    assert "transport" in visited and "api-key" in visited, visited

    start.send_keys(Keys.ENTER)
    wait_for(driver, lambda d: state_of(d, "connection-state") == "live", 30, "session.started")
    focused = driver.switch_to.active_element
    assert focused.get_attribute("data-testid") == "stop", "focus should move to Stop"
    focused.send_keys(Keys.SPACE)
    wait_for(driver, lambda d: state_of(d, "connection-state") == "idle", 30, "the session to close")
    assert driver.switch_to.active_element.get_attribute("data-testid") == "start"
    shot(driver, "keyboard")


def test_wakeword_detected(hub: Hub, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    manifest = FIXTURES / "manifest.json"
    entries = json.loads(manifest.read_text())["files"] if manifest.exists() else []
    wake = [e for e in entries if e.get("kind") == "wakeword" and (e.get("wakeword") or {}).get("expected")]
    entry = wake[0] if wake else None
    assert entry is not None, "no wake-word fixture in tests/fixtures/manifest.json"
    name = entry["wakeword"]["name"]
    wav = tmp_path / "wake.wav"
    _pad_wav(FIXTURES / entry["file"], wav, lead_s=0.5, tail_s=3.0)
    drv = launch_chromium(wav, tmp_path / "chromium-profile")
    try:
        open_page(drv, hub.url, "websocket")
        drv.find_element(By.ID, "wakeword-enabled").click()
        drv.find_element(By.CSS_SELECTOR, f'[data-testid="wakeword-{name}"]').click()
        by_testid(drv, "start").click()
        wait_for(drv, lambda d: state_of(d, "connection-state") == "live", 30, "session.started")
        assert state_of(drv, "wakeword-state") == "listening"
        wait_for(drv, lambda d: state_of(d, "wakeword-state") == "detected", 30, f"wakeword.detected {name}")
        assert name in by_testid(drv, "wakeword-state").text
        shot(drv, "wakeword")
        by_testid(drv, "stop").click()
        wait_for(drv, lambda d: state_of(d, "connection-state") == "idle", 30, "the session to close")
    finally:
        _finish(drv, request)


def test_file_upload(driver: WebDriver, hub: Hub, speech: tuple[Path, str]) -> None:
    wav, expected = speech
    open_page(driver, hub.url, "websocket")
    by_testid(driver, "file").send_keys(str(wav))
    by_testid(driver, "transcribe-file").click()

    def done(d: WebDriver) -> bool:
        return bool(d.find_elements(By.CSS_SELECTOR, '[data-testid="file-text"]')) or bool(error_text(d))

    wait_for(driver, done, 60, "the file transcription")
    assert error_text(driver) == ""
    text = by_testid(driver, "file-text").text
    assert best_wer(expected, text) <= MAX_WER, text
    shot(driver, "file")


# ------------------------------------------------------------------------- faults on the way


def finals(driver: WebDriver) -> list[str]:
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll('#transcript-final .segment')]"
            ".filter(e => !e.hidden).map(e => e.textContent)"
        )
    )


@pytest.fixture
def link(hub: Hub) -> Iterator[FakeLink]:
    relay = FakeLink(hub.port)
    yield relay
    relay.close()


@pytest.mark.parametrize("transport", ["websocket", "socketio"])
def test_network_drop_resumes_the_session_and_loses_no_words(
    driver: WebDriver, link: FakeLink, speech: tuple[Path, str], transport: str
) -> None:
    """The network dies in the middle of an utterance: the page resumes the same session
    (session.resume), re-sends from resume_from_bytes what the hub did not get, and that
    utterance's final is whole."""
    expected = speech[1]
    open_page(driver, link.url, transport)
    by_testid(driver, "start").click()
    wait_for(driver, lambda d: state_of(d, "connection-state") == "live", 30, "session.started")
    first = driver.execute_script("return window.asrhub.ui.sessionId")
    wait_for(driver, lambda d: len(finals(d)) >= 1, 60, "a first final")
    wait_for(driver, lambda d: state_of(d, "vad-state") == "speech", 30, "the next utterance to begin")
    before = len(finals(driver))
    assert link.drop() >= 1
    wait_for(
        driver, lambda d: d.execute_script("return window.asrhub.ui.resumes") >= 1, 30, "session.resumed"
    )
    wait_for(driver, lambda d: state_of(d, "connection-state") == "live", 30, "live again")
    assert driver.execute_script("return window.asrhub.ui.sessionId") == first, "the same session"
    wait_for(driver, lambda d: len(finals(d)) >= before + 2, 60, "the cut utterance's final and the next")
    for text in finals(driver)[before:]:
        assert best_wer(expected, text) <= MAX_WER, f"words lost across the drop: {text!r}"
    assert error_text(driver) == "", error_text(driver)
    by_testid(driver, "stop").click()
    wait_for(driver, lambda d: state_of(d, "connection-state") == "idle", 30, "the session to close")


def test_slow_consumer_is_explained_and_the_page_reconnects(
    driver: WebDriver, link: FakeLink, speech: tuple[Path, str]
) -> None:
    """Close 1008 "slow_consumer" is not a wrong key: the page says what happened, resumes or
    (the hub closed the session) starts a new one, sends the unconfirmed audio, and goes on."""
    open_page(driver, link.url, "websocket")
    by_testid(driver, "start").click()
    wait_for(driver, lambda d: state_of(d, "connection-state") == "live", 30, "session.started")
    first = driver.execute_script("return window.asrhub.ui.sessionId")
    assert link.cut_slow_consumer() == 1
    wait_for(driver, lambda d: "keep up" in error_text(d), 20, "the slow-consumer message")
    assert by_testid(driver, "error").get_attribute("data-code") == "slow_consumer"
    assert "API key" not in error_text(driver)
    shot(driver, "slow-consumer")

    def new_session(d: WebDriver) -> bool:
        again = d.execute_script("return window.asrhub.ui.sessionId") not in (None, first)
        return again and state_of(d, "connection-state") == "live"

    wait_for(driver, new_session, 30, "a new session after the slow-consumer close")
    wait_for(driver, lambda d: len(finals(d)) >= 1, 60, "a final in the new session")
    assert best_wer(speech[1], " ".join(finals(driver))) <= MAX_WER
    by_testid(driver, "stop").click()
    wait_for(driver, lambda d: state_of(d, "connection-state") == "idle", 30, "the session to close")


def test_a_congested_link_holds_audio_back_visibly_and_loses_none(
    driver: WebDriver, link: FakeLink, speech: tuple[Path, str]
) -> None:
    """HTTP+SSE through a link that stops delivering the hub's answers: the page's POSTs stay in
    flight, its backlog passes the 5 s bound, and it says it is holding audio back instead of
    queueing without bound or dropping the oldest; released, the held audio is sent in order
    and the sentence comes back whole."""
    open_page(driver, link.url, "sse")
    by_testid(driver, "start").click()
    wait_for(driver, lambda d: state_of(d, "connection-state") == "live", 30, "session.started")
    wait_for(driver, lambda d: len(finals(d)) >= 1, 60, "a first final")
    link.hold_http()
    try:
        wait_for(
            driver,
            lambda d: by_testid(d, "backlog").get_attribute("data-state") == "held",
            40,
            "the hold-back notice",
        )
        assert "Holding back" in by_testid(driver, "backlog").text
        shot(driver, "held-back")
        held = int(by_testid(driver, "backlog").get_attribute("data-held-bytes") or 0)
        backlog = driver.execute_script("return window.asrhub.ui.adapter.backlogBytes()")
        assert held > 0 and backlog <= 16000 * 2 * 5 + 64 * 1024, (held, backlog)
    finally:
        link.release_http()
    before = len(finals(driver))
    wait_for(
        driver,
        lambda d: by_testid(d, "backlog").get_attribute("data-state") == "none",
        60,
        "the held audio to drain",
    )
    wait_for(driver, lambda d: len(finals(d)) >= before + 2, 90, "finals of the held audio")
    for text in finals(driver)[before:]:
        assert best_wer(speech[1], text) <= MAX_WER, f"held audio came back damaged: {text!r}"
    assert error_text(driver) == "", error_text(driver)
    by_testid(driver, "stop").click()
    wait_for(driver, lambda d: state_of(d, "connection-state") == "idle", 30, "the session to close")


DOM_COST_SCRIPT = """
const [n, done] = arguments;
(async () => {
  const ui = window.asrhub.ui, view = window.asrhub.transcript;
  view.clear();
  document.getElementById("event-log").replaceChildren();
  const box = document.getElementById("transcript-final");
  const watch = new MutationObserver(() => {});
  watch.observe(box, {childList: true, subtree: true, characterData: true});
  let added = 0, removed = 0, worst = 0;
  const ms = [];
  for (let i = 0; i < n; i++) {
    if (i % 500 === 0) await new Promise((r) => setTimeout(r, 0));
    const t0 = performance.now();
    ui.handleEvent(1, {type: "transcript.final", segment_id: i, text: `sentence ${i} of the hour`,
                       start: i, end: i + 0.9});
    box.offsetHeight;  // layout, as a painted page pays it
    ms.push(performance.now() - t0);
    let here = 0;
    for (const r of watch.takeRecords()) {
      added += r.addedNodes.length; removed += r.removedNodes.length;
      here += r.addedNodes.length + r.removedNodes.length;
    }
    worst = Math.max(worst, here);
  }
  watch.disconnect();
  const sum = (a) => a.reduce((x, y) => x + y, 0);
  done({added, removed, worst, nodes: box.childNodes.length,
        segments: box.querySelectorAll(".segment").length,
        first_ms: sum(ms.slice(0, 500)), last_ms: sum(ms.slice(-500)),
        text_end: box.lastChild.lastChild.textContent, role: box.getAttribute("role"),
        relevant: box.getAttribute("aria-relevant")});
})();
"""


def test_an_hours_finals_cost_the_same_dom_work_each(driver: WebDriver, hub: Hub) -> None:
    """3,600 finals (an hour at one a second): each one adds its own nodes and touches
    nothing else — no rebuild, no removal — so the cost per final cannot grow with the
    transcript, and a screen reader (role=log, additions) hears only the new words."""
    open_page(driver, hub.url, "websocket")
    n = 3600
    driver.set_script_timeout(120)
    r = driver.execute_async_script(DOM_COST_SCRIPT, n)
    print(
        f"\nDOM cost of {n} finals (append + layout): {r['first_ms']:.1f} ms for the first 500, "
        f"{r['last_ms']:.1f} ms for the last 500; {r['nodes']} nodes"
    )
    assert r["removed"] == 0, "a final removed nodes: the view was rebuilt"
    chunks = -(-n // 50)
    # A space, a span and its text per final (and a block every 50 finals).
    assert r["worst"] <= 4 and r["added"] == 3 * n + chunks, r
    assert r["segments"] == n and r["nodes"] == chunks
    assert r["text_end"] == f"sentence {n - 1} of the hour"
    assert r["role"] == "log" and "additions" in r["relevant"]
