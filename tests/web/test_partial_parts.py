"""web/realtime-ui-manager.js in Node: how the page splits a partial into the stable words it
shows in the text's own style and the tail it dims (issue 25, item 3)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")

SCRIPT = """
import { partialParts } from "%s";
const cases = [
  {text: "please deliver the package", stable: "please deliver"},
  {text: " please deliver ", stable: "please deliver"},
  {text: "please deliver the", stable: ""},
  {text: "front left"},
  {text: "front left", stable: "rear"},
  {text: "", stable: ""},
];
console.log(JSON.stringify(cases.map(partialParts)));
"""


def test_stable_words_and_tail() -> None:
    assert NODE, "node is installed by scripts/setup.sh (npm ci for web/)"
    module = (ROOT / "web" / "realtime-ui-manager.js").as_uri()
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", SCRIPT % module], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"stable": "please deliver", "tail": "the package"},
        {"stable": "please deliver", "tail": ""},
        {"stable": "", "tail": "please deliver the"},
        {"stable": "", "tail": "front left"},  # an engine without stable words: all of it may change
        {"stable": "", "tail": "front left"},  # not a prefix of the text: shown as unsettled
        {"stable": "", "tail": ""},
    ]
