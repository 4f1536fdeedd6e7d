"""The reproduction cards (``docs/reproductions/``) cite only committed results, and are in sync with them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "docs" / "reproductions"
HEADINGS = (
    "## The paper's claim",
    "## The paper's protocol, and ours",
    "## Our numbers on the embedded MNIST sample",
    "## Verdict",
    "## Full-scale rows",
)


def test_every_card_has_the_sections_and_its_generated_numbers_are_current():
    cards = sorted(path for path in CARDS.glob("*.md") if path.name != "README.md")
    assert [path.stem for path in cards] == sorted(
        ["deep_defense", "flow_gradient", "gfa", "local_flatness", "pgd_at", "trades", "wnll_tvm"]
    )
    for card in cards:
        text = card.read_text()
        missing = [heading for heading in HEADINGS if heading not in text]
        assert not missing, f"{card.name} lacks {missing}"
    command = [sys.executable, str(ROOT / "benchmarks" / "cards.py"), "--check"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
