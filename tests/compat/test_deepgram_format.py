"""Deepgram's formatting options through the official ``deepgram-sdk`` (7.x) on a real hub
(faster-whisper tiny.en) and real speech made at set-up (tests/format/recordings.py):
``smart_format``, ``redact`` (pci, ssn), ``profanity_filter``, ``paragraphs`` and
``utterances`` pre-recorded, and the same formatting on a live stream. Before issue 27 the
hub accepted these options and returned the card number, the SSN and the profanity in clear
(each test here but the one without options fails on that code)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import httpx
import pytest
from stdnum import luhn
from stdnum.us import ssn

from tests.compat.test_deepgram import WAIT, Messages, client_for, stream
from tests.format.recordings import CARD, MONEY, PROFANITY, SSN, recording
from tests.transports.conftest import KEY, ServerThread

pytestmark = [
    pytest.mark.filterwarnings("ignore:websockets.exceptions.InvalidStatusCode:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets.legacy"),
]

MASKED = re.compile(r"\b[a-zA-Z]\*{3,}")


def _digit_runs(text: str) -> list[list[str]]:
    """Each run of digit groups in ``text`` (``4539 1488, 0343`` → ``["4539", "1488", "0343"]``)."""
    return [re.findall(r"\d+", m) for m in re.findall(r"\d[\d ,\-]*\d|\d", text)]


def valid_cards(text: str) -> list[str]:
    """Luhn-valid card numbers in ``text`` made of whole groups (as the hub looks for them)."""
    found = []
    for groups in _digit_runs(text):
        for a in range(len(groups)):
            for b in range(a + 1, len(groups) + 1):
                digits = "".join(groups[a:b])
                if 13 <= len(digits) <= 19 and luhn.is_valid(digits):
                    found.append(digits)
    return found


def valid_ssns(text: str) -> list[str]:
    runs = ["".join(groups) for groups in _digit_runs(text)]
    return [d for d in runs if len(d) == 9 and ssn.is_valid(d)]


@pytest.fixture(scope="module")
def speech() -> tuple[bytes, list[tuple[float, float]]]:
    return recording(CARD, SSN, MONEY, PROFANITY)


async def test_prerecorded_smart_format_redact_profanity_paragraphs_utterances(
    whisper_server: ServerThread, speech: tuple[bytes, list[tuple[float, float]]]
) -> None:
    pcm, spans = speech
    async with httpx.AsyncClient(timeout=WAIT) as http:
        result = await client_for(whisper_server, http=http).listen.v1.media.transcribe_file(
            request=pcm,
            model="nova-3",
            encoding="linear16",  # 16 kHz: the hub's default rate for raw PCM
            smart_format=True,
            redact=["pci", "ssn"],  # type: ignore[arg-type]  # the SDK repeats a list: redact=pci&redact=ssn
            profanity_filter=True,
            paragraphs=True,
            utterances=True,
        )
    alt = result.results.channels[0].alternatives[0]
    text = alt.transcript or ""
    # tiny.en now and then drops or doubles a digit; then what it wrote is no valid card (or
    # SSN) and rightly stays. What must hold: no valid card or SSN is left in clear.
    assert not valid_cards(text) and not valid_ssns(text), text
    assert "[CREDIT_CARD]" in text or "[SSN]" in text, text  # at least one heard right
    assert "$25" in text and "12%" in text, text
    assert MASKED.search(text) and "bullshit" not in text.lower(), text
    # a marker spans the words it replaced, inside its sentence
    for marker, (start, end) in (
        ("[CREDIT_CARD]", (spans[0][0], spans[1][0])),
        ("[SSN]", (spans[1][0], spans[2][0])),
    ):
        found = [w for w in alt.words or () if w.word == marker]
        assert len(found) == text.count(marker)
        for w in found:
            assert start - 0.5 <= w.start < w.end <= end + 0.5, w
            assert (w.punctuated_word or "").startswith(marker)
    # paragraphs, in Deepgram's shape: split where the words pause (tiny.en's word times swallow
    # some of the 1.6 s pauses between the sentences: at least one is seen)
    paragraphs = alt.paragraphs
    assert paragraphs is not None and paragraphs.paragraphs and len(paragraphs.paragraphs) >= 2
    assert paragraphs.transcript and paragraphs.transcript.startswith("\n")
    assert " ".join(paragraphs.transcript.split()) == text  # the same words, formatted alike
    for p in paragraphs.paragraphs:
        assert p.sentences and p.num_words and p.start is not None and p.end is not None
        assert all(p.start <= (s.start or 0) <= (s.end or 0) <= p.end for s in p.sentences)
    # utterances: split at the pauses, formatted too
    utterances = result.results.utterances or []
    assert len(utterances) >= 2
    assert " ".join(u.transcript or "" for u in utterances) == text


async def test_prerecorded_without_options_is_unformatted(
    whisper_server: ServerThread, speech: tuple[bytes, list[tuple[float, float]]]
) -> None:
    pcm, _ = speech
    async with httpx.AsyncClient(timeout=WAIT) as http:
        result = await client_for(whisper_server, http=http).listen.v1.media.transcribe_file(
            request=pcm, model="nova-3", encoding="linear16"
        )
    text = result.results.channels[0].alternatives[0].transcript or ""
    # tiny.en writes the card's digits its own way (grouped, now and then one off), so the control
    # asks for the digits in clear, not for a valid card: nothing is hidden, masked or formatted.
    digits = sum(c.isdigit() for c in text)
    assert "[" not in text and digits >= 16 and not MASKED.search(text) and "bullshit" in text.lower(), text
    assert result.results.channels[0].alternatives[0].paragraphs is None


async def test_an_unsupported_redact_class_is_refused(whisper_server: ServerThread) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{whisper_server.http}/v1/listen?redact=pii",
            data=b"\0" * 3200,
            headers={"Authorization": f"Token {KEY}", "Content-Type": "audio/wav"},
        ) as resp:
            body: dict[str, Any] = await resp.json()
    assert resp.status == 400 and "pii" in body["err_msg"] and "pci" in body["err_msg"]


async def test_live_redact_profanity_and_smart_format(whisper_server: ServerThread) -> None:
    pcm, spans = recording(CARD, MONEY, PROFANITY)
    async with client_for(whisper_server).listen.v1.connect(
        model="nova-3",
        encoding="linear16",
        sample_rate="16000",
        smart_format="true",
        redact="pci,numbers",  # the SDK's live redact is one string: the hub splits at commas
        profanity_filter="true",
    ) as conn:
        got = Messages()
        reader = asyncio.create_task(got.read(conn))
        await stream(conn, pcm)
        await conn.send_close_stream()
        await asyncio.wait_for(reader, WAIT)
    finals = [r for r in got.of("Results") if r.is_final]
    text = " ".join(r.channel.alternatives[0].transcript for r in finals)
    # should tiny.en hear a digit wrong, the run is no valid card and "numbers" takes it;
    # either way no group of its digits is left
    assert ("[CREDIT_CARD]" in text or "[NUMBER]" in text) and not re.search(
        r"\d{3}", text.split("$25")[0]
    ), text
    assert "$25" in text and "12%" in text and MASKED.search(text), text
    words = [w for r in finals for w in r.channel.alternatives[0].words]
    markers = [w for w in words if w.word in ("[CREDIT_CARD]", "[NUMBER]")]
    assert markers  # one, or one a group when tiny.en ends each group with a full stop
    for marker in markers:  # the markers keep the times of the card's words
        assert spans[0][0] - 0.5 <= marker.start < marker.end <= spans[1][0] + 0.5, marker
    assert whisper_server.open_sessions() == 0


def test_redact_values_map_to_the_hubs_classes() -> None:
    from asrhub.errors import HubError
    from asrhub.transports.deepgram_options import redact_classes

    assert redact_classes(["pci", "ssn"]) == ("pci", "ssn")
    assert redact_classes(["credit_card,email_address", "phone_number", "true", "pci"]) == (
        "pci",
        "email",
        "phone",
        "numbers",
    )
    assert redact_classes(["false"]) == ()
    with pytest.raises(HubError, match="'phi'"):
        redact_classes(["pci", "phi"])


def test_paragraphs_split_at_sentences_and_pauses() -> None:
    from asrhub.frames import Word
    from asrhub.transports.deepgram_paragraphs import paragraphs

    said = [("Hello", 0.0), ("there.", 0.4), ("How", 0.8), ("are", 1.0), ("you?", 1.2), ("Fine.", 3.0)]
    words = [Word(w, t, t + 0.3, 0.9) for w, t in said]
    body = paragraphs(words, "Hello there. How are you? Fine.", 4.0)
    assert body["transcript"] == "\nHello there. How are you?\n\nFine."
    first, second = body["paragraphs"]
    assert [s["text"] for s in first["sentences"]] == ["Hello there.", "How are you?"]
    assert (first["start"], first["end"], first["num_words"]) == (0.0, 1.5, 5)
    assert second["sentences"] == [{"text": "Fine.", "start": 3.0, "end": 3.3}]
    untimed = paragraphs(None, "One. Two.", 2.0)
    assert untimed["transcript"] == "\nOne. Two." and len(untimed["paragraphs"]) == 1
    assert paragraphs(None, "", 1.0) == {"transcript": "", "paragraphs": []}
