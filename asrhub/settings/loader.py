"""Build the one :class:`~asrhub.settings.schema.Settings` of a hub process from three layers.

Later layers win, key by key::

    defaults  <  TOML file (--config FILE or $ASRHUB_CONFIG)  <  ASRHUB_… variables  <  CLI flags

Environment variables name a key with ``__`` between levels, upper case:
``ASRHUB_SERVER__PORT=9000``, ``ASRHUB_LIMITS__MAX_SESSIONS=200``,
``ASRHUB_PROVIDERS__WHISPER__MODEL=tiny.en``; top-level keys need no ``__``
(``ASRHUB_DEFAULT_PROVIDER=vosk``). A few short aliases are documented in :data:`ENV_ALIASES`
(``ASRHUB_PORT``, ``ASRHUB_API_KEYS``, …). List values are comma-separated. Free-form provider
options are read as TOML literals when they parse as one (``4``, ``true``), else as text.

Every key is checked against the settings object before anything is converted: an unknown key,
in the file, the environment or a ``--set`` flag, is an error that names it, says where it came
from and suggests the nearest real key. A bad value is reported the same way (msgspec does the
validation; we add the key's origin to its message).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

from asrhub.settings.schema import Settings

Key = tuple[str, ...]

ENV_PREFIX = "ASRHUB_"
CONFIG_ENV = "ASRHUB_CONFIG"

ENV_ALIASES: dict[str, str] = {
    "ASRHUB_HOST": "server.host",
    "ASRHUB_PORT": "server.port",
    "ASRHUB_API_KEYS": "server.api_keys",
    "ASRHUB_ALLOWED_ORIGINS": "server.allowed_origins",
    "ASRHUB_LOG_LEVEL": "log.level",
    "ASRHUB_LOG_FORMAT": "log.format",
}
"""Short names for the most used keys, next to the general ``ASRHUB_SECTION__KEY`` form."""

PROCESS_ENV: dict[str, str] = {
    CONFIG_ENV: "path of the TOML configuration file (``--config`` wins)",
    "ASRHUB_MODEL_DIR": "where scripts/setup.sh puts (and the hub finds) wake-word models and whisper base",
    "ASRHUB_SETUP_FORCE": "``1`` makes scripts/setup.sh redo every step",
    "ASRHUB_WEB_DIR": "serve the browser UI from this directory instead of the bundled web/",
    "ASRHUB_API_KEY": "the key clients (``asrhub stream``) send; the hub's own keys are ``ASRHUB_API_KEYS``",
}
"""``ASRHUB_…`` variables that are not settings keys; every other ``ASRHUB_…`` variable must be one."""

SECRET_KEY = re.compile(r"key|secret|token|password", re.IGNORECASE)


class SettingsError(ValueError):
    """A configuration the hub refuses to start with; the message names the key and its source."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.source = source


@dataclass(frozen=True)
class Override:
    """One value set on the command line: ``key`` is dotted (``server.port``)."""

    key: str
    value: Any
    source: str = "command line"


@dataclass
class Loaded:
    settings: Settings
    origins: dict[Key, str] = field(default_factory=dict)
    """Where each key that is not at its default was set (a file path, a variable, a flag)."""


# ---------------------------------------------------------------------------------- schema


class _Free:
    """Marker: a free-form value (inside a provider's table)."""


FREE = _Free()


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _is_table(tp: Any) -> bool:
    return _is_struct(tp) or typing.get_origin(_strip(tp)) is dict


def _children(tp: Any) -> list[str]:
    return [f.name for f in msgspec.structs.fields(tp)] if _is_struct(tp) else []


