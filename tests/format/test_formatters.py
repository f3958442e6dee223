"""The formatters (asrhub.format) on word lists: numerals in context and per language, the
redaction classes (Luhn-checked cards, valid SSNs, phones, e-mails, numbers), the profanity
mask, punctuation off — and the times of every merged token (start of the first word it
replaced, end of the last, their lowest probability)."""

from __future__ import annotations

import dataclasses

import pytest

from asrhub.config import FormatConfig, SessionConfig, parse_session_config, updated_config
from asrhub.format import (
    format_final,
    format_partial,
    format_text,
    format_transcription,
    format_with_stable,
    format_words,
)
from asrhub.frames import FinalTranscript, PartialTranscript, Word
from asrhub.plugin import TimedText, Transcription

NUMERALS = FormatConfig(numerals=True)
ALL = ("pci", "ssn", "numbers", "email", "phone")


def timed(text: str, gap: float = 0.1) -> list[Word]:
    """One word per token, 0.4 s each with ``gap`` between, probabilities falling 0.9, 0.89, …"""
    return [
        Word(t, round(i * (0.4 + gap), 3), round(i * (0.4 + gap) + 0.4, 3), round(0.9 - i * 0.01, 3))
        for i, t in enumerate(text.split())
    ]


def said(words: tuple[Word, ...]) -> str:
    return " ".join(w.word for w in words)


@pytest.mark.parametrize(
    ("spoken", "written"),
    [
        ("It costs twenty five dollars and fifty cents.", "It costs $25.50."),
        ("about twelve percent more", "about 12% more"),
        ("the rate is 12 %.", "the rate is 12%."),  # Whisper's own spacing, now and then
        ("Meet me at three thirty p.m. today", "Meet me at 3:30 PM today"),
        ("born in nineteen ninety nine", "born in 1999"),
        ("the twenty third of March", "the 23rd of March"),
        ("dial nine one one now", "dial 911 now"),
        ("twenty one, twenty two", "21, 22"),  # a comma keeps two numbers apart
        ("one of them", "one of them"),  # a lone small number stays a word (text2num's rule)
    ],
)
def test_numerals_in_context(spoken: str, written: str) -> None:
    assert format_text(spoken, NUMERALS, "en") == written


@pytest.mark.parametrize(
    ("language", "spoken", "written"),
    [
        ("fr", "vingt et un euros", "€21"),
        ("de", "ich habe zweiundzwanzig Äpfel", "ich habe 22 Äpfel"),
        ("es", "tengo veinticinco años", "tengo 25 años"),
        ("it", "ventitré anni", "23 anni"),
        ("ko", "twenty five", "twenty five"),  # not a text2num language: unchanged
    ],
)
def test_numerals_per_language(language: str, spoken: str, written: str) -> None:
    assert format_text(spoken, NUMERALS, language) == written


def test_a_merged_token_spans_the_words_it_replaced() -> None:
    words = timed("it costs twenty five dollars today")
    out = format_words(words, NUMERALS, "en")
    assert said(out) == "it costs $25 today"
    money = out[2]
    assert (money.start, money.end) == (words[2].start, words[4].end)
    assert money.probability == min(w.probability for w in words[2:5])
    assert out[3] == words[5]  # the words after it keep their own times


def test_a_pause_keeps_two_numbers_apart() -> None:
    words = [Word("twenty", 0.0, 0.3, 0.9), Word("five", 1.5, 1.8, 0.9)]  # 1.2 s between
    assert said(format_words(words, NUMERALS, "en")) == "20 5"


def test_pci_needs_the_luhn_check() -> None:
    redact = FormatConfig(redact=("pci",))
    assert format_text("card 4242 4242 4242 4242 thanks", redact) == "card [CREDIT_CARD] thanks"
    assert format_text("card 4242 4242 4242 4241 thanks", redact) == "card 4242 4242 4242 4241 thanks"


def test_a_card_said_digit_by_digit_is_redacted_with_its_times() -> None:
    words = timed("pay with four two four two four two four two four two four two four two four two now")
    out = format_words(words, FormatConfig(redact=("pci",)), "en")
    assert said(out) == "pay with [CREDIT_CARD] now"
    assert (out[2].start, out[2].end) == (words[2].start, words[17].end)
    assert out[2].probability == min(w.probability for w in words[2:18])


