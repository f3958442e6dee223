"""The docs and the UI name only files a clone has: every relative Markdown link and every
`something.md` a doc or web/ file mentions must exist in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
MD_NAME = re.compile(r"[`(\s]((?:[\w.-]+/)*[\w.-]+\.md)\b")
# Files of third-party projects the docs cite by their upstream path (not ours to ship).
UPSTREAM = {"runtime/docs/websocket_protocol.md"}
WRITTEN = {"out.md"}  # a file a documented command writes


def sources() -> list[Path]:
    web = [p for p in (ROOT / "web").glob("*") if p.suffix in (".js", ".html", ".css")]
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(web)]


def exists(name: str, near: Path) -> bool:
    return (near.parent / name).exists() or (ROOT / name).exists() or any(ROOT.glob(f"**/{name}"))


def test_every_named_document_is_in_the_repository() -> None:
    missing = []
    for path in sources():
        text = path.read_text()
        for target in LINK.findall(text):
            if "://" not in target and not target.startswith("mailto:") and not exists(target, path):
                missing.append(f"{path.relative_to(ROOT)} links {target}")
        for name in MD_NAME.findall(text):
            if name not in UPSTREAM | WRITTEN and not exists(name, path):
                missing.append(f"{path.relative_to(ROOT)} names {name}")
    assert not missing, "\n".join(missing)


def test_the_check_sees_a_missing_file() -> None:
    assert MD_NAME.findall("see `shared/PROTOCOL.md` and (SEED-x.zh.md)") == [
        "shared/PROTOCOL.md",
        "SEED-x.zh.md",
    ]
    assert not exists("shared/PROTOCOL.md", ROOT / "README.md")
