#!/usr/bin/env python3
"""Backup export and restore against skopeo, on the same generated images, in one run.

Starts a Distribution registry on loopback as the mirror and pushes 5 images into it (about
500 MiB: one 50 MiB base layer they all share and two 45 MiB layers of their own each, random
bytes in stored gzip, so incompressible like real layers). Then, 3 runs each, median reported:

- export with `compression: none`: `lifeboat backup export` (one archive holding every image)
  against `skopeo copy --all docker://… oci-archive:…`, one copy per image, since an
  oci-archive holds one image: skopeo's figures are the sum over the 5 copies (peak RSS: the
  largest), and its archives hold the shared base 5 times;
- export with `compression: zstd`, Lifeboat only: skopeo has no compression option for
  oci-archive;
- restore of the uncompressed archive into a fresh, empty registry for every run (skopeo's
  blob-info cache and cross-repository mounts would otherwise make repeats no-ops):
  `lifeboat restore` against one `skopeo copy --all oci-archive:… docker://…` per image, summed.

After every restore the manifest digests and blobs in the new registry are checked against the
source; any difference stops the bench. Throughput is the corpus (the unique bytes in the mirror)
over wall time, for both tools. Lifeboat's export includes its read-back verification of the
archive (and an fsync), and its restore verifies the whole archive before pushing; skopeo does
none of these. Every command starts after a `sync`, so none pays for another's writeback.
Prints every figure and the ratio Lifeboat / skopeo. Nothing outside 127.0.0.1 is contacted.

Usage: bench/backup.py [--scale F] [--runs R]   (F < 1 shrinks every size, for a quick look)
"""

import argparse
import glob
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from measure import measured
from mirror import MIB, ROOT, Registry, make_layer, push_image, request

IMAGES = 5
TAG = "1.0"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def desired_state(work, mirror, refs, destination):
    """A folder with the mirror Registry and two BackupPolicies over `refs`: `bench`
    (uncompressed) and `bench-zstd`."""
    d = os.path.join(work, "desired")
    os.makedirs(d)
    images = ", ".join(f'"{r}"' for r in refs)
    text = f"apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: mirror}}\nspec: {{host: \"{mirror}\", insecure: true}}\n"
    for name, compression in (("bench", "none"), ("bench-zstd", "zstd")):
        text += (
            f"---\napiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: {name}}}\nspec:\n"
            f"  schedule: \"0 3 * * *\"\n  images: [{images}]\n  destination: {destination}\n  compression: {compression}\n"
        )
    with open(os.path.join(d, "desired.yaml"), "w") as f:
        f.write(text)
    return d


def run(command, **kwargs):
    """`measured`, after writing back every dirty page: otherwise the previous command's
    archive (or the one just deleted) is flushed on this command's time."""
    os.sync()
    return measured(command, **kwargs)


def check_restored(host, source, who):
    """Every image in `host` has the source's manifest digest and every blob; exits otherwise."""
    problems = []
    for repo, (digest, blobs) in source.items():
        response, body = request(host, "GET", f"/v2/{repo}/manifests/{TAG}", headers={"Accept": OCI_MANIFEST})
        got = "sha256:" + hashlib.sha256(body).hexdigest()
        if response.status != 200 or got != digest:
            problems.append(f"{repo}:{TAG}: manifest {got} (HTTP {response.status}), source {digest}")
            continue
        for blob, size in blobs:
            head, _ = request(host, "HEAD", f"/v2/{repo}/blobs/{blob}")
            if head.status != 200 or int(head.getheader("Content-Length") or -1) != size:
                problems.append(f"{repo}: blob {blob} HTTP {head.status}, length {head.getheader('Content-Length')}, source {size}")
    if problems:
        sys.exit(f"DIGEST CHECK FAILED after the {who} restore:\n  " + "\n  ".join(problems))


def summed(results):
    """One figure from several commands run one after another: times add up, RSS is the largest."""
    return {"wall": sum(r.wall for r in results), "rss": max(r.rss for r in results),
            "user": sum(r.user for r in results), "sys": sum(r.sys for r in results)}


def median(runs):
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def row(label, ours, peer, fmt, higher_better=False):
    theirs = fmt(peer) if peer is not None else "n/a"
    ratio = f"ratio {ours / peer:.2f}" if peer else ""
    note = " (higher is better)" if higher_better and peer else ""
    print(f"{label:<30} lifeboat {fmt(ours):>16}   skopeo {theirs:>16}   {ratio}{note}")