def test_a_card_inside_a_longer_run_of_digits_takes_the_run() -> None:
    """Whisper writes a card said in groups as "4242, 4242, …" and may repeat a group; the
    expiry date said with it goes too (Deepgram's pci: number, expiry, CVV)."""
    text = "My card number is 4242, 4242, 4242, 4242, 4242."
    assert format_text(text, FormatConfig(redact=("pci",))) == "My card number is [CREDIT_CARD]."
    expiry = "card 12 4242 4242 4242 4242 12 28, thanks"
    assert format_text(expiry, FormatConfig(redact=("pci",))) == "card [CREDIT_CARD], thanks"


def test_ssn_phone_numbers_and_email() -> None:
    redact = FormatConfig(redact=ALL)
    assert format_text("My SSN is 536-22-7351.", redact) == "My SSN is [SSN]."
    assert format_text("is 53622 7351", redact) == "is [SSN]"  # as Whisper heard it
    assert format_text("not an SSN: 000-12-3456", FormatConfig(redact=("ssn",))) == "not an SSN: 000-12-3456"
    assert format_text("call 555-123-4567 now", redact) == "call [PHONE_NUMBER] now"
    assert format_text("call 555 -123 -4567.", redact) == "call [PHONE_NUMBER]."
    assert format_text("call +44 20 7946 0958", redact) == "call [PHONE_NUMBER]"
    assert format_text("room 12 has 345 seats", redact) == "room 12 has [NUMBER] seats"
    assert format_text("mail ann.lee@example.com!", redact) == "mail [EMAIL_ADDRESS]!"
    assert format_text("write to ann dot lee at example dot com please", redact) == (
        "write to [EMAIL_ADDRESS] please"
    )
    assert format_text("write to ann at example.com", redact) == "write to [EMAIL_ADDRESS]"
    assert format_text("meet at noon", redact) == "meet at noon"


def test_only_the_classes_asked_for() -> None:
    text = "card 4242 4242 4242 4242, phone 555-123-4567, room 345"
    assert (
        format_text(text, FormatConfig(redact=("phone",)))
        == "card 4242 4242 4242 4242, phone [PHONE_NUMBER], room 345"
    )
    assert format_text(text, FormatConfig()) == text


def test_numerals_and_redaction_together() -> None:
    both = FormatConfig(numerals=True, redact=("pci",))
    spoken = (
        "it is four two four two four two four two four two four two four two four two and costs five dollars"
    )
    assert format_text(spoken, both) == "it is [CREDIT_CARD] and costs $5"


def test_profanity_mask_keeps_first_letter_and_punctuation() -> None:
    words = timed("This is bullshit. What the fuck?")
    out = format_words(words, FormatConfig(profanity_filter=True), "en")
    assert said(out) == "This is b*******. What the f***?"
    assert [(w.start, w.end) for w in out] == [(w.start, w.end) for w in words]
    assert (
        format_text("Scunthorpe assessment", FormatConfig(profanity_filter=True)) == "Scunthorpe assessment"
    )


def test_punctuation_off() -> None:
    off = FormatConfig(punctuate=False)
    assert (
        format_text('Hello, world. "Don\'t" stop — 3.5 e-mails?', off) == "Hello world Don't stop 3.5 e-mails"
    )


