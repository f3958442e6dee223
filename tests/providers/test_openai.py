"""The ``openai`` provider against OpenAI-compatible servers on 127.0.0.1.

The success path talks to a server that really transcribes (faster-whisper on the upload, see
openai_servers.py); the error paths to a fault-injecting one (500, 429, a hang).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from asrhub.plugin import ProviderError
from asrhub.providers.openai import OpenAIProvider, check
from asrhub.providers.whisper import WhisperProvider
from tests.audio_utils import fixture, fixture_entry, load_wav, wer

from .conftest import finals, make_hub, run_session
from .openai_servers import FakeFailingState, fake_failing_app, serve, whisper_app


@pytest.fixture
async def server(whisper: WhisperProvider) -> AsyncIterator[str]:
    async with serve(whisper_app(whisper)) as base_url:
        yield base_url


async def started(**options: object) -> OpenAIProvider:
    provider = OpenAIProvider({"api_key": "sk-test", **options})
    await provider.start()
    return provider


async def test_transcribes_through_a_real_compatible_server(server: str) -> None:
    provider = await started(base_url=server)
    try:
        samples, _ = load_wav(fixture("weather_question.wav"))
        result = await provider.transcribe(samples, language="en")
        assert wer(fixture_entry("weather_question.wav")["text"], result.text) <= 0.1
        assert result.words is None and result.language == "en"
    finally:
        await provider.close()


async def test_verbose_json_brings_word_times(server: str) -> None:
    provider = await started(base_url=server, response_format="verbose_json")
    try:
        assert provider.capabilities.word_timestamps
        samples, _ = load_wav(fixture("quick_fox.wav"))
        result = await provider.transcribe(samples)
        assert wer(fixture_entry("quick_fox.wav")["text"], result.text) <= 0.1
        assert result.words and result.language == "en" and result.segments
        starts = [w.start for w in result.words]
        assert starts == sorted(starts) and result.words[-1].end <= 3.5
    finally:
        await provider.close()


async def test_a_hub_session_served_by_the_remote_engine(server: str) -> None:
    provider = await started(base_url=server)
    try:
        assert not provider.capabilities.partials
        hub = make_hub({"openai": provider})
        samples, _ = load_wav(fixture("silences.wav"))
        events = await run_session(hub, samples, {"provider": "openai"})
        got = finals(events)
        assert len(got) == 4 and {f.provider for f in got} == {"openai"}
        assert wer(fixture_entry("silences.wav")["text"], " ".join(f.text for f in got)) <= 0.1
    finally:
        await provider.close()


async def test_the_model_name_reaches_the_server(server: str) -> None:
    provider = await started(base_url=server, model="gpt-9-transcribe")
    try:
        samples, _ = load_wav(fixture("quick_fox.wav"))
        with pytest.raises(ProviderError, match=r"HTTP 404: model 'gpt-9-transcribe' not found"):
            await provider.transcribe(samples)
    finally:
        await provider.close()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("500", r"HTTP 500: The engine crashed while decoding"),
        ("429", r"HTTP 429: Rate limit reached for requests"),
        ("hang", r"no answer within 0.5 s"),
    ],
)
async def test_upstream_failures_become_provider_errors(mode: str, expected: str) -> None:
    state = FakeFailingState(mode)
    async with serve(fake_failing_app(state)) as base_url:
        provider = await started(base_url=base_url, timeout_s=0.5)
        try:
            samples, _ = load_wav(fixture("quick_fox.wav"))
            with pytest.raises(ProviderError, match=expected) as caught:
                await provider.transcribe(samples)
            assert base_url in str(caught.value)
            assert state.requests == 1  # max_retries = 0: the hub's failover is the retry
        finally:
            await provider.close()


async def test_failing_server_fails_over_to_local_whisper(whisper: WhisperProvider) -> None:
    state = FakeFailingState("429")
    async with serve(fake_failing_app(state)) as base_url:
        remote = await started(base_url=base_url)
        try:
            hub = make_hub({"openai": remote, "whisper": whisper})
            samples, _ = load_wav(fixture("reminder.wav"))
            events = await run_session(hub, samples, {"provider": ["openai", "whisper"]})
            got = finals(events)
            assert [f.provider for f in got] == ["whisper"] and state.requests == 1
            assert wer(fixture_entry("reminder.wav")["text"], got[0].text) <= 0.1
        finally:
            await remote.close()


def test_check_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    problem = check({})
    assert problem is not None and "OPENAI_API_KEY" in problem and "base_url" in problem
    assert check({"base_url": "http://127.0.0.1:9/v1"}) is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    assert check({}) is None
    assert "invalid" in (check({"response_format": "srt"}) or "")


async def test_against_the_hubs_own_openai_endpoint(whisper: WhisperProvider) -> None:
    """Hub → OpenAI SDK → another hub's /v1/audio/transcriptions (the way to chain hubs)."""
    from asrhub.settings.schema import Settings
    from asrhub.transports.app import create_app

    app = create_app(make_hub({"whisper": whisper}), Settings())
    async with serve(app) as base_url:
        provider = await started(base_url=base_url, response_format="verbose_json")
        try:
            samples, _ = load_wav(fixture("science.wav"))
            result = await provider.transcribe(samples, language="en")
            assert wer(fixture_entry("science.wav")["text"], result.text) <= 0.1
            assert result.words and result.language == "en"
        finally:
            await provider.close()


@pytest.mark.parametrize(
    ("reported", "code"),
    [
        ("english", "en"),
        ("Spanish", "es"),
        ("swahili", "sw"),
        ("greek", "el"),
        ("norwegian nynorsk", "nn"),
        ("korean", "ko"),
        ("haitian creole", "ht"),
        ("castilian", "es"),
        ("de", "de"),
        ("klingon", "klingon"),
    ],
)
def test_verbose_json_language_names_become_iso_codes(reported: str, code: str) -> None:
    """Every ISO 639-1 name (pycountry's table, not the six names it used to know)."""
    from asrhub.providers.openai import _language_code

    assert _language_code(reported) == code
