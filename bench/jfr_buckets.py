"""Where Gremlin Server's CPU went in a JFR recording, in the buckets bench/RESULTS.md reports for the stream write.

Usage: python bench/jfr_buckets.py A.jfr [B.jfr ...]   (recordings from ``bench/stream_write.py --jfr old,new``)

Each execution sample goes to the first bucket whose pattern its stack matches, in the order below, so a sample is
counted once and the buckets add up to 100%; the order puts the costs a traversal's shape can remove first.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys

BUCKETS = [
    ("closing child traversals", r"CloseableIterator\.closeIterator|Traversal\.close|TraversalParent\.close"),
    ("strategies: merge steps' own search traversals", r"(?s)applyStrategies.*Merge(Edge|Vertex)Step\.flatMap"),
    ("strategies: the request", r"applyStrategies"),
    ("TraverserSet.add / path hashing", r"TraverserSet\.add|Traverser\.hashCode|ImmutablePath\.hashCode"),
    ("merge steps: search and create", r"MergeEdgeStep|MergeVertexStep|MergeStep"),
    ("property reads and writes", r"AddPropertyStep|PropertiesStep|DropStep"),
    ("request decode", r"GraphBinary|Deserializer|ByteBuf|Bytecode"),
    ("other traversal execution / JVM", r""),
]


def buckets(recording: str) -> tuple[int, collections.Counter[str]]:
    """Samples in the recording and how many fell in each bucket."""
    text = subprocess.run(["jfr", "print", "--stack-depth", "80", "--events", "jdk.ExecutionSample", recording],
                          capture_output=True, text=True, check=True).stdout
    n, counts = 0, collections.Counter[str]()
    for sample in text.split("jdk.ExecutionSample {")[1:]:
        frames = re.findall(r"^\s+([\w$.<>]+)\(", sample, re.M)
        if frames:
            n += 1
            stack = "\n".join(frames)
            counts[next(name for name, pattern in BUCKETS if re.search(pattern, stack))] += 1
    return n, counts


def main() -> None:
    """Print one markdown table, a column per recording."""
    results = {path: buckets(path) for path in sys.argv[1:]}
    print("| bucket | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for name, _ in BUCKETS:
        print(f"| {name} | " + " | ".join(f"{c[name] / n * 100:.1f}%" for n, c in results.values()) + " |")
    print("| samples | " + " | ".join(str(n) for n, _ in results.values()) + " |")


if __name__ == "__main__":
    main()
