#!/usr/bin/env python3
"""Packs a root filesystem directory into a single-layer image archive in the
`docker save` format, which `ctr images import` loads into containerd. There is
no registry here, so every image the `pods` tier runs is built this way.

    mkimage.py ROOTFS TAG OUT.tar [--entrypoint JSON] [--cmd JSON] [--env K=V]... [--user U] [--workdir W]
"""

import argparse
import hashlib
import io
import json
import os
import tarfile
import tempfile


def layer_tar(rootfs, path):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(rootfs)):
            tar.add(os.path.join(rootfs, entry), arcname=entry)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("rootfs")
    p.add_argument("tag")
    p.add_argument("out")
    p.add_argument("--entrypoint", type=json.loads, default=None)
    p.add_argument("--cmd", type=json.loads, default=None)
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--user", default="")
    p.add_argument("--workdir", default="")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.out))) as tmp:
        layer = os.path.join(tmp, "layer.tar")
        layer_tar(args.rootfs, layer)
        diff_id = sha256(layer)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *args.env],
                "Entrypoint": args.entrypoint,
                "Cmd": args.cmd,
                "User": args.user,
                "WorkingDir": args.workdir,
            },
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        }
        config_bytes = json.dumps(config).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        manifest = [{"Config": config_name, "RepoTags": [args.tag], "Layers": [f"{diff_id}/layer.tar"]}]
        with tarfile.open(args.out, "w") as out:
            out.add(layer, arcname=f"{diff_id}/layer.tar")
            for name, data in ((config_name, config_bytes), ("manifest.json", json.dumps(manifest).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
