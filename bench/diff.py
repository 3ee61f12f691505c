#!/usr/bin/env python3
"""Offline diff of two generated desired states of 10,000 images each.

Builds Lifeboat in release mode, writes a base and a head revision into a temporary Git
repository (40 MirrorSets of 250 images, a PrePullSet and a BackupPolicy over all of them),
then times `lifeboat diff` and, as the peer on the same revisions, `git diff --stat`. Prints
each median wall time, Lifeboat's peak RSS, and the ratio Lifeboat / git.

Usage: bench/diff.py [--images N] [--runs R]
"""

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

from measure import timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "apiVersion: lifeboat.dev/v1alpha1\n"


def digest(text):
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def mirror_set(index, images, head):
    """One MirrorSet. The head revision adds a tag to every 50th tagged image, removes every 97th,
    moves every 61st digest pin, and changes the schedule of every 10th set."""
    schedule = "*/30 * * * *" if head and index % 10 == 0 else "0 * * * *"
    lines = [
        HEADER,
        "kind: MirrorSet\n",
        f"metadata: {{name: set-{index:03}}}\n",
        "spec:\n",
        f"  target: mirror.example:5000/m{index:03}\n",
        f'  schedule: "{schedule}"\n',
        "  images:\n",
    ]
    for i in range(images):
        n = index * images + i
        if head and n % 97 == 0:
            continue
        source = f"vendor.example/team{n % 17}/app{n}"
        if n % 5 == 0:
            pin = digest(f"{n}-{'b' if head and n % 61 == 0 else 'a'}")
            lines.append(f"    - source: {source}@{pin}\n      tag: pinned\n")
        else:
            tags = ['"1.0"', '"1.1"'] + (['"1.2"'] if head and n % 50 == 1 else [])
            lines.append(f"    - source: {source}\n      tags: [{', '.join(tags)}]\n")
    return "".join(lines)


def write_state(repo, sets, per_set, head):
    os.makedirs(os.path.join(repo, "mirrors"), exist_ok=True)
    names = []
    for s in range(sets):
        with open(os.path.join(repo, "mirrors", f"set-{s:03}.yaml"), "w") as f:
            f.write(mirror_set(s, per_set, head))
        names.append(f"set-{s:03}")
    listing = ", ".join(names)
    with open(os.path.join(repo, "nodes.yaml"), "w") as f:
        f.write(f"{HEADER}kind: PrePullSet\nmetadata: {{name: all}}\nspec:\n  mirrorSets: [{listing}]\n")
    with open(os.path.join(repo, "backup.yaml"), "w") as f:
        f.write(
            f"{HEADER}kind: BackupPolicy\nmetadata: {{name: all}}\nspec:\n"
            f'  schedule: "0 3 * * *"\n  destination: /backups\n  retention: {{keep: 7}}\n'
            f"  mirrorSets: [{listing}]\n"
        )


def git(repo, *args):
    subprocess.run(
        ["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def timed_runs(command, runs):
    """Median wall seconds over `runs`, and the peak RSS in MiB of any single run."""
    results = [timed(command, ok=(0, 1)) for _ in range(runs)]
    return statistics.median(w for w, _ in results), max(r for _, r in results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sets = 40
    per_set = args.images // sets

    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    lifeboat = os.path.join(ROOT, "target", "release", "lifeboat")

    with tempfile.TemporaryDirectory() as repo:
        git(repo, "init", "-q")
        write_state(repo, sets, per_set, head=False)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "base")
        write_state(repo, sets, per_set, head=True)
        git(repo, "commit", "-qam", "head")

        check = subprocess.run(
            [lifeboat, "diff", "--repo", repo, "--base", "HEAD~1", "-o", "json"], capture_output=True, text=True
        )
        if check.returncode != 1:
            sys.exit(f"lifeboat diff exited {check.returncode}: {check.stderr}")
        import json

        summary = json.loads(check.stdout)["summary"]

        ours, rss = timed_runs([lifeboat, "diff", "--repo", repo, "--base", "HEAD~1", "-o", "json"], args.runs)
        peer, _ = timed_runs(["git", "-C", repo, "diff", "--stat", "HEAD~1", "HEAD"], args.runs)

    print(f"images per revision:       {sets * per_set}")
    print(f"diff found:                {summary}")
    print(f"lifeboat diff (release):   {ours * 1000:.0f} ms median of {args.runs}, peak RSS {rss:.0f} MiB")
    print(f"git diff --stat (peer):    {peer * 1000:.0f} ms median of {args.runs}")
    print(f"ratio lifeboat/git:        {ours / peer:.1f}x")


if __name__ == "__main__":
    main()
