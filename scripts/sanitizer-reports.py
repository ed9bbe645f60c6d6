#!/usr/bin/env python3
"""Sorts the sanitizer reports of a whole-package run (scripts/sanitizers.sh --all).

    scripts/sanitizer-reports.py thread|address LOG ROOT

ThreadSanitizer: a report is the package's when a frame of either racing access is in the
package's own code (Sources/ or Tests/ under ROOT, not a dependency under .build*/checkouts/).
Every other report has both accesses inside dependencies: with the whole package under
ThreadSanitizer those are the dependencies' own Synchronization.Mutex (whose contended path, a
futex in the uninstrumented standard library, ThreadSanitizer cannot see: RELIABILITY.md) or the
concurrency runtime's task memory (also uninstrumented).

AddressSanitizer: every memory error is the package's. A leak (LeakSanitizer) is the library's when
its allocation stack has a frame in one of the library's modules (Sources/ under ROOT, except the
test-only LoadBalancerTestServers and ConsulTestServer); the others were allocated by the tests and
their servers (RELIABILITY.md says what they are).

Both kinds are printed, with the first frames; the exit status is 1 when the package has a report.
"""
import re
import sys

sanitizer, log, root = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("/") + "/"
text = open(log, errors="replace").read()
TEST_ONLY = ("LoadBalancerTestServers", "ConsulTestServer")


def package_frames(block, tests_count):
    frames = re.findall(r"^\s+#\d+ (?:0x[0-9a-f]+ in )?\S+ (\S+)", block, flags=re.M)
    ours = []
    for frame in frames:
        if not frame.startswith(root) or "/checkouts/" in frame or "/.build" in frame:
            continue
        relative = frame[len(root):]
        if relative.startswith("Tests/") and not tests_count:
            continue
        if relative.startswith("Sources/") and not tests_count and relative.split("/")[1] in TEST_ONLY:
            continue
        ours.append(frame)
    return ours


ours, theirs = [], []
if sanitizer == "thread":
    for block in re.split(r"^=+\n(?=WARNING: ThreadSanitizer)", text, flags=re.M):
        if not block.startswith("WARNING: ThreadSanitizer"):
            continue
        # The racing accesses: from the warning to the heap block's or the threads' description.
        accesses = re.split(r"^  (?:Location is|Thread T|Mutex M)", block.split("\nSUMMARY:")[0], maxsplit=1, flags=re.M)[0]
        first = [line.strip()[:160] for line in accesses.splitlines() if re.match(r"\s+#0 ", line)]
        package = package_frames(accesses, tests_count=True)
        (ours if package else theirs).append((block.splitlines()[0], first, package[:3]))
else:
    for error in re.findall(r"^==\d+==ERROR: AddressSanitizer: .*$", text, flags=re.M):
        ours.append((error, [], []))
    for block in re.split(r"\n(?=(?:Direct|Indirect) leak of)", text):
        if not re.match(r"(Direct|Indirect) leak of", block):
            continue
        block = block.split("\n\n")[0]
        frames = [line.strip()[:160] for line in block.splitlines()[1:6]]
        package = package_frames(block, tests_count=False)
        (ours if package else theirs).append((block.splitlines()[0], frames if package else frames[3:5], package[:3]))

name = "ThreadSanitizer" if sanitizer == "thread" else "AddressSanitizer/LeakSanitizer"
print(f"{name}: {len(ours)} report(s) in the package's code, {len(theirs)} outside it")
for title, first, package in ours:
    print(f"  PACKAGE: {title}")
    for line in first + package:
        print(f"    {line}")
for title, first, _ in theirs[:40]:
    print(f"  outside: {title}")
    for line in first:
        print(f"    {line}")
if len(theirs) > 40:
    print(f"  ... and {len(theirs) - 40} more outside the package (whole log: {log})")
sys.exit(1 if ours else 0)
