"""The compatible APIs are served by the same real hub (faster-whisper tiny.en, keys required)
as the transport tests: one server per test session."""

from tests.transports.conftest import sdk, whisper_server  # noqa: F401