def resolve(key: Key) -> Any:
    """The declared type of a key (a Struct class for a section, :data:`FREE` inside a free
    table). Raises :class:`KeyError` with the suggestion text when the key does not exist."""
    tp: Any = Settings
    for i, part in enumerate(key):
        if tp is FREE:
            return FREE
        if _is_struct(tp):
            types = {f.name: f.type for f in msgspec.structs.fields(tp)}
            if part not in types:
                close = difflib.get_close_matches(part, list(types), n=1)
                if close:
                    raise KeyError(f"; did you mean {'.'.join((*key[:i], close[0]))!r}?")
                elsewhere = [k for k in _leaf_keys() if k[-1] == part]
                raise KeyError(f"; did you mean {_dotted(elsewhere[0])!r}?" if elsewhere else "")
            tp = types[part]
        elif typing.get_origin(_strip(tp)) is dict:
            value_type = typing.get_args(_strip(tp))[1]
            tp = FREE if value_type is Any else value_type
        else:
            raise KeyError(f"; {'.'.join(key[:i])!r} is a value, not a table")
    return tp


def _dotted(key: Key) -> str:
    return ".".join(key)


def _resolve_or_fail(key: Key, source: str, what: str | None = None) -> Any:
    try:
        return resolve(key)
    except KeyError as exc:
        hint = exc.args[0] if exc.args else ""
        name = what or f"key {_dotted(key)!r}"
        raise SettingsError(
            f"unknown {name} (from {source}){hint}", key=_dotted(key), source=source
        ) from None


# ---------------------------------------------------------------------------------- layers


@dataclass
class _Layer:
    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[Key, str] = field(default_factory=dict)

    def set(self, key: Key, value: Any, source: str) -> None:
        node = self.values
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = value
        self.origins[key] = source


def read_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[Key, str]]:
    """Parse a TOML file and check every key in it. Returns the values and their origins."""
    source = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"configuration file not found: {source}", source=source) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{source}: not valid TOML: {exc}", source=source) from None
    origins: dict[Key, str] = {}

    def walk(table: dict[str, Any], prefix: Key) -> None:
        for name, value in table.items():
            key = (*prefix, name)
            tp = _resolve_or_fail(key, source)
            if isinstance(value, dict) and tp is not FREE and _is_table(tp):
                walk(value, key)
            else:
                origins[key] = source

    walk(data, ())
    return data, origins


def _parse_literal(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _is_sequence(tp: Any) -> bool:
    tp = _strip(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_sequence(arg) for arg in typing.get_args(tp))
    return typing.get_origin(tp) in (tuple, list)


def coerce(value: Any, tp: Any, *, key: Key, source: str) -> Any:
    """Turn a text value (environment, command line) into the key's type, or fail naming both."""
    if tp is FREE:
        return _parse_literal(value) if isinstance(value, str) else value
    if _is_table(tp):
        raise SettingsError(
            f"{_dotted(key)!r} is a table; set its keys one by one (from {source})",
            key=_dotted(key),
            source=source,
        )
    if isinstance(value, str):
        stripped = _strip(tp)
        if _is_sequence(tp):
            value = [item.strip() for item in value.split(",") if item.strip()]
        elif typing.get_origin(stripped) is Literal and value.lower() in typing.get_args(stripped):
            value = value.lower()
    try:
        return msgspec.convert(value, tp, strict=False)
    except msgspec.ValidationError as exc:
        message = re.sub(r" - at `\$.*`$", "", str(exc))
        raise SettingsError(
            f"invalid value {value!r} for {_dotted(key)!r} (from {source}): {message}",
            key=_dotted(key),
            source=source,
        ) from None


def env_key(name: str) -> Key | None:
    """The settings key an ``ASRHUB_…`` variable sets; None for process variables and others."""
    if not name.startswith(ENV_PREFIX) or name in PROCESS_ENV:
        return None
    if name in ENV_ALIASES:
        return tuple(ENV_ALIASES[name].split("."))
    return tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))


def env_name(key: Key) -> str:
    """The general ``ASRHUB_SECTION__KEY`` variable for a key."""
    return ENV_PREFIX + "__".join(part.upper() for part in key)


def read_env(env: Mapping[str, str]) -> _Layer:
    layer = _Layer()
    for name in sorted(env):
        key = env_key(name)
        if key is None:
            continue
        source = f"environment variable {name}"
        try:
            tp = resolve(key)
        except KeyError as exc:
            known = [*ENV_ALIASES, *PROCESS_ENV, *(env_name(k) for k in _leaf_keys())]
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
            hint = f"; did you mean {close[0]}?" if close else (exc.args[0] if exc.args else "")
            raise SettingsError(
                f"unknown environment variable {name}: {_dotted(key)!r} is not a setting{hint}",
                key=_dotted(key),
                source=source,
            ) from None
        if key in layer.origins:
            raise SettingsError(
                f"{name} and {layer.origins[key].removeprefix('environment variable ')} both set "
                f"{_dotted(key)!r}; keep one",
                key=_dotted(key),
                source=source,
            )
        layer.set(key, coerce(env[name], tp, key=key, source=source), source)
    return layer


