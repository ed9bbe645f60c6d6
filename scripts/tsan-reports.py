#!/usr/bin/env python3
"""Sorts the ThreadSanitizer reports in a test log (scripts/sanitizers.sh --all thread).

A report is the package's when a frame of either racing access is in the package's own code
(Sources/ or Tests/ of this checkout, not a dependency under .build*/checkouts/). Every other report
has both accesses inside dependencies: with the whole package under ThreadSanitizer those are the
dependencies' own Synchronization.Mutex (whose contended path, a futex in the uninstrumented
standard library, ThreadSanitizer cannot see: RELIABILITY.md) or the concurrency runtime's task
memory (also uninstrumented). Both kinds are printed, with the first frame of each access; the exit
status is 1 when the package has a report, else 0.

    scripts/tsan-reports.py LOG ROOT
"""
import re
import sys

log, root = sys.argv[1], sys.argv[2].rstrip("/") + "/"
text = open(log, errors="replace").read()
blocks = re.split(r"^=+\n(?=WARNING: ThreadSanitizer)", text, flags=re.M)
ours, theirs = [], []
for block in blocks:
    if not block.startswith("WARNING: ThreadSanitizer"):
        continue
    block = block.split("\nSUMMARY:")[0]
    # The racing accesses: from the warning to the heap block's or the threads' description.
    accesses = re.split(r"^  (?:Location is|Thread T|Mutex M)", block, maxsplit=1, flags=re.M)[0]
    frames = re.findall(r"^\s+#\d+ \S+ (\S+)", accesses, flags=re.M)
    package = [f for f in frames if f.startswith(root) and "/checkouts/" not in f and "/.build" not in f]
    first = [line.strip()[:160] for line in accesses.splitlines() if re.match(r"\s+#0 ", line)]
    (ours if package else theirs).append((block.splitlines()[0], first, package[:3]))

print(f"ThreadSanitizer: {len(ours)} report(s) in the package's code, {len(theirs)} inside dependencies only")
for title, first, package in ours:
    print(f"  PACKAGE: {title}")
    for line in first + package:
        print(f"    {line}")
for title, first, _ in theirs:
    print(f"  dependency: {title}")
    for line in first:
        print(f"    {line}")
sys.exit(1 if ours else 0)
