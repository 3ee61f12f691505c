#!/usr/bin/env python3
"""Mirror engine against skopeo, on the same generated images, in one run.

Starts Distribution registries on loopback (an upstream, and an empty mirror for each tool),
generates a corpus in the upstream (about 40 images and 2 GB: shared base layers, 4
multi-platform indexes), then times Lifeboat (release build) and `skopeo sync --all`:
full sync, no-op re-sync, peak RSS. (`skopeo sync --scoped` cannot be used: it puts the
source host into the destination path, and a host with a port makes an invalid reference;
without it skopeo keeps the last path component, and the corpus' names are unique.) Then a 2 GiB single-layer image with `lifeboat apply`
against `skopeo copy --all`, and a no-op re-sync of 1,000 tags with requests counted per tag
from the registries' access logs. Prints every figure and the ratio Lifeboat / skopeo.

Usage: bench/mirror.py [--scale F]   (F < 1 shrinks every size, for a quick look)
"""

import argparse
import gzip
import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from measure import timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20


class Registry:
    """A docker-registry process with its own storage and an access log on disk."""

    def __init__(self, work, name):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        config = os.path.join(self.dir, "config.yml")
        with open(config, "w") as f:
            f.write(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {self.dir}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n"
            )
        self.log_path = os.path.join(self.dir, "log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(["docker-registry", "serve", config], stdout=self.log, stderr=self.log)
        deadline = time.time() + 10
        while time.time() < deadline:
            with open(self.log_path) as f:
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", f.read())
            if m:
                self.host = f"127.0.0.1:{m.group(1)}"
                return
            time.sleep(0.02)
        sys.exit(f"{name} registry did not start")

    def log_size(self):
        return os.path.getsize(self.log_path)

    def requests_since(self, offset):
        with open(self.log_path) as f:
            f.seek(offset)
            return [m.group(1) for m in re.finditer(r'"([A-Z]+ \S+) HTTP/1\.1"', f.read())]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def request(host, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(host, timeout=300)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def push_blob(host, repo, path_or_bytes):
    """Monolithic upload (POST, then PUT with the body), streamed from a file."""
    if isinstance(path_or_bytes, bytes):
        data, digest, size = path_or_bytes, "sha256:" + hashlib.sha256(path_or_bytes).hexdigest(), len(path_or_bytes)
    else:
        data, (digest, size) = None, path_or_bytes[1:]
        path = path_or_bytes[0]
    head, _ = request(host, "HEAD", f"/v2/{repo}/blobs/{digest}")
    if head.status == 200:
        return digest, size
    response, _ = request(host, "POST", f"/v2/{repo}/blobs/uploads/")
    location = response.getheader("Location")
    location = location.split(host, 1)[-1]
    sep = "&" if "?" in location else "?"
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    if data is None:
        with open(path, "rb") as f:
            response, body = request(host, "PUT", f"{location}{sep}digest={digest}", body=f, headers=headers)
    else:
        response, body = request(host, "PUT", f"{location}{sep}digest={digest}", body=data, headers=headers)
    if response.status != 201:
        sys.exit(f"blob upload failed: {response.status} {body[:200]}")
    return digest, size


def push_manifest(host, repo, ref, manifest, media_type):
    body = json.dumps(manifest, separators=(",", ":")).encode()
    response, data = request(host, "PUT", f"/v2/{repo}/manifests/{ref}", body=body, headers={"Content-Type": media_type})
    if response.status != 201:
        sys.exit(f"manifest push failed: {response.status} {data[:200]}")
    return "sha256:" + hashlib.sha256(body).hexdigest(), len(body)


def make_layer(work, name, size):
    """A gzip layer of random bytes (stored, so it is as large as the data), on disk."""
    path = os.path.join(work, "layers", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    h = hashlib.sha256()
    with open(path, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=0, mtime=0) as gz:
            left = size
            while left > 0:
                n = min(left, 8 * MIB)
                gz.write(os.urandom(n))
                left -= n
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 * MIB), b""):
            h.update(chunk)
    return path, "sha256:" + h.hexdigest(), os.path.getsize(path)


def push_image(host, repo, ref, layers, platform=("linux", "amd64")):
    config = json.dumps({"architecture": platform[1], "os": platform[0], "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    config_digest, config_size = push_blob(host, repo, config)
    descs = []
    for layer in layers:
        digest, size = push_blob(host, repo, layer)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": descs,
    }
    return push_manifest(host, repo, ref, manifest, manifest["mediaType"])


def push_index(host, repo, tag, per_platform_layers):
    entries = []
    for (os_name, arch), layers in per_platform_layers:
        digest, size = push_image(host, repo, None or "tmp", layers, (os_name, arch))
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
                        "platform": {"os": os_name, "architecture": arch}})
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
    return push_manifest(host, repo, tag, index, index["mediaType"])


def desired_state(work, name, upstream, mirror, images):
    d = os.path.join(work, name)
    os.makedirs(d)
    lines = [
        f"apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: up}}\nspec: {{host: \"{upstream}\", insecure: true, limits: {{concurrency: 16}}}}\n---\n",
        f"apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: m}}\nspec: {{host: \"{mirror}\", insecure: true, limits: {{concurrency: 16}}}}\n---\n",
        f"apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: bench}}\nspec:\n  target: \"{mirror}/mirror\"\n  images:\n",
    ]
    for repo, tags in images.items():
        quoted = ", ".join(f'"{t}"' for t in tags)
        lines.append(f"    - source: \"{upstream}/{repo}\"\n      tags: [{quoted}]\n")
    with open(os.path.join(d, "desired.yaml"), "w") as f:
        f.write("".join(lines))
    return d


