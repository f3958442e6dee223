"""web/unconfirmed-audio.js in Node (no browser needed): the byte-stream bookkeeping behind the
page's resume — what is kept, what is re-sent from ``resume_from_bytes``, what a new session
gets, and that held-back audio is never dropped."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")

SCRIPT = """
import { UnconfirmedAudio } from "%s";
const frame = (n, v) => new Uint8Array(n).fill(v).buffer;
const bytes = (b) => [...new Uint8Array(b)];
const out = {};
// 1 kB/s so seconds are easy: keep 4 s of sent audio, hold at most 3 s unsent.
let s = new UnconfirmedAudio({bytesPerSecond: 1000, keepSeconds: 4, holdSeconds: 3});
for (let i = 0; i < 3; i++) s.capture(frame(1000, i));
out.held0 = s.heldBytes;
out.refused = s.capture(frame(1, 9));          // a 4th second would exceed the hold bound
out.sent = [s.next(), s.next()].map((b) => b.byteLength);
out.held1 = s.heldBytes;
s.confirm(1.5);                                 // a final ends at 1.5 s
out.oldestAfterConfirm = s.oldest;              // the chunk holding 1.5 s stays
s.rewind(1500);                                 // session.resumed: resume_from_bytes = 1500
const again = s.next();
out.resent = [again.byteLength, bytes(again)[0]];
out.cursorAfter = s.cursor;
// A new session (resume failed): the first unconfirmed byte becomes offset 0.
s.rebase();
out.rebased = [s.head, s.cursor, s.end, s.confirmed];
const first = s.next();
out.firstOfNew = [first.byteLength, bytes(first)[0]];
// Sent audio beyond keepSeconds is forgotten (oldest first); unsent audio never is.
let k = new UnconfirmedAudio({bytesPerSecond: 1000, keepSeconds: 2, holdSeconds: 3});
for (let i = 0; i < 6; i++) { k.capture(frame(1000, i)); k.next(); }
out.kept = [k.oldest, k.end];
let h = new UnconfirmedAudio({bytesPerSecond: 1000, keepSeconds: 2, holdSeconds: 3});
for (let i = 0; i < 10; i++) h.capture(frame(1000, i));
out.held = [h.oldest, h.heldBytes];
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def result() -> dict[str, object]:
    assert NODE, "node is installed by scripts/setup.sh (npm ci for web/)"
    module = (ROOT / "web" / "unconfirmed-audio.js").as_uri()
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", SCRIPT % module], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_held_back_audio_is_bounded_and_never_dropped(result: dict[str, object]) -> None:
    assert result["held0"] == 3000 and result["refused"] is False
    assert result["sent"] == [1000, 1000] and result["held1"] == 1000
    assert result["held"] == [0, 3000], "unsent audio is kept whole; the 4th second on is refused"


def test_resume_resends_from_the_hubs_offset(result: dict[str, object]) -> None:
    assert result["oldestAfterConfirm"] == 1000, "the chunk holding the final's end is kept"
    assert result["resent"] == [500, 1], "from byte 1500: the second half of chunk 1"
    assert result["cursorAfter"] == 2000


def test_a_new_session_gets_the_unconfirmed_audio(result: dict[str, object]) -> None:
    assert result["rebased"] == [0, 0, 1500, 0]
    assert result["firstOfNew"] == [500, 1], "starts at the final's end (1.5 s), not at the cursor"


def test_sent_audio_is_kept_only_up_to_its_bound(result: dict[str, object]) -> None:
    assert result["kept"] == [4000, 6000]
