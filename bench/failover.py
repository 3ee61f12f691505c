#!/usr/bin/env python3
"""The cost of node failover on a pull, with a real containerd, in one run.

Inside a network namespace of its own (so that the upstream can be black-holed with iptables,
as a firewall drill does, without touching this machine's network), starts an upstream and a
mirror registry (Distribution) and a containerd with its CRI plugin, pushes one image to the
upstream (`--layers` layers of `--layer-mib` MiB, unpackable), mirrors it with `lifeboat apply`,
and times the pull of the same image by its upstream reference through containerd's CRI
socket (`lifeboat node-agent --once`, which calls PullImage as the kubelet does):

  direct        no failover file: containerd asks the upstream (and once more through a
                hosts.toml that names the upstream alone: the cost of the file by itself);
  mirror first  `lifeboat failover render` output, upstream healthy (and again black-holed);
  upstream first, black-holed  the render with `order: upstreamFirst`, upstream port dropped.

Before each pull every image is removed from containerd (and its content collected), and each
registry's access log says which one served the blobs. Every figure includes the agent's own
round (process start, Version, ImageStatus), printed once with the image present. Prints every figure; the black-holed upstream-
first pull waits for containerd's 30 s connect timeout per request, so it runs `--slow-runs`
times (default 1). Needs root, containerd, docker-registry and iptables (script/setup).

Usage: bench/failover.py [--layers N] [--layer-mib M] [--runs R] [--slow-runs S]
"""

import argparse
import ctypes
import gzip
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

from measure import measured
from mirror import Registry, push_blob, push_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20
CLONE_NEWNET = 0x40000000


def enter_new_netns(name):
    """Creates the namespace `name` with loopback up and moves this process into it."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        sys.exit(f"setns: {os.strerror(ctypes.get_errno())}")
    os.close(fd)


def tar_layer(work, name, size):
    """A gzip layer holding one file of `size` random bytes, and its diff ID."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(f"data/{name}")
        info.size = size
        info.mtime = 1_700_000_000
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    data = raw.getvalue()
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    path = os.path.join(work, "layers", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(gzip.compress(data, compresslevel=1, mtime=0))
    with open(path, "rb") as f:
        digest = "sha256:" + hashlib.sha256(f.read()).hexdigest()
    return (path, digest, os.path.getsize(path)), diff_id


def push_runnable(host, repo, tag, layers):
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    config = json.dumps({"architecture": arch, "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]}}).encode()
    config_digest, config_size = push_blob(host, repo, config)
    descs = []
    for blob, _ in layers:
        digest, size = push_blob(host, repo, blob)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size})
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": descs,
    }
    return push_manifest(host, repo, tag, manifest, manifest["mediaType"])[0]