def skopeo_yaml(work, name, upstream, images):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(f"{upstream}:\n  tls-verify: false\n  images:\n")
        for repo, tags in images.items():
            f.write(f"    {repo}: [{', '.join(repr(t) for t in tags)}]\n")
    return path


def report(label, ours, peer, unit="s"):
    ratio = ours / peer if peer else float("inf")
    fmt = (lambda v: f"{v:.2f} s") if unit == "s" else (lambda v: f"{v:.0f} MiB")
    print(f"{label:<38} lifeboat {fmt(ours):>10}   skopeo {fmt(peer):>10}   ratio {ratio:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    scale = args.scale

    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    lifeboat = os.path.join(ROOT, "target", "release", "lifeboat")
    work = tempfile.mkdtemp(prefix="lifeboat-bench-")
    registries = []
    try:
        up = Registry(work, "upstream")
        ours = Registry(work, "mirror-lifeboat")
        theirs = Registry(work, "mirror-skopeo")
        registries = [up, ours, theirs]

        # Corpus: 3 shared base layers, 36 images with a base and a layer of their own, and 4
        # two-platform indexes.
        t0 = time.time()
        base = [make_layer(work, f"base{i}", int(100 * MIB * scale)) for i in range(3)]
        images = {}
        for i in range(36):
            own = make_layer(work, f"own{i}", int(40 * MIB * scale))
            push_image(up.host, f"bench/img{i:02}", "1", [base[i % 3], own])
            os.remove(own[0])
            images[f"bench/img{i:02}"] = ["1"]
        for i in range(4):
            per = []
            for arch in ("amd64", "arm64"):
                own = make_layer(work, f"idx{i}{arch}", int(40 * MIB * scale))
                per.append((("linux", arch), [base[i % 3], own]))
            push_index(up.host, f"bench/multi{i}", "1", per)
            for _, layers in per:
                os.remove(layers[1][0])
            images[f"bench/multi{i}"] = ["1"]
        corpus_mib = sum(
            os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(up.dir, "data")) for f in fs
        ) / MIB
        print(f"corpus: {len(images)} images, {corpus_mib:.0f} MiB in the upstream registry (generated in {time.time() - t0:.0f} s)")

        state = desired_state(work, "desired", up.host, ours.host, images)
        sync_file = skopeo_yaml(work, "sync.yaml", up.host, images)
        lb = [lifeboat, "apply", state, "--timeout", "120s"]
        sk = ["skopeo", "sync", "--all", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
              sync_file, f"{theirs.host}/mirror"]
        full_ours, rss_ours = timed(lb)
        full_theirs, rss_theirs = timed(sk)
        noop_ours, _ = timed(lb)
        noop_theirs, _ = timed(sk)
        report("full sync (wall)", full_ours, full_theirs)
        report("full sync (peak RSS)", rss_ours, rss_theirs, unit="MiB")
        report("no-op re-sync (wall)", noop_ours, noop_theirs)

        # One image with a single 2 GiB layer.
        big = make_layer(work, "big", int(2048 * MIB * scale))
        push_image(up.host, "bench/big", "1", [big])
        os.remove(big[0])
        big_state = desired_state(work, "desired-big", up.host, ours.host, {"bench/big": ["1"]})
        big_ours, big_rss_ours = timed([lifeboat, "apply", big_state, "--timeout", "120s"])
        big_theirs, big_rss_theirs = timed(["skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
                                             f"docker://{up.host}/bench/big:1", f"docker://{theirs.host}/mirror/bench/big:1"])
        report("2 GiB layer (wall)", big_ours, big_theirs)
        report("2 GiB layer (peak RSS)", big_rss_ours, big_rss_theirs, unit="MiB")

        # 1,000 tags of one small image; sync once, then time the no-op re-sync.
        for i in range(1000):
            if i == 0:
                digest, _ = push_image(up.host, "bench/many", "t0000", [os.urandom(1024)])
            else:
                _, manifest = request(up.host, "GET", "/v2/bench/many/manifests/t0000",
                                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
                request(up.host, "PUT", f"/v2/bench/many/manifests/t{i:04}", body=manifest,
                        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        tags = {"bench/many": [f"t{i:04}" for i in range(1000)]}
        many_state = desired_state(work, "desired-many", up.host, ours.host, tags)
        many_sync = skopeo_yaml(work, "sync-many.yaml", up.host, tags)
        print("first sync of 1,000 tags ...", file=sys.stderr, flush=True)
        first_ours, _ = timed([lifeboat, "apply", many_state, "--timeout", "120s"])
        marks = (up.log_size(), ours.log_size())
        many_ours, _ = timed([lifeboat, "apply", many_state, "--timeout", "120s"])
        per_tag = (len(up.requests_since(marks[0])) + len(ours.requests_since(marks[1]))) / 1000
        # skopeo's no-op re-sync runs against the mirror Lifeboat filled (the same content under
        # the same names): a first skopeo sync of 1,000 tags takes many minutes, one tag at a time.
        many_theirs, _ = timed(["skopeo", "sync", "--all", "--src", "yaml", "--dest", "docker", "--dest-tls-verify=false",
                                many_sync, f"{ours.host}/mirror/bench"])
        print(f"{'first sync of 1,000 tags':<38} lifeboat {first_ours:>8.2f} s")
        report("no-op re-sync of 1,000 tags (wall)", many_ours, many_theirs)
        print(f"{'requests per tag, lifeboat no-op':<38} {per_tag:.2f}")
    finally:
        for r in registries:
            r.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
