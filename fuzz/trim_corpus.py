#!/usr/bin/env python3
"""Trim a fuzz corpus to a few dozen files: the hand-written seeds (`seed_*`) plus, greedily,
the inputs that add the most coverage edges not yet covered, up to a cap.

`cargo fuzz cmin` keeps every input that adds any coverage feature (hundreds of files here);
this keeps the corpus small enough to live in the repository. Run from the repository root
after `cargo +nightly fuzz build` (see fuzz/README.md):

    python3 fuzz/trim_corpus.py <target> [cap=40]
"""
import os
import shutil
import subprocess
import sys
import tempfile

target = sys.argv[1]
cap = int(sys.argv[2]) if len(sys.argv) > 2 else 40
corpus = os.path.join("fuzz", "corpus", target)
binary = os.path.join("fuzz", "target", "x86_64-unknown-linux-gnu", "release", target)

with tempfile.TemporaryDirectory() as scratch:
    control = os.path.join(scratch, "control")
    empty = os.path.join(scratch, "empty")
    os.mkdir(empty)
    # A merge records each input's coverage edges in the control file (edges only, no
    # hit counts: -use_counters=0).
    subprocess.run(
        [binary, "-merge=1", "-use_counters=0", f"-merge_control_file={control}", empty, corpus],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lines = open(control).read().split("\n")
    count = int(lines[0])
    files = lines[2 : 2 + count]
    edges = {i: set() for i in range(count)}
    for line in lines[2 + count :]:
        if line.startswith("COV "):
            fields = line.split()
            edges[int(fields[1])] = set(map(int, fields[2:]))

picked = [i for i, f in enumerate(files) if os.path.basename(f).startswith("seed_")]
covered = set().union(*(edges[i] for i in picked))
while len(picked) < cap:
    best = max(range(count), key=lambda i: (len(edges[i] - covered), -os.path.getsize(files[i])))
    if not edges[best] - covered:
        break
    picked.append(best)
    covered |= edges[best]

keep = {files[i] for i in picked}
for f in files:
    if f not in keep:
        os.remove(f)
total = len(set().union(*edges.values()))
print(f"{target}: kept {len(keep)} of {count} files, {len(covered)} of {total} edges")
