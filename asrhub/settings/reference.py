"""Generate docs/configuration.md from the settings object itself.

Every key, type, bound and default comes from the msgspec Structs in :mod:`asrhub.settings.schema`
(and :class:`asrhub.config.Limits`); every description is the docstring written under the field.
A test keeps the committed page equal to this output::

    python -m asrhub.settings.reference --write docs/configuration.md
    asrhub config reference            # the same text on stdout
"""

from __future__ import annotations

import argparse
import ast
import inspect
import itertools
import sys
import textwrap
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from asrhub.config import KeyLimits, Limits
from asrhub.settings.loader import (
    CLI_FLAGS,
    CONFIG_ENV,
    ENV_ALIASES,
    PROCESS_ENV,
    Key,
    dump_toml,
    env_name,
    toml_value,
)
from asrhub.settings.schema import Settings

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal right under a field) of a class."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def _rst_to_md(text: str) -> str:
    return text.replace("``", "`")


def type_text(tp: Any) -> str:
    bounds: list[str] = []
    while typing.get_origin(tp) is typing.Annotated:
        tp, *metas = typing.get_args(tp)
        for meta in metas:
            if isinstance(meta, msgspec.Meta):
                for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
                    limit = getattr(meta, attr)
                    if limit is not None:
                        bounds.append(f"{sign} {limit:g}")
    origin = typing.get_origin(tp)
    if origin is Literal:
        text = " \\| ".join(f'`"{v}"`' for v in typing.get_args(tp))
    elif origin in (typing.Union, types.UnionType):
        parts = [type_text(a) for a in typing.get_args(tp) if a is not type(None)]
        text = " or ".join(parts) + " (or unset)"
    elif origin in (tuple, list):
        text = f"list of {type_text(typing.get_args(tp)[0])}s"
    elif origin is dict:
        text = "table"
    else:
        text = {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, str(tp))
    return f"{text} ({', '.join(bounds)})" if bounds else text


def _aliases() -> dict[Key, str]:
    return {tuple(key.split(".")): name for name, key in ENV_ALIASES.items()}


def _flags() -> dict[Key, str]:
    return {tuple(key.split(".")): flag for flag, (key, _h) in CLI_FLAGS.items()}


def _rows(cls: type, prefix: Key) -> list[str]:
    docs = field_docs(cls)
    aliases, flags = _aliases(), _flags()
    rows = [
        "| Key | Type | Default | Environment | Description |",
        "|---|---|---|---|---|",
    ]
    for f in msgspec.structs.fields(cls):
        key = (*prefix, f.name)
        if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct):
            continue
        if typing.get_origin(f.type) is dict and not prefix:
            continue  # [providers.NAME]: a section of its own
        default = f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
        shown = "unset" if default is None else f"`{toml_value(default)}`"
        env = f"`{env_name(key)}`" + (f"<br>`{aliases[key]}`" if key in aliases else "")
        if typing.get_origin(f.type) is dict:  # a table of tables: its own section below
            shown, env = "empty", f"`{env_name((*key, 'NAME'))}__…`"
        doc = _rst_to_md(docs.get(f.name, ""))
        if key in flags:
            doc += f" CLI: `{flags[key]}`."
        rows.append(f"| `{f.name}` | {type_text(f.type)} | {shown} | {env} | {doc.strip()} |")
    return rows


def _section(title: str, cls: type, prefix: Key) -> list[str]:
    intro = _rst_to_md(" ".join(inspect.cleandoc(cls.__doc__ or "").split()))
    out = [f"## {title}", ""]
    if intro:
        out += [intro, ""]
    return [*out, *_rows(cls, prefix), ""]


