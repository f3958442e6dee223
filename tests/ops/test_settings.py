"""Configuration: file < environment < CLI, validation errors that name the key and its source."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asrhub.config import Limits
from asrhub.settings import reference as config_reference
from asrhub.settings.loader import (
    Override,
    SettingsError,
    add_settings_arguments,
    dump_toml,
    load,
    load_from_args,
    load_settings,
    masked,
    show,
)
from asrhub.settings.schema import Settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "asrhub.toml"
    path.write_text(text)
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_without_any_source() -> None:
    assert load_settings(env={}) == Settings()


def test_precedence_file_then_env_then_cli(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        default_provider = "vosk"
        [server]
        port = 7000
        host = "0.0.0.0"
        [limits]
        max_sessions = 10
        max_pending_segments = 5
        [log]
        level = "warning"
        """,
    )
    env = {"ASRHUB_SERVER__PORT": "8000", "ASRHUB_LIMITS__MAX_SESSIONS": "20", "ASRHUB_LOG_LEVEL": "error"}
    args = parse(["--config", str(path), "--port", "9000", "--set", "limits.max_sessions=30"])
    loaded = load_from_args(args, env=env)
    s = loaded.settings
    assert s.server.port == 9000  # CLI over env over file
    assert s.limits.max_sessions == 30  # --set over env over file
    assert s.log.level == "error"  # env over file
    assert s.server.host == "0.0.0.0"  # file only
    assert s.limits.max_pending_segments == 5  # file only, neighbours in the table untouched
    assert s.default_provider == "vosk"
    assert s.limits.idle_timeout_s == Limits().idle_timeout_s  # default
    assert loaded.origins[("server", "port")] == "--port"
    assert loaded.origins[("limits", "max_sessions")] == "--set limits.max_sessions"
    assert loaded.origins[("log", "level")] == "environment variable ASRHUB_LOG_LEVEL"
    assert loaded.origins[("server", "host")] == str(path)


def test_env_forms_lists_and_provider_options() -> None:
    env = {
        "ASRHUB_PORT": "9100",
        "ASRHUB_API_KEYS": "key-one, key-two,",
        "ASRHUB_DEFAULT_PROVIDER": "none",
        "ASRHUB_ENABLED_PROVIDERS": "whisper,vosk",
        "ASRHUB_LIMITS__MAX_UTTERANCE_S": "12.5",
        "ASRHUB_PROVIDERS__WHISPER__WORKERS": "2",
        "ASRHUB_PROVIDERS__WHISPER__MODEL": "tiny.en",
        "ASRHUB_PROVIDERS__OPENAI__STRICT": "true",
        "ASRHUB_MODEL_DIR": "/somewhere",  # a process variable, not a setting
        "HOME": "/root",
    }
    s = load_settings(env=env)
    assert s.server.port == 9100
    assert s.server.api_keys == ("key-one", "key-two")
    assert s.default_provider == "none"
    assert s.enabled_providers == ("whisper", "vosk")
    assert s.limits.max_utterance_s == 12.5
    assert s.providers == {"whisper": {"workers": 2, "model": "tiny.en"}, "openai": {"strict": True}}


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 7100\n")
    assert load_settings(env={"ASRHUB_CONFIG": str(path)}).server.port == 7100
    other = tmp_path / "other.toml"
    other.write_text("[server]\nport = 7200\n")
    assert load_settings(other, env={"ASRHUB_CONFIG": str(path)}).server.port == 7200


def test_provider_tables_merge_key_by_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[providers.whisper]\nmodel = "tiny.en"\nbeam_size = 5\n')
    s = load_settings(path, env={"ASRHUB_PROVIDERS__WHISPER__BEAM_SIZE": "1"})
    assert s.providers == {"whisper": {"model": "tiny.en", "beam_size": 1}}


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[server]\nprot = 1\n", "server.prot", "did you mean 'server.port'"),
        ("[limits]\nmax_sesions = 1\n", "limits.max_sesions", "did you mean 'limits.max_sessions'"),
        ("port = 1\n", "port", "did you mean 'server.port'"),
        ("[bogus]\nx = 1\n", "bogus", "unknown key 'bogus'"),
        ("[server]\nport = -5\n", "server.port", ">= 0"),
        ('[server]\nport = "80"\n', "server.port", "Expected `int`, got `str`"),
        ('[log]\nlevel = "loud"\n', "log.level", "loud"),
        ("[limits]\nmax_utterance_s = 1000\n", "limits.max_utterance_s", "<= 600"),
        ("server = 3\n", "server", "Expected `object`"),
        ("[server]\napi_keys = [1]\n", "server.api_keys", "Expected `str`"),
    ],
)
def test_file_errors_name_key_and_file(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(path, env={})
    assert info.value.key == key
    assert info.value.source == str(path)
    assert repr(key) in str(info.value) and str(path) in str(info.value)
    assert fragment in str(info.value)


def test_broken_toml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = \n")
    with pytest.raises(SettingsError, match=r"asrhub.toml: not valid TOML: .*line 2"):
        load_settings(path, env={})
    with pytest.raises(SettingsError, match=r"not found: .*missing\.toml"):
        load_settings(tmp_path / "missing.toml", env={})


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"ASRHUB_PROT": "1"}, "ASRHUB_PROT", "did you mean ASRHUB_PORT?"),
        ({"ASRHUB_MAX_SESSIONS": "1"}, "ASRHUB_MAX_SESSIONS", "did you mean ASRHUB_LIMITS__MAX_SESSIONS?"),
        ({"ASRHUB_SERVER__PORT": "x"}, "ASRHUB_SERVER__PORT", "Expected `int`, got `str`"),
        ({"ASRHUB_PORT": "70000"}, "ASRHUB_PORT", "<= 65535"),
        ({"ASRHUB_LOG_LEVEL": "loud"}, "ASRHUB_LOG_LEVEL", "'log.level'"),
        ({"ASRHUB_SERVER": "1"}, "ASRHUB_SERVER", "is a table"),
        ({"ASRHUB_PORT": "1", "ASRHUB_SERVER__PORT": "2"}, "ASRHUB_SERVER__PORT", "both set"),
    ],
)
def test_env_errors_name_the_variable(env: dict[str, str], variable: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env=env)
    assert variable in str(info.value)
    assert fragment in str(info.value)