def report(label, ours, peer, corpus_mib):
    secs = lambda v: f"{v:.2f} s"
    row(f"{label} (wall)", ours["wall"], peer and peer["wall"], secs)
    row(f"{label} (throughput)", corpus_mib / ours["wall"], peer and corpus_mib / peer["wall"],
        lambda v: f"{v:.0f} MiB/s", higher_better=True)
    row(f"{label} (peak RSS)", ours["rss"], peer and peer["rss"], lambda v: f"{v:.0f} MiB")
    cpu = lambda m: f"{m['user']:.2f}+{m['sys']:.2f} s"
    total = lambda m: m["user"] + m["sys"]
    print(f"{label + ' (CPU user+sys)':<30} lifeboat {cpu(ours):>16}   skopeo {cpu(peer) if peer else 'n/a':>16}   "
          + (f"ratio {total(ours) / total(peer):.2f}" if peer else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    scale = args.scale

    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    target = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"))
    lifeboat = os.path.join(target, "release", "lifeboat")
    work = tempfile.mkdtemp(prefix="lifeboat-bench-")
    registries = []
    try:
        mirror = Registry(work, "mirror")
        registries.append(mirror)

        t0 = time.time()
        base = make_layer(work, "base", int(50 * MIB * scale))
        source, refs = {}, []
        for i in range(1, IMAGES + 1):
            own = [make_layer(work, f"app{i}-{n}", int(45 * MIB * scale)) for n in (1, 2)]
            repo = f"bench/app{i}"
            digest, _ = push_image(mirror.host, repo, TAG, [base] + own)
            _, body = request(mirror.host, "GET", f"/v2/{repo}/manifests/{TAG}", headers={"Accept": OCI_MANIFEST})
            manifest = json.loads(body)
            source[repo] = (digest, [(d["digest"], d["size"]) for d in [manifest["config"]] + manifest["layers"]])
            refs.append(f"{mirror.host}/{repo}:{TAG}")
            for layer in own:
                os.remove(layer[0])
        os.remove(base[0])
        unique = {blob for _, blobs in source.values() for blob in blobs}
        corpus_mib = sum(size for _, size in unique) / MIB
        print(f"corpus: {IMAGES} images, {len(unique)} blobs, {corpus_mib:.0f} MiB in the mirror (generated in {time.time() - t0:.0f} s)")

        state = desired_state(work, mirror.host, refs, os.path.join(work, "out"))
        subprocess.run([lifeboat, "validate", state], check=True, stdout=subprocess.DEVNULL)
        skopeo_tmp = os.path.join(work, "skopeo-tmp")  # skopeo stages a layout there, both ways
        os.makedirs(skopeo_tmp)
        skopeo = ["skopeo", "copy", "--tmpdir", skopeo_tmp, "--all"]

        # Export: each run into folders of its own, deleted afterwards but for the last run's
        # archives, which the restores read.
        export_none, export_zstd, export_skopeo = [], [], []
        sizes = {}
        for n in range(args.runs):
            last = n == args.runs - 1
            for policy, results in (("bench", export_none), ("bench-zstd", export_zstd)):
                out = os.path.join(work, f"out-{policy}-{n}")
                with open(os.path.join(work, "export.json"), "w+") as stdout:
                    m = run([lifeboat, "backup", "export", state, "--policy", policy, "--destination", out,
                                  "--timeout", "120s", "-o", "json"], stdout=stdout)
                    stdout.seek(0)
                    archive = json.load(stdout)["archive"]
                results.append(summed([m]))
                sizes[policy] = os.path.getsize(archive)
                if policy == "bench" and last:
                    ours_archive = archive
                else:
                    shutil.rmtree(out)
            out = os.path.join(work, f"out-skopeo-{n}")
            os.makedirs(out)
            copies = []
            for repo in source:
                file = os.path.join(out, repo.replace("/", "-") + ".tar")
                copies.append(run(skopeo + ["--src-tls-verify=false", f"docker://{mirror.host}/{repo}:{TAG}",
                                                 f"oci-archive:{file}:{TAG}"]))
            export_skopeo.append(summed(copies))
            sizes["skopeo"] = sum(os.path.getsize(f) for f in glob.glob(os.path.join(out, "*.tar")))
            if last:
                theirs_dir = out
            else:
                shutil.rmtree(out)

        # Restore: a fresh registry for every run of either tool, checked, then removed.
        restore_ours, restore_theirs = [], []
        for n in range(args.runs):
            target_registry = Registry(work, f"restore-lifeboat-{n}")
            registries.append(target_registry)
            m = run([lifeboat, "restore", ours_archive, "--to", target_registry.host, "--insecure",
                          "--timeout", "120s", "-o", "json"])
            restore_ours.append(summed([m]))
            check_restored(target_registry.host, source, "lifeboat")
            target_registry.stop()
            registries.remove(target_registry)
            shutil.rmtree(target_registry.dir)

            target_registry = Registry(work, f"restore-skopeo-{n}")
            registries.append(target_registry)
            copies = []
            for repo in source:
                file = os.path.join(theirs_dir, repo.replace("/", "-") + ".tar")
                copies.append(run(skopeo + ["--dest-tls-verify=false", f"oci-archive:{file}:{TAG}",
                                                 f"docker://{target_registry.host}/{repo}:{TAG}"]))
            restore_theirs.append(summed(copies))
            check_restored(target_registry.host, source, "skopeo")
            target_registry.stop()
            registries.remove(target_registry)
            shutil.rmtree(target_registry.dir)

        print(f"\nmedian of {args.runs} runs; skopeo: sum of {IMAGES} copies, one per image (peak RSS: the largest)")
        report("export, none", median(export_none), median(export_skopeo), corpus_mib)
        report("export, zstd", median(export_zstd), None, corpus_mib)
        report("restore, none", median(restore_ours), median(restore_theirs), corpus_mib)
        row("archive size, none", sizes["bench"] / MIB, sizes["skopeo"] / MIB, lambda v: f"{v:.0f} MiB")
        row("archive size, zstd", sizes["bench-zstd"] / MIB, None, lambda v: f"{v:.0f} MiB")
        print("skopeo has no compression option for oci-archive; its archives hold the shared base once per image")
        print(f"digests after every restore: equal to the source ({args.runs} runs x 2 tools)")
    finally:
        for r in registries:
            r.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