def render() -> str:
    """The whole configuration reference, as Markdown."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from asrhub/settings/schema.py by `python -m asrhub.settings.reference --write "
        "docs/configuration.md`; do not edit by hand (a test compares them). -->",
        "",
        "A hub process has one settings object. It is built from three layers, each overriding "
        "the one before it key by key:",
        "",
        "1. a TOML file: `--config FILE`, or the file named by `$" + CONFIG_ENV + "`;",
        "2. `ASRHUB_…` environment variables;",
        "3. command-line flags (`--port`, …, and `--set KEY=VALUE` for any key).",
        "",
        "Everything is checked at start-up. An unknown key — a typo in the file, an `ASRHUB_…` "
        "variable that names no setting, a bad `--set` — stops the hub with a message that names "
        "the key, says where it came from and suggests the nearest real one; so does a value of "
        "the wrong type or out of bounds. `asrhub config show` prints the effective settings "
        "(API keys masked) with, for every value not at its default, where it was set.",
        "",
        "**Environment variables.** `ASRHUB_` + the key's path in upper case with `__` between "
        "levels: `ASRHUB_SERVER__PORT=9000`, `ASRHUB_LIMITS__MAX_SESSIONS=200`, "
        "`ASRHUB_PROVIDERS__WHISPER__MODEL=base`; top-level keys have no `__` "
        "(`ASRHUB_DEFAULT_PROVIDER=vosk`). Lists are comma-separated "
        "(`ASRHUB_API_KEYS=key1,key2`). Provider options are read as TOML values when they parse "
        'as one (`4`, `true`, `"text"`), otherwise as text. Short aliases:',
        "",
        "| Variable | Key |",
        "|---|---|",
        *[f"| `{name}` | `{key}` |" for name, key in ENV_ALIASES.items()],
        "",
        "Setting both a key's alias and its long form is an error. These `ASRHUB_…` variables "
        "are not settings and are left alone:",
        "",
        "| Variable | Meaning |",
        "|---|---|",
        *[f"| `{name}` | {_rst_to_md(text)} |" for name, text in PROCESS_ENV.items()],
        "",
        "**Command line.** `asrhub serve` (and `asrhub config show`) take `--config FILE`, "
        "`--set KEY=VALUE` (repeatable; the value is read as TOML, else as text: "
        "`--set limits.max_sessions=200`, `--set log.level=debug`) and these flags:",
        "",
        "| Flag | Key |",
        "|---|---|",
        *[f"| `{flag}` | `{key}` |" for flag, (key, _h) in CLI_FLAGS.items()],
        "",
    ]
    lines += _section("Top level", Settings, ())
    for f in msgspec.structs.fields(Settings):
        if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct):
            lines += _section(f"[{f.name}]", f.type, (f.name,))
    per_key = _rows(KeyLimits, ("limits", "per_key", "KEY-ID"))
    lines += [
        '## [limits.per_key."KEY-ID"]',
        "",
        _rst_to_md(" ".join(field_docs(Limits)["per_key"].split())) + " A key's fingerprint is "
        '`"key-"` and the first 12 hex digits of the SHA-256 of the key '
        "(`python -c \"from asrhub.door.keys import fingerprint; print(fingerprint('KEY'))\"`, or "
        "`GET /v1/usage` with that key). An entry that is not a fingerprint stops the hub (without "
        "echoing it: it may be a key written there by mistake).",
        "",
        *per_key,
        "",
        "## [providers.NAME]",
        "",
        _rst_to_md(field_docs(Settings)["providers"]) + " Each provider documents its own options "
        "(`asrhub providers` lists the installed ones). A table also enables its provider unless "
        "`enabled_providers` is set. Environment form: `ASRHUB_PROVIDERS__NAME__OPTION`; option "
        "names containing `key`, `secret`, `token` or `password` are masked by `asrhub config show`.",
        "",
        "A provider's `model` option chooses the model its sessions get, by the name sessions and "
        'the APIs use for it: `[providers.whisper] model = "base"` (or '
        "`ASRHUB_PROVIDERS__WHISPER__MODEL=base asrhub serve`) makes the installed multilingual "
        "base the model of sessions that name none (otherwise: the bundled `tiny.en`). A model that is not "
        "installed stops `asrhub serve` with a message listing the installed ones and how to add "
        "one. `asrhub providers` shows each provider's models; docs/providers.md every option.",
        "",
        "## The complete default file",
        "",
        "```toml",
        dump_toml(msgspec.to_builtins(Settings())).rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asrhub.settings.reference", description=__doc__)
    parser.add_argument("--write", metavar="PATH", type=Path, help="write the page there instead of stdout")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        args.write.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