class Containerd:
    """containerd with its CRI plugin, its own root, state and socket, config_path = hosts/."""

    def __init__(self, work):
        self.dir = os.path.join(work, "containerd")
        self.hosts = os.path.join(self.dir, "hosts")
        for d in ["cni/bin", "cni/conf", "hosts"]:
            os.makedirs(os.path.join(self.dir, d))
        self.socket = os.path.join(self.dir, "containerd.sock")
        p = lambda name: os.path.join(self.dir, name)
        config = p("config.toml")
        with open(config, "w") as f:
            f.write(f'''version = 2
root = "{p('root')}"
state = "{p('state')}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{p('opt')}"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{p('cni/bin')}"
    conf_dir = "{p('cni/conf')}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{self.hosts}"
''')
        self.log = open(p("log"), "w")
        self.proc = subprocess.Popen(["containerd", "--config", config], stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            if os.path.exists(self.socket) and self.ctr("version").returncode == 0:
                return
            time.sleep(0.05)
        sys.exit("containerd did not start: see " + p("log"))

    def ctr(self, *args):
        return subprocess.run(["ctr", "-a", self.socket, "-n", "k8s.io", *args], capture_output=True)

    def forget(self):
        """Removes every image (the CRI records each under its reference and its id) and lets
        the garbage collector take their content, so that the next pull fetches every blob."""
        names = self.ctr("images", "ls", "-q").stdout.decode().split()
        if names:
            self.ctr("images", "rm", "--sync", *names)
        left = self.ctr("content", "ls", "-q").stdout.decode().split()
        if left:
            sys.exit(f"containerd still holds {len(left)} blobs after removing its images")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--layer-mib", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3, help="runs of the fast cases (the median is reported)")
    parser.add_argument("--slow-runs", type=int, default=1, help="runs of the black-holed upstream-first pull")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/failover.py needs root: containerd and the network namespace")

    # The binary only prepares (apply, render, and the CRI call): a debug build is enough.
    subprocess.run(["cargo", "build", "--locked", "--quiet"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    lifeboat = os.path.join(target, "debug", "lifeboat")
    work = tempfile.mkdtemp(prefix="lifeboat-bench-failover-")
    netns = f"lifeboat-bench-{os.getpid()}"
    registries, node = [], None
    try:
        enter_new_netns(netns)
        upstream, mirror = Registry(work, "upstream"), Registry(work, "mirror")
        registries = [upstream, mirror]
        layers = [tar_layer(work, f"layer-{i}", args.layer_mib * MIB) for i in range(args.layers)]
        digest = push_runnable(upstream.host, "team/app", "1.0", layers)
        size_mib = sum(blob[2] for blob, _ in layers) / MIB
        print(f"image: {upstream.host}/team/app:1.0, {args.layers} layer(s), {size_mib:.1f} MiB compressed", file=sys.stderr)

        desired = os.path.join(work, "desired")
        os.makedirs(desired)

        def write_desired(order):
            with open(os.path.join(desired, "desired.yaml"), "w") as f:
                f.write(
                    f'apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: up}}\nspec: {{host: "{upstream.host}", insecure: true}}\n---\n'
                    f'apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: m}}\nspec: {{host: "{mirror.host}", insecure: true}}\n---\n'
                    f'apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: bench}}\nspec:\n  target: "{mirror.host}/mirror"\n'
                    f'  images:\n    - source: "{upstream.host}/team/app"\n      tags: ["1.0"]\n---\n'
                    f'apiVersion: lifeboat.dev/v1alpha1\nkind: FailoverSet\nmetadata: {{name: nodes}}\nspec:\n'
                    f'  mirrorSets: [bench]\n  order: {order}\n  runtimes: [containerd]\n'
                )

        write_desired("mirrorFirst")
        subprocess.run([lifeboat, "apply", desired, "--cluster", "off"], check=True, stdout=subprocess.DEVNULL)
        node = Containerd(work)
        reference = f"{upstream.host}/team/app@{digest}"
        images_file = os.path.join(work, "images")
        with open(images_file, "w") as f:
            f.write(reference + "\n")
        host_dir = os.path.join(node.hosts, upstream.host)

        def configure(order):
            shutil.rmtree(host_dir, ignore_errors=True)
            if order is None:
                # No file: containerd asks the upstream, over plain HTTP as it does for loopback.
                return
            if order == "upstreamOnly":
                # A hosts.toml that names the upstream alone: what containerd's per-host
                # configuration costs by itself, without a mirror.
                os.makedirs(host_dir)
                with open(os.path.join(host_dir, "hosts.toml"), "w") as f:
                    f.write(f'server = "http://{upstream.host}"\n[host."http://{upstream.host}"]\n'
                            'capabilities = ["pull", "resolve"]\n')
                return
            write_desired(order)
            # stderr: the validation warning about upstreamFirst, which this measures.
            subprocess.run([lifeboat, "failover", "render", desired, "--runtime", "containerd", "--out", node.hosts],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        agent = [lifeboat, "node-agent", "--once", "--report", "stdout", "--set", "bench", "--node-name", "bench",
                 "--images-file", images_file, "--cri-socket", node.socket, "--pull-timeout", "30m"]

        def pull(label, runs):
            walls, served = [], []
            for _ in range(runs):
                node.forget()
                marks = [r.log_size() for r in registries]
                walls.append(measured(agent).wall)
                blobs = [sum(1 for r in reg.requests_since(mark) if r.startswith("GET") and "/blobs/" in r)
                         for reg, mark in zip(registries, marks)]
                served.append(blobs)
            wall = statistics.median(walls)
            print(f"{label:<42} {wall:>8.2f} s   blobs from upstream {served[-1][0]}, mirror {served[-1][1]}"
                  f"   (runs: {', '.join(f'{w:.2f}' for w in walls)})")
            return wall

        configure(None)
        pull("direct from upstream (warm-up, not counted)", 1)
        # Every figure includes the agent's own round (process start, Version, ImageStatus):
        # measured here with the image present, so without a pull.
        baseline = statistics.median(measured(agent).wall for _ in range(args.runs))
        print(f"{'node-agent round, image present (no pull)':<42} {baseline:>8.2f} s")
        direct = pull("direct from upstream", args.runs)
        configure("upstreamOnly")
        pull("direct, hosts.toml naming the upstream only", args.runs)
        configure("mirrorFirst")
        mirror_first = pull("mirror first, upstream healthy", args.runs)
        drop = ["iptables", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport",
                upstream.host.rsplit(":", 1)[1], "-j", "DROP"]
        subprocess.run(drop, check=True)
        pull("mirror first, upstream black-holed", args.runs)
        configure("upstreamFirst")
        upstream_first_dark = pull("upstream first, upstream black-holed", args.slow_runs)
        print(f"{'upstream first (black hole) / direct':<42} {upstream_first_dark / direct:>8.1f}x")
        print(f"{'mirror first / direct':<42} {mirror_first / direct:>8.2f}x")
    finally:
        if node:
            node.stop()
        for r in registries:
            r.stop()
        subprocess.run(["ip", "netns", "del", netns], stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
