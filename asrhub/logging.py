"""Structured logs for a hub process, configured once by the CLI (never by the library).

* one line per event, JSON when stderr is not a terminal (``log.format = "auto"``), a readable
  console rendering on a terminal; ``json`` / ``console`` force one;
* the hub's own structlog loggers and the stdlib loggers of aiohttp, python-socketio and
  engine.io go through the same processors and the same handler, so every line has the same
  shape and honours ``log.level``;
* lines about a session carry ``session_id``, ``provider`` and ``transport``: the hub binds them
  into ``SessionContext.log``, which is what operators, providers and transports log through;
* one-shot commands (``transcribe``, ``stream``, ``providers``) log at ``warning`` unless
  ``log.level`` is set (:func:`configure_command`): their output is their result, and a hub's
  ``info`` lines (models loaded, hub ready) are for the operator of a server;
* a line written under a trace span (:mod:`asrhub.telemetry`) carries its ``trace_id`` and
  ``span_id``;
* nothing is logged per audio frame. aiohttp's access log (one line per HTTP request, and the
  HTTP streaming transport makes one request per audio frame) is kept at ``warning`` unless the
  level is ``debug``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import msgspec
import structlog
from structlog.typing import Processor

from asrhub.settings.loader import Loaded
from asrhub.settings.schema import LogSettings
from asrhub.telemetry import add_trace_ids

HANDLER_NAME = "asrhub"
QUIET_UNLESS_DEBUG = ("aiohttp.access",)
"""Loggers that write per request; held at ``warning`` unless the level is ``debug``."""


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure(settings: LogSettings | None = None, *, stream: TextIO | None = None) -> str:
    """Route structlog and stdlib logging to ``stream`` (stderr). Returns the format chosen.

    Calling it again replaces the previous configuration (no duplicated handlers).
    """
    settings = settings or LogSettings()
    stream = stream if stream is not None else sys.stderr
    terminal = _is_terminal(stream)
    fmt = settings.format if settings.format != "auto" else ("console" if terminal else "json")
    level = logging.getLevelNamesMapping()[settings.level.upper()]

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    final: list[Processor]
    if fmt == "json":
        final = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        final = [structlog.dev.ConsoleRenderer(colors=terminal)]

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_UNLESS_DEBUG:
        logging.getLogger(name).setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
    return fmt


ONE_SHOT_LEVEL = "warning"
"""The level of a one-shot command whose ``log.level`` is not set (``serve`` keeps ``info``)."""


def configure_command(loaded: Loaded | None, *, stream: TextIO | None = None) -> str:
    """:func:`configure` for a one-shot command: ``log`` as ``loaded`` says (None: the
    defaults), at :data:`ONE_SHOT_LEVEL` unless ``log.level`` was set in a file, the
    environment or a flag."""
    settings = loaded.settings.log if loaded is not None else LogSettings()
    if loaded is None or ("log", "level") not in loaded.origins:
        settings = msgspec.structs.replace(settings, level=ONE_SHOT_LEVEL)
    return configure(settings, stream=stream)


def reset() -> None:
    """Undo :func:`configure` (for tests and embedding applications)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    for name in QUIET_UNLESS_DEBUG:
        logging.getLogger(name).setLevel(logging.NOTSET)
    structlog.reset_defaults()


def get_logger(name: str, **context: Any) -> LibraryLogger:
    """The logger every asrhub module logs through, named like the module, ``context`` bound."""
    return LibraryLogger(name, context)


class LibraryLogger:
    """A library's logger that configures nothing.

    When the application configured structlog (``asrhub serve`` does, through :func:`configure`),
    each call goes to ``structlog.get_logger(name)`` with the bound context, so lines have the
    configured shape. When nobody did (a program embedding a ``Hub``), it goes to stdlib logging
    under ``name`` as ``event key=value …``: Python's defaults then show warnings and errors on
    stderr and nothing else — and structlog's global defaults are left as the application has
    them (the library never calls ``structlog.configure``).
    """

    __slots__ = ("context", "name")

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self.name, self.context = name, dict(context or {})

    def bind(self, **more: Any) -> LibraryLogger:
        return LibraryLogger(self.name, {**self.context, **more})

    def _log(self, level: str, event: str, kw: dict[str, Any]) -> None:
        if structlog.is_configured():
            getattr(structlog.get_logger(self.name).bind(**self.context), level)(event, **kw)
            return
        logger = logging.getLogger(self.name)
        number = logging.ERROR if level == "exception" else logging.getLevelNamesMapping()[level.upper()]
        if logger.isEnabledFor(number):
            exc_info = kw.pop("exc_info", level == "exception")
            fields = " ".join(f"{k}={v!r}" for k, v in {**self.context, **kw}.items())
            logger.log(number, "%s %s", event, fields, exc_info=exc_info)

    def debug(self, event: str, **kw: Any) -> None:
        self._log("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._log("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._log("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._log("error", event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        self._log("exception", event, kw)