def _leaf_keys(tp: Any = Settings, prefix: Key = ()) -> list[Key]:
    keys: list[Key] = []
    for name in _children(tp):
        key = (*prefix, name)
        child = resolve(key)
        if _is_struct(child):
            keys.extend(_leaf_keys(child, key))
        else:
            keys.append(key)
    return keys


def read_overrides(overrides: Sequence[Override]) -> _Layer:
    layer = _Layer()
    for item in overrides:
        key = tuple(item.key.split("."))
        tp = _resolve_or_fail(key, item.source)
        layer.set(key, coerce(item.value, tp, key=key, source=item.source), item.source)
    return layer


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for name, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(name), Mapping):
            out[name] = _merge(out[name], value)
        else:
            out[name] = value
    return out


# ---------------------------------------------------------------------------------- public API


def load(
    config_file: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[Override] = (),
) -> Loaded:
    """Read the three layers and validate the result. Raises :class:`SettingsError`."""
    env = os.environ if env is None else env
    if config_file is None and env.get(CONFIG_ENV):
        config_file = env[CONFIG_ENV]
    merged: dict[str, Any] = {}
    origins: dict[Key, str] = {}
    if config_file is not None:
        values, file_origins = read_file(config_file)
        merged = _merge(merged, values)
        origins.update(file_origins)
    for layer in (read_env(env), read_overrides(overrides)):
        merged = _merge(merged, layer.values)
        for key, source in layer.origins.items():  # a later layer hides what it replaces
            for old in [k for k in origins if k[: len(key)] == key or key[: len(k)] == k]:
                del origins[old]
            origins[key] = source
    try:
        settings = msgspec.convert(merged, Settings, strict=True)
    except msgspec.ValidationError as exc:
        raise _explain(exc, merged, origins) from None
    return Loaded(settings, origins)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[Override] = (),
) -> Settings:
    return load(config_file, env=env, overrides=overrides).settings


def _explain(exc: msgspec.ValidationError, merged: dict[str, Any], origins: dict[Key, str]) -> SettingsError:
    text = str(exc)
    match = re.search(r"^(.*) - at `\$(.*)`$", text)
    if match is None:
        return SettingsError(f"invalid configuration: {text}")
    message, path = match.groups()
    key: Key = tuple(re.findall(r"\.([A-Za-z0-9_\-]+)", path.split("[", 1)[0]))
    source = next((origins[key[:n]] for n in range(len(key), 0, -1) if key[:n] in origins), "defaults")
    value: Any = merged
    for part in key:
        value = value.get(part) if isinstance(value, dict) else None
    shown = f" = {value!r}" if value is not None and not isinstance(value, dict) else ""
    return SettingsError(
        f"invalid setting {_dotted(key)!r}{shown} (from {source}): {message}",
        key=_dotted(key),
        source=source,
    )


# ---------------------------------------------------------------------------------- CLI


CLI_FLAGS: dict[str, tuple[str, str]] = {
    "--host": ("server.host", "address to listen on"),
    "--port": ("server.port", "TCP port to listen on"),
    "--workers": ("server.workers", "processes sharing the port (0: one per CPU core)"),
    "--grpc-port": ("server.grpc_port", "also serve Google Cloud Speech v1 over gRPC on this port"),
    "--wyoming-port": ("server.wyoming_port", "also serve Wyoming (Home Assistant) on this port"),
    "--api-key": ("server.api_keys", "require this API key (repeatable; prefer ASRHUB_API_KEYS)"),
    "--default-provider": ("default_provider", "provider for sessions that name none"),
    "--log-level": ("log.level", "debug, info, warning or error"),
    "--log-format": ("log.format", "auto, json or console"),
}
"""Dedicated flags; any other key is reachable with ``--set KEY=VALUE``."""