def test_env_level_is_case_insensitive() -> None:
    assert load_settings(env={"ASRHUB_LOG_LEVEL": "DEBUG"}).log.level == "debug"


def test_cli_errors_name_the_flag() -> None:
    with pytest.raises(SettingsError, match=r"'limits.max_sesions' \(from --set limits.max_sesions\)"):
        load_from_args(parse(["--set", "limits.max_sesions=3"]), env={})
    with pytest.raises(SettingsError, match=r"'server.port' \(from --port\)"):
        load_from_args(parse(["--port", "eighty"]), env={})
    with pytest.raises(SettingsError, match="expected KEY=VALUE"):
        load_from_args(parse(["--set", "limits.max_sessions"]), env={})


def test_set_values_are_typed_as_toml() -> None:
    s = load_from_args(
        parse(
            [
                "--set",
                "limits.idle_timeout_s=2.5",
                "--set",
                "server.allowed_origins=*",
                "--set",
                'providers.whisper.model="small"',
                "--api-key",
                "a",
                "--api-key",
                "b",
            ]
        ),
        env={},
    ).settings
    assert s.limits.idle_timeout_s == 2.5
    assert s.server.allowed_origins == ("*",)
    assert s.server.api_keys == ("a", "b")
    assert s.providers == {"whisper": {"model": "small"}}
    assert load_settings(env={}, overrides=[Override("log.format", "json")]).log.format == "json"


def test_show_masks_keys_and_round_trips(tmp_path: Path) -> None:
    secret = "sk-0123456789abcdefSECRET"
    path = write(tmp_path, f'[providers.openai]\napi_key = "{secret}"\nmodel = "whisper-1"\n')
    loaded = load(path, env={"ASRHUB_API_KEYS": "a-very-long-client-key-1234,short"})
    text = show(loaded)
    assert secret not in text and "a-very-long-client-key-1234" not in text and '"short"' not in text
    assert '"****1234"' in text and '"****"' in text and "****CRET" in text
    assert "# environment variable ASRHUB_API_KEYS" in text
    data = tomllib.loads(text)  # valid TOML that loads back into the same settings, masks aside
    assert data["providers"]["openai"]["model"] == "whisper-1"
    assert msgspec.convert(data, Settings) == msgspec.convert(masked(loaded.settings), Settings)


@given(
    port=st.integers(0, 65535),
    host=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20),
    keys=st.lists(st.text(max_size=10).filter(lambda t: "\x00" not in t), max_size=3),
    timeout=st.floats(0.001, 1e6, allow_nan=False),
)
def test_dump_toml_round_trips(port: int, host: str, keys: list[str], timeout: float) -> None:
    data = {"server": {"port": port, "host": host, "api_keys": keys}, "limits": {"idle_timeout_s": timeout}}
    assert tomllib.loads(dump_toml(data)) == data


def test_config_command(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_sessions = 12\n")
    run = [sys.executable, "-m", "asrhub", "config"]
    env = {"PATH": "/usr/bin:/bin", "ASRHUB_API_KEYS": "client-key-0123456789"}
    ok = subprocess.run(
        [*run, "show", "--config", str(path), "--port", "9999"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    shown = tomllib.loads(ok.stdout)
    assert shown["limits"]["max_sessions"] == 12 and shown["server"]["port"] == 9999
    assert shown["server"]["api_keys"] == ["****6789"]
    bad = subprocess.run(
        [*run, "show"], capture_output=True, text=True, env={**env, "ASRHUB_LIMITS__MAX_SESIONS": "3"}
    )
    assert bad.returncode == 2
    assert "ASRHUB_LIMITS__MAX_SESIONS" in bad.stderr and "ASRHUB_LIMITS__MAX_SESSIONS" in bad.stderr
    ref = subprocess.run([*run, "reference"], capture_output=True, text=True, env=env, check=True)
    assert ref.stdout == config_reference.render()


def test_committed_reference_matches_the_generator() -> None:
    committed = config_reference.DOC_PATH.read_text(encoding="utf-8")
    assert committed == config_reference.render(), (
        "docs/configuration.md is stale: "
        "run python -m asrhub.settings.reference --write docs/configuration.md"
    )


def test_reference_documents_every_key() -> None:
    text = config_reference.render()
    for section in ("server", "limits", "log", "metrics"):
        cls = type(getattr(Settings(), section))
        for field in msgspec.structs.fields(cls):
            assert f"| `{field.name}` |" in text, f"{section}.{field.name} missing"
            assert f"ASRHUB_{section.upper()}__{field.name.upper()}" in text
    undocumented = [
        f"{cls.__name__}.{name}"
        for cls in (Settings, *(type(getattr(Settings(), s)) for s in ("server", "limits", "log", "metrics")))
        for name in (f.name for f in msgspec.structs.fields(cls))
        if not isinstance(getattr(Settings(), name, None), msgspec.Struct)
        and name not in config_reference.field_docs(cls)
    ]
    assert undocumented == []
