"""Errors that carry a wire-contract ``error`` code."""

from __future__ import annotations

from asrhub.frames import ErrorEvent


class HubError(Exception):
    """A request the hub refuses; ``code`` is the contract's snake_case error code."""

    def __init__(self, code: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal

    def to_event(self) -> ErrorEvent:
        return ErrorEvent(code=self.code, message=self.message, fatal=self.fatal)


class AudioTooLong(ValueError):
    """Decoded audio past a bound on its length (``too_large`` where it reaches a client)."""