def test_speakers_survive_formatting() -> None:
    """A diarized word keeps its speaker through every formatter; a merged token takes its first
    word's (the Google long-running answer lost every speaker_tag to formatting once)."""
    words = [
        dataclasses.replace(w, speaker=i // 3)
        for i, w in enumerate(timed("Well, it costs twenty five dollars."))
    ]
    config = FormatConfig(numerals=True, profanity_filter=True, redact=ALL, punctuate=False)
    out = format_words(words, config, "en")
    assert said(out) == "Well it costs $25"
    assert [w.speaker for w in out] == [0, 0, 0, 1]


def test_a_partials_stable_part_is_formatted_with_its_text() -> None:
    """The stable prefix a batch engine's partial carries hides what its text hides."""
    config = FormatConfig(redact=("pci",), numerals=True)
    card = "four one one one one one one one one one one one one one one one"
    partial = PartialTranscript(1, f"my card is {card} thanks", 0.0, 6.0, stable=f"my card is {card}")
    out = format_partial(partial, config, "en")
    assert "four" not in out.text and "[CREDIT_CARD]" in out.text
    assert out.stable is not None and "four" not in out.stable and out.text.startswith(out.stable)


def test_a_final_keeps_its_fields_and_its_text_follows_its_words() -> None:
    words = tuple(timed("Pay twenty five dollars now."))
    final = FinalTranscript(1, "Pay twenty five dollars now.", 0.0, 2.4, "whisper", "en", words, 0.9)
    out = format_final(final, NUMERALS)
    assert out.text == "Pay $25 now." and said(out.words or ()) == out.text
    assert (out.segment_id, out.provider, out.language_probability) == (1, "whisper", 0.9)
    assert format_final(final, FormatConfig()) is final


def test_text_and_words_agree_when_the_engine_wrote_them_apart() -> None:
    """Whisper's text and its word list may differ in a comma or a space; formatted, the text is
    the formatted words, so both say [NUMBER] or both [CREDIT_CARD] — never one of each."""
    words = tuple(timed("My card is 4242, 4242, 4242, 4242."))
    final = FinalTranscript(1, "My card is 4242 4242. 4242 4242.", 0.0, 4.0, "whisper", "en", words)
    out = format_final(final, FormatConfig(redact=("pci", "numbers")))
    assert out.text == "My card is [CREDIT_CARD]." == said(out.words or ())


def test_a_final_whose_text_is_not_its_words_is_formatted_on_its_own() -> None:
    """Chinese: words are characters, the text has no spaces — the text is not rebuilt from them."""
    words = (Word("他", 0.0, 0.2, 1.0), Word("说", 0.2, 0.4, 1.0))
    final = FinalTranscript(1, "他说", 0.0, 0.4, "funasr", "zh", words)
    assert format_final(final, FormatConfig(profanity_filter=True)).text == "他说"


def test_partials_are_formatted_too() -> None:
    partial = PartialTranscript(3, "my card is 4242 4242 4242 4242", 0.0, 3.0)
    assert format_partial(partial, FormatConfig(redact=("pci",))).text == "my card is [CREDIT_CARD]"


def test_a_stable_prefix_is_formatted_with_its_text() -> None:
    """For ``transcript.partial.stable``: the stable words formatted as part of the whole text;
    a token spanning the boundary waits until all its words are stable."""
    money = FormatConfig(numerals=True)
    assert format_with_stable("it costs twenty five dollars", 3, money) == ("it costs $25", "it costs")
    assert format_with_stable("it costs twenty five dollars", 5, money) == ("it costs $25", "it costs $25")
    card = FormatConfig(redact=("pci",))
    text = "card 4242 4242 4242 4242 please"
    assert format_with_stable(text, 6, card) == ("card [CREDIT_CARD] please", "card [CREDIT_CARD] please")
    assert format_with_stable(text, 3, card) == ("card [CREDIT_CARD] please", "card")
    assert format_with_stable("so far so good", 2, FormatConfig()) == ("so far so good", "so far")


def test_a_file_transcription() -> None:
    words = tuple(timed("Call 555-123-4567. Thanks."))
    result = Transcription(
        "Call 555-123-4567. Thanks.",
        "en",
        words,
        segments=(TimedText("Call 555-123-4567.", 0.0, 1.0), TimedText("Thanks.", 1.0, 1.5)),
    )
    out = format_transcription(result, FormatConfig(redact=("phone",)))
    assert out.text == "Call [PHONE_NUMBER]. Thanks."
    assert [s.text for s in out.segments] == ["Call [PHONE_NUMBER].", "Thanks."]
    assert said(out.words or ()) == out.text


def test_the_session_config_validates_format() -> None:
    config = parse_session_config({"format": {"numerals": True, "redact": ["pci", "ssn"]}})
    assert config.format == FormatConfig(numerals=True, redact=("pci", "ssn"))
    assert list(config.to_dict()["format"]["redact"]) == ["pci", "ssn"]
    with pytest.raises(Exception, match="redact"):
        parse_session_config({"format": {"redact": ["names"]}})


def test_session_update_may_change_format() -> None:
    current = SessionConfig(format=FormatConfig(numerals=True))
    changed = updated_config(current, {"format": {"redact": ["pci"]}})
    assert changed.format == FormatConfig(numerals=True, redact=("pci",))  # merged field by field