def add_settings_arguments(parser: argparse.ArgumentParser, *, server_flags: bool = True) -> None:
    """Add ``--config``, ``--set`` and the dedicated flags (``server_flags=False`` leaves out the
    server ones for commands whose ``--host``/``--port`` mean something else). Destinations are
    prefixed ``cfg_`` so they never collide with a command's own arguments."""
    group = parser.add_argument_group("configuration (file < ASRHUB_… environment < these flags)")
    group.add_argument(
        "--config", dest="cfg_file", metavar="FILE", help=f"TOML file (default: ${CONFIG_ENV})"
    )
    for flag, (key, help_text) in CLI_FLAGS.items():
        if not server_flags and not key.startswith("log."):
            continue
        dest = "cfg_" + flag[2:].replace("-", "_")
        if flag == "--api-key":
            group.add_argument(flag, dest=dest, action="append", metavar="KEY", help=help_text)
        else:
            group.add_argument(flag, dest=dest, metavar=key.rsplit(".", 1)[-1].upper(), help=help_text)
    group.add_argument(
        "--set",
        dest="cfg_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting by its dotted key, e.g. --set limits.max_sessions=200 (repeatable)",
    )


def overrides_from_args(args: argparse.Namespace) -> list[Override]:
    overrides: list[Override] = []
    for flag, (key, _help) in CLI_FLAGS.items():
        value = getattr(args, "cfg_" + flag[2:].replace("-", "_"), None)
        if value is not None:
            overrides.append(Override(key, value, flag))
    for item in getattr(args, "cfg_set", None) or []:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise SettingsError(f"--set {item!r}: expected KEY=VALUE", source="--set")
        key = name.strip()
        overrides.append(Override(key, _parse_literal(raw.strip()), f"--set {key}"))
    return overrides


def load_from_args(args: argparse.Namespace, *, env: Mapping[str, str] | None = None) -> Loaded:
    """What a command calls: file from ``--config`` (or $ASRHUB_CONFIG), then env, then flags."""
    return load(getattr(args, "cfg_file", None), env=env, overrides=overrides_from_args(args))


# ---------------------------------------------------------------------------------- TOML out


def mask_secret(value: str) -> str:
    return "****" + value[-4:] if len(value) >= 16 else "****"


def masked(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with API keys and secret-looking provider options masked."""
    data: dict[str, Any] = msgspec.to_builtins(settings)
    data["server"]["api_keys"] = [mask_secret(k) for k in settings.server.api_keys]
    for options in data.get("providers", {}).values():
        for name, value in list(options.items()):
            if SECRET_KEY.search(name) and isinstance(value, str) and value:
                options[name] = mask_secret(value)
    return data


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_key(name: str) -> str:
    return name if _BARE.match(name) else _toml_string(name)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = repr(value)
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(text, text)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def dump_toml(data: Mapping[str, Any], *, comments: Mapping[Key, str] | None = None) -> str:
    """Write plain data as TOML (tables for nested mappings; ``None`` becomes a comment)."""
    comments = comments or {}
    lines: list[str] = []

    def table(node: Mapping[str, Any], prefix: Key) -> None:
        for name, value in node.items():
            if isinstance(value, Mapping):
                continue
            key = (*prefix, name)
            note = f"  # {comments[key]}" if key in comments else ""
            if value is None:
                lines.append(f"# {_toml_key(name)} = (not set){note}")
            else:
                lines.append(f"{_toml_key(name)} = {toml_value(value)}{note}")
        for name, value in node.items():
            if isinstance(value, Mapping):
                key = (*prefix, name)
                if any(not isinstance(v, Mapping) for v in value.values()):
                    if lines:
                        lines.append("")
                    lines.append("[" + ".".join(_toml_key(k) for k in key) + "]")
                table(value, key)

    table(data, ())
    return "\n".join(lines) + "\n"


def show(loaded: Loaded) -> str:
    """``asrhub config show``: the effective settings as TOML, secrets masked, origins noted."""
    return dump_toml(masked(loaded.settings), comments=loaded.origins)
