"""``asrhub transcribe``: batch transcription of files, transcript on stdout.

    asrhub transcribe FILE… [--provider NAME[,FALLBACK…]] [--language L] [--prompt TEXT]
                     [--format text|json|srt|vtt] [--output-dir DIR] [--config FILE] [--set K=V]

Any accepted audio container (wav, flac, mp3, ogg/opus, webm, aac, m4a/mp4), up to
``limits.max_upload_s`` (one hour by default). Only the transcript
goes to stdout — progress, logs and errors go to stderr — so ``asrhub transcribe a.wav > a.txt``
gives exactly the text. With several files: ``text`` prints one line per file, ``json`` one
JSON object per line (with ``file``), in argument order; ``srt``/``vtt`` need ``--output-dir``,
which writes ``DIR/<name>.<format>`` per file for any format. Exit status: 0 when every file was
transcribed, 1 when some failed (each failure is reported on stderr), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

from asrhub.frames import Word

EXTENSIONS = {"text": "txt", "json": "json", "srt": "srt", "vtt": "vtt"}


def add_parser(subparsers: Any) -> None:
    from asrhub.settings.loader import add_settings_arguments

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "transcribe",
        help="transcribe audio files (transcript on stdout)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--provider", "-p", help="provider, or a comma-separated failover list")
    parser.add_argument("--language", "-l", help="language code, e.g. en")
    parser.add_argument("--prompt", help="vocabulary / context hint for engines that take one")
    parser.add_argument(
        "--model", "-m", help="one of the provider's models, e.g. base (multilingual whisper)"
    )
    parser.add_argument(
        "--task", choices=("transcribe", "translate"), default="transcribe", help="translate: English text"
    )
    parser.add_argument(
        "--keyterm",
        "-k",
        action="append",
        default=[],
        dest="keyterms",
        help="a name or term to favour (repeat)",
    )
    parser.add_argument("--format", "-f", choices=tuple(EXTENSIONS), default="text")
    parser.add_argument("--output-dir", "-o", type=Path, help="write DIR/<name>.<format> per file")
    add_settings_arguments(parser, server_flags=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asrhub.commands.loading import settings_or_report

    loaded = settings_or_report(args, "asrhub transcribe")
    if loaded is None:
        return 2
    settings = loaded.settings
    if args.format in ("srt", "vtt") and len(args.files) > 1 and args.output_dir is None:
        print(
            f"asrhub transcribe: --format {args.format} with several files needs --output-dir",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Any) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from asrhub.api import _settings_for, atranscribe_file, open_hub
    from asrhub.engine.registry import ProviderRegistry, UnknownProvider
    from asrhub.errors import HubError
    from asrhub.plugin import ProviderUnavailable

    provider = tuple(p.strip() for p in args.provider.split(",")) if args.provider else None
    console = Console(stderr=True)
    failures = 0
    async with AsyncExitStack() as stack:
        try:
            hub = await stack.enter_async_context(open_hub(_settings_for(settings, provider)))
        except UnknownProvider as exc:
            known = ", ".join(ProviderRegistry.from_entry_points().names())
            print(f"asrhub transcribe: unknown provider {exc.args[0]!r}; known: {known}", file=sys.stderr)
            return 2
        except (ProviderUnavailable, HubError) as exc:
            print(f"asrhub transcribe: {exc}", file=sys.stderr)
            return 2
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as progress:
            for path in args.files:
                task = progress.add_task(Path(path).name, total=None)

                def report(done: float, total: float, task: Any = task) -> None:
                    progress.update(task, completed=done, total=total)

                try:
                    result = await atranscribe_file(
                        path,
                        provider=provider,
                        language=args.language,
                        prompt=args.prompt,
                        hub=hub,
                        progress=report,
                        model=args.model,
                        task=args.task,
                        keyterms=tuple(args.keyterms),
                    )
                except (OSError, ValueError, HubError) as exc:
                    failures += 1
                    # one line per failure when stderr is a file or a pipe (rich would wrap it
                    # at 80 columns, splitting the path); the path is text, not markup
                    console.print(
                        f"[red]{escape(path)}[/red]: {escape(str(getattr(exc, 'message', None) or exc))}",
                        highlight=False,
                        soft_wrap=not console.is_terminal,
                    )
                    continue
                finally:
                    progress.remove_task(task)
                write(result, path, args)
    return 1 if failures else 0


def write(result: Any, path: str, args: argparse.Namespace) -> None:
    fmt = args.format
    if fmt == "text":
        body = result.text + "\n"
    elif fmt == "json":
        body = json.dumps({"file": path, **result.to_dict()}, ensure_ascii=False) + "\n"
    else:
        body = captions(result, fmt)
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / f"{Path(path).stem}.{EXTENSIONS[fmt]}").write_text(body, encoding="utf-8")
        return
    out: TextIO = sys.stdout
    out.write(body)
    out.flush()


# ---------------------------------------------------------------------- subtitles


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def cues(
    result: Any, max_chars: int = 84, max_s: float = 7.0, pause_s: float = 0.6
) -> list[tuple[float, float, str]]:
    """Subtitle cues: words grouped up to ``max_chars`` / ``max_s``, broken after sentence ends
    and pauses; segments as they are when the engine gave no word times."""
    out: list[tuple[float, float, str]] = []
    for final in result.segments:
        words: tuple[Word, ...] = final.words or ()
        if not words:
            if final.text.strip():
                out.append((final.start, final.end, final.text.strip()))
            continue
        group: list[Word] = []
        for word in words:
            if group and (
                len(" ".join(w.word for w in group)) + 1 + len(word.word) > max_chars
                or word.end - group[0].start > max_s
                or word.start - group[-1].end > pause_s
                or group[-1].word.endswith((".", "?", "!"))
            ):
                out.append((group[0].start, group[-1].end, " ".join(w.word for w in group)))
                group = []
            group.append(word)
        if group:
            out.append((group[0].start, group[-1].end, " ".join(w.word for w in group)))
    return out


def _lines(text: str, width: int = 42) -> str:
    if len(text) <= width or " " not in text:
        return text
    middle = len(text) // 2
    spaces = [i for i, c in enumerate(text) if c == " "]
    cut = min(spaces, key=lambda i: abs(i - middle))
    return text[:cut] + "\n" + text[cut + 1 :]


def captions(result: Any, fmt: str) -> str:
    if fmt == "srt":
        blocks = [
            f"{i}\n{_stamp(a, ',')} --> {_stamp(b, ',')}\n{_lines(t)}\n"
            for i, (a, b, t) in enumerate(cues(result), 1)
        ]
        return "\n".join(blocks)
    blocks = [f"{_stamp(a, '.')} --> {_stamp(b, '.')}\n{_lines(t)}\n" for a, b, t in cues(result)]
    return "WEBVTT\n\n" + "\n".join(blocks)
