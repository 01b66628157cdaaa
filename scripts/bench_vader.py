#!/usr/bin/env python3
"""Messages per second of the reference VADER (vaderSentiment 3.3.2) on one core.

Reads one message text per line on stdin, scores every text with
SentimentIntensityAnalyzer.polarity_scores, and prints one JSON object:

    {"version": "3.3.2", "messages": 2997, "runs": 7, "msgs_per_s": 12345.6}

`msgs_per_s` is the median over `--runs` passes of the scoring loop alone: reading stdin
and building the analyser (which loads the lexicon files) happen before the clock starts,
so the figure compares with the plugin's per-message cost and nothing else.

host/benches/sentiment.rs runs it with the venv's Python (`make venv`); by hand:

    .venv/bin/python scripts/bench_vader.py --runs 5 < texts.txt
"""

import argparse
import json
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="timed passes over the texts")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error(f"--runs must be at least 1, got {args.runs}")
    try:
        from importlib.metadata import version

        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as e:
        print(f"cannot import vaderSentiment ({e}): run `make venv`", file=sys.stderr)
        return 2

    # Split on "\n" only, as scripts/vader does: str.splitlines() would also break on
    # characters (U+2028, U+0085, ...) that can occur inside a chat message.
    texts = sys.stdin.buffer.read().decode("utf-8").split("\n")
    if texts and texts[-1] == "":
        texts.pop()
    if not texts:
        print("no texts on stdin", file=sys.stderr)
        return 2

    score = SentimentIntensityAnalyzer().polarity_scores
    rates = []
    for _ in range(args.runs):
        start = time.perf_counter()
        for t in texts:
            score(t)
        rates.append(len(texts) / (time.perf_counter() - start))
    print(
        json.dumps(
            {
                "version": version("vaderSentiment"),
                "messages": len(texts),
                "runs": args.runs,
                "msgs_per_s": statistics.median(rates),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
