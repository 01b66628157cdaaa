#!/usr/bin/env python3
"""Score the parity corpus with the reference VADER and write the expected vectors.

Reads  plugins/sentiment/tests/corpus.txt   (one input per line, split on "\\n" only)
Writes plugins/sentiment/tests/expected.jsonl
       {"text": ..., "neg": ..., "neu": ..., "pos": ..., "compound": ...} per line

Must run with vaderSentiment==3.3.2 (the PyPI release, not GitHub master) under CPython
3.11 or older: from 3.12 on, sum() of floats is compensated, which can move a score by one
unit in the last place and, rarely, flip a rounding.

    python3 -m venv /tmp/vader-venv
    /tmp/vader-venv/bin/pip install vaderSentiment==3.3.2
    /tmp/vader-venv/bin/python scripts/vader/gen_vectors.py
"""

import json
import sys
from importlib.metadata import version
from pathlib import Path

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "plugins" / "sentiment" / "tests"


def main():
    installed = version("vaderSentiment")
    if installed != "3.3.2":
        sys.exit(f"need vaderSentiment 3.3.2, found {installed}")
    if sys.version_info >= (3, 12):
        print("warning: Python >= 3.12 sums floats with compensation; vectors may differ "
              "in the last digit from the 3.11 ones checked in", file=sys.stderr)

    text = (TESTS / "corpus.txt").read_text(encoding="utf-8")
    # Not splitlines(): that would also split on \x1c, \x85, \u2028 ... inside lines.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()

    analyzer = SentimentIntensityAnalyzer()
    with open(TESTS / "expected.jsonl", "w", encoding="utf-8", newline="\n") as out:
        for line in lines:
            s = analyzer.polarity_scores(line)
            row = {"text": line, "neg": s["neg"], "neu": s["neu"], "pos": s["pos"],
                   "compound": s["compound"]}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(lines)} vectors to {(TESTS / 'expected.jsonl').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
