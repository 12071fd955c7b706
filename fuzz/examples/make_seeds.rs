//! Writes the committed seed corpora (fuzz/corpus/<target>/) from real weights.
//!
//! ```sh
//! cd fuzz && cargo run --release --example make_seeds -- \
//!     --base ../.cache/models/base --ft /tmp/shared-models/ft-a --out corpus
//! ```
//!
//! `--base` holds all-MiniLM-L6-v2's `model.safetensors` and `model.bf16.safetensors`
//! (`bash scripts/setup.sh`), `--ft` the real fine-tune ft-a's (`python3
//! ../shared/data/unpack.py /tmp/shared-models`). Small safetensors files are cut from them (a
//! handful of real tensors: LayerNorm weights and biases, a few rows of the word embeddings,
//! `position_ids` and the pooler, which the fine-tune left identical to the base, a duplicated
//! tensor, a tensor the base does not have, and real bytes retyped as I8/U8/F16/F64 to reach
//! every word size), encoded with `zipllm::codec::encode` at small piece and chunk lengths, and every
//! delta is checked to rebuild its target. The output is deterministic.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use zipllm::codec::encode::{EncodeOptions, Strategy};
use zipllm::codec::entropy::Codec;
use zipllm::codec::format::{BlobHeader, PieceSource};
use zipllm::{DType, Model};
use zipllm_fuzz::{BlobInput, FingerprintInput, RebuildInput, ZstdInput, MAX_OUT};

#[derive(Clone)]
struct T {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    data: Vec<u8>,
}

struct File {
    bytes: Vec<u8>,
    model: Model,
}

impl File {
    fn open(path: &Path) -> File {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let model = Model::parse(&bytes).expect("a safetensors file");
        File { bytes, model }
    }

    /// Tensor `name`, whole or its first `rows` rows.
    fn take(&self, name: &str, rows: Option<u64>) -> T {
        let t = self.model.tensor(name).unwrap_or_else(|| panic!("no tensor {name}"));
        let mut shape = t.shape.clone();
        let mut len = t.len();
        if let Some(r) = rows {
            len = len / shape[0] * r;
            shape[0] = r;
        }
        T {
            name: name.to_string(),
            dtype: t.dtype,
            shape,
            data: self.bytes[t.start as usize..(t.start + len) as usize].to_vec(),
        }
    }
}

impl T {
    fn named(mut self, name: &str) -> T {
        self.name = name.to_string();
        self
    }

    /// The same bytes read as another dtype (1-D).
    fn retyped(mut self, dtype: DType) -> T {
        let n = self.data.len() as u64 * 8 / dtype.bits();
        self.dtype = dtype;
        self.shape = vec![n];
        self
    }

    /// The first `bytes` bytes, 1-D.
    fn prefix(mut self, bytes: usize) -> T {
        self.data.truncate(bytes);
        self.shape = vec![bytes as u64 * 8 / self.dtype.bits()];
        self
    }
}

/// A safetensors file of `ts` in this order, `__metadata__` first, header padded to 8.
fn safetensors(ts: &[T]) -> Vec<u8> {
    let mut json = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    let mut off = 0usize;
    for t in ts {
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        json.push_str(&format!(
            r#","{}":{{"dtype":"{}","shape":[{}],"data_offsets":[{},{}]}}"#,
            t.name,
            t.dtype.name(),
            shape.join(","),
            off,
            off + t.data.len()
        ));
        off += t.data.len();
    }
    json.push('}');
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    for t in ts {
        out.extend_from_slice(&t.data);
    }
    Model::parse(&out).expect("the cut file parses");
    out
}

struct Out {
    dir: PathBuf,
}

impl Out {
    fn write(&self, target: &str, name: &str, bytes: &[u8]) {
        let d = self.dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    }
}

/// Deterministic bytes for schedules.
fn xof(seed: &str, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    blake3::Hasher::new_derive_key("zipllm fuzz seeds")
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut base_dir, mut ft_dir, mut out) = (None, None, None);
    while let Some(a) = args.next() {
        let v = args.next().map(PathBuf::from);
        match a.as_str() {
            "--base" => base_dir = v,
            "--ft" => ft_dir = v,
            "--out" => out = v,
            _ => panic!("usage: make_seeds --base DIR --ft DIR --out DIR"),
        }
    }
    let base_dir = base_dir.expect("--base");
    let ft_dir = ft_dir.expect("--ft");
    let out = Out {
        dir: out.expect("--out"),
    };
    let b32 = File::open(&base_dir.join("model.safetensors"));
    let f32 = File::open(&ft_dir.join("model.safetensors"));
    let b16 = File::open(&base_dir.join("model.bf16.safetensors"));
    let f16 = File::open(&ft_dir.join("model.bf16.safetensors"));

    const LN_W: &str = "embeddings.LayerNorm.weight";
    const LN_B: &str = "embeddings.LayerNorm.bias";
    const POS: &str = "embeddings.position_ids";
    const WORD: &str = "embeddings.word_embeddings.weight";
    const POOL: &str = "pooler.dense.bias";
    const DENSE0: &str = "encoder.layer.0.attention.output.dense.bias";
    const DENSE1: &str = "encoder.layer.1.output.dense.bias";
    const LN5: &str = "encoder.layer.5.output.LayerNorm.bias";

    // Families of (base, target) cut from real weights.
    let family = |b: &File, f: &File, rows: u64| -> (Vec<T>, Vec<T>) {
        let base = vec![
            b.take(LN_W, None),
            b.take(LN_B, None),
            b.take(POS, None),
            b.take(WORD, Some(rows)),
            b.take(POOL, None),
            b.take(DENSE0, None),
            b.take(LN5, None),
        ];
        let target = vec![
            f.take(LN_W, None),
            f.take(LN_B, None),
            f.take(POS, None), // untrained: same as base
            f.take(WORD, Some(rows)),
            f.take(POOL, None), // untrained: same as base
            f.take(DENSE0, None),
            f.take(LN_W, None).named("tied.LayerNorm.weight"), // a duplicate
            f.take(DENSE1, None).named("extra.dense.bias"),    // no base counterpart
        ];
        (base, target)
    };
    let (f32_base, f32_target) = family(&b32, &f32, 2);
    let (bf16_base, bf16_target) = family(&b16, &f16, 16);
    // Every word size: F32 (4), BF16 and F16 (2), I64 and F64 (8), I8 and U8 (1).
    let mixed_base = vec![
        b32.take(LN_W, None),
        b16.take(WORD, Some(8)),
        b32.take(POS, None).prefix(2048),
        b32.take(LN_B, None).retyped(DType::I8).named("q.int8"),
        b16.take(DENSE0, None).retyped(DType::F16).named("h.f16"),
        b32.take(DENSE0, None).retyped(DType::F64).named("d.f64"),
    ];
    let mixed_target = vec![
        f32.take(LN_W, None),
        f16.take(WORD, Some(8)),
        f32.take(POS, None).prefix(2048),
        f32.take(LN_B, None).retyped(DType::I8).named("q.int8"),
        f16.take(DENSE0, None).retyped(DType::F16).named("h.f16"),
        f32.take(DENSE0, None).retyped(DType::F64).named("d.f64"),
        f16.take(DENSE1, None).retyped(DType::U8).named("raw.u8"),
    ];
    let tiny_base = vec![b16.take(LN_W, None), b16.take(LN_B, None), b16.take(POOL, None)];
    let tiny_target = vec![
        f16.take(LN_W, None),
        f16.take(LN_B, None),
        f16.take(POOL, None),
        f16.take(WORD, Some(8)),
    ];

    let files = [
        ("f32", safetensors(&f32_base), safetensors(&f32_target)),
        ("bf16", safetensors(&bf16_base), safetensors(&bf16_target)),
        ("mixed", safetensors(&mixed_base), safetensors(&mixed_target)),
        // Target identical to the base: every piece copies the base, no blobs.
        ("same", safetensors(&mixed_base), safetensors(&mixed_base)),
        // bf16 target against an fp32 base: dtypes differ, so standalone blobs (and the
        // I64 position_ids same as base).
        ("standalone", safetensors(&f32_base), safetensors(&bf16_target)),
        ("tiny", safetensors(&tiny_base), safetensors(&tiny_target)),
    ];
    let get = |name: &str| files.iter().find(|f| f.0 == name).unwrap();

    let o = |strategy, level, piece_len, chunk_len| EncodeOptions {
        level,
        strategy,
        piece_len,
        chunk_len,
    };
    let encodings = [
        ("f32", "auto", o(Strategy::Auto, 1, 2048, 4096)),
        ("f32", "bitx", o(Strategy::Bitx, 1, 1024, 2048)),
        ("f32", "fields", o(Strategy::BitxFields, 3, 2048, 4096)),
        ("bf16", "auto", o(Strategy::Auto, 1, 4096, 8192)),
        ("bf16", "fields", o(Strategy::BitxFields, 1, 2048, 4096)),
        ("bf16", "best19", o(Strategy::Best, 19, 4096, 8192)),
        ("bf16", "bitx", o(Strategy::Bitx, 1, 4096, 8192)),
        ("mixed", "auto", o(Strategy::Auto, 1, 1024, 4096)),
        ("mixed", "best3", o(Strategy::Best, 3, 2048, 8192)),
        ("same", "auto", o(Strategy::Auto, 1, 4096, 8192)),
        ("standalone", "auto", o(Strategy::Auto, 1, 4096, 8192)),
        ("tiny", "auto", o(Strategy::Auto, 1, 4096, 8192)),
    ];

    let mut blob_seen = BTreeSet::new();
    let mut frame_seen = BTreeSet::new();
    let mut stats = (0usize, 0usize, 0usize);
    for (fam, label, opts) in &encodings {
        let (_, base, target) = get(fam);
        let delta = zipllm::encode(base, target, opts, &|_| {})
            .and_then(|d| d.to_bytes())
            .expect("encode");
        let rebuilt = zipllm::rebuild_in_memory(base, &delta).expect("the delta rebuilds");
        assert!(rebuilt == *target, "{fam}-{label} does not rebuild its target");
        let name = format!("{fam}-{label}");
        let plan = zipllm::Plan::from_delta_head(&delta).unwrap();
        let m = &plan.manifest;
        eprintln!(
            "{name}: target {} B, delta {} B, {} tensors, {} pieces, {} blobs, {} chunks",
            target.len(),
            delta.len(),
            m.tensors.len(),
            m.pieces.len(),
            m.blobs.len(),
            m.chunks.len()
        );
        let (body, payload) = zipllm_fuzz::split_delta(&delta).unwrap();
        out.write("manifest", &name, body);
        out.write("rebuild", &name, &RebuildInput::write(&[], body, payload, base));
        stats.0 += 1;

        // Blobs, with the word and length of the piece that first uses each.
        let tmodel = m.target_model().unwrap();
        let mut first_use = vec![None; m.blobs.len()];
        for p in &m.pieces {
            if let Some(b) = p.source.blob() {
                if first_use[b as usize].is_none() {
                    first_use[b as usize] = Some(*p);
                }
            }
        }
        for (b, p) in first_use.iter().enumerate() {
            let p = p.unwrap();
            let r = plan.blob_range(b as u32);
            let blob = &delta[r.start as usize..r.end as usize];
            let t = tmodel.tensors.iter().find(|t| t.start <= p.out_start && p.out_start < t.end).unwrap();
            let word = t.dtype.word();
            let (header, mut at) = BlobHeader::parse(blob).unwrap();
            let base_bytes = match p.source {
                PieceSource::BaseAndBlob { base_start, .. } => {
                    Some(&base[base_start as usize..(base_start + p.len) as usize])
                }
                _ => None,
            };
            // One blob seed per (transform, layout, word, base) and delta family.
            let key = (fam.to_string(), header.transform as u8, header.layout as u8, word, base_bytes.is_some());
            if p.len as usize <= MAX_OUT && blob_seen.insert(key) {
                let pattern = base_bytes.map(|b| &b[..b.len().min(255)]);
                out.write(
                    "blob",
                    &format!("{name}-{b}"),
                    &BlobInput::write(word, p.len as usize, pattern, blob),
                );
                stats.1 += 1;
            }
            for (k, &(codec, raw, stored)) in header.streams.iter().enumerate() {
                let body = &blob[at..at + stored as usize];
                at += stored as usize;
                if codec == Codec::Zstd && (raw as usize) <= MAX_OUT && frame_seen.len() < 48 {
                    if frame_seen.insert(*blake3::hash(body).as_bytes()) {
                        out.write("zstd_diff", &format!("{name}-{b}-{k}"), &ZstdInput::write(raw as usize, body));
                        stats.2 += 1;
                    }
                }
            }
        }
    }

    // A few scheduled runs: cut sizes, parts, early ends (bytes decoded by `arbitrary`).
    for (fam, label, seed) in [("bf16", "auto", "s1"), ("mixed", "auto", "s2"), ("f32", "bitx", "s3")] {
        let (_, base, target) = get(fam);
        let opts = encodings.iter().find(|e| e.0 == fam && e.1 == label).unwrap().2;
        let delta = zipllm::encode(base, target, &opts, &|_| {}).unwrap().to_bytes().unwrap();
        let (body, payload) = zipllm_fuzz::split_delta(&delta).unwrap();
        let sched = xof(seed, 24);
        out.write("rebuild", &format!("{fam}-{label}-sched-{seed}"), &RebuildInput::write(&sched, body, payload, base));
    }

    // Frames of other shapes for the zstd differential: ruzstd's encoder, a checksum, no
    // content size, two frames back to back, a skippable frame first, an empty frame, and a
    // long-window frame.
    let data: Vec<u8> = f16.bytes[f16.model.tensor(WORD).unwrap().start as usize..][..16384].to_vec();
    let c1 = zipllm::codec::entropy::compress(&data, 1).unwrap();
    let mut extra: Vec<(&str, usize, Vec<u8>)> = vec![
        ("ruzstd-fastest", data.len(), ruzstd::encoding::compress_to_vec(&data[..], ruzstd::encoding::CompressionLevel::Fastest)),
        ("c-level19", data.len(), zipllm::codec::entropy::compress(&data, 19).unwrap()),
        ("empty", 0, zipllm::codec::entropy::compress(&[], 1).unwrap()),
        ("two-frames", 2 * data.len(), [c1.clone(), c1.clone()].concat()),
        ("short-out", data.len() - 1, c1.clone()),
    ];
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    c.include_checksum(true).unwrap();
    extra.push(("checksum", data.len(), c.compress(&data).unwrap()));
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    c.include_contentsize(false).unwrap();
    extra.push(("no-content-size", data.len(), c.compress(&data).unwrap()));
    let mut skippable = vec![0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
    skippable.extend_from_slice(&c1);
    extra.push(("skippable-first", data.len(), skippable));
    let big: Vec<u8> = (0..MAX_OUT).map(|i| data[i % data.len()]).collect();
    extra.push(("window-1mib", big.len(), zipllm::codec::entropy::compress(&big, 19).unwrap()));
    for (name, n, frame) in &extra {
        out.write("zstd_diff", &format!("extra-{name}"), &ZstdInput::write(*n, frame));
    }

    // safetensors: every cut file, and a few edge files.
    for (fam, base, target) in &files {
        if *fam == "same" {
            continue;
        }
        out.write("safetensors", &format!("{fam}-base"), base);
        out.write("safetensors", &format!("{fam}-target"), target);
    }
    let mut cast = Vec::new();
    zipllm::model::cast_f32_to_bf16(&get("mixed").1, &mut cast).unwrap();
    out.write("safetensors", "mixed-base-cast-bf16", &cast);
    out.write("safetensors", "empty-header", &safetensors(&[]));
    let zero = T { name: "zero".into(), dtype: DType::F32, shape: vec![0, 4], data: vec![] };
    out.write("safetensors", "zero-length", &safetensors(&[zero.clone(), b32.take(LN_B, None)]));

    // fingerprint: a candidate model and a fingerprint (JSON, or the binary layout) of a
    // fine-tune, as `matchFamily`/`match` see them. JSON spells every sample byte as a number,
    // so the JSON seeds use a micro model (a few short tensors, sampled whole).
    let micro = |f: &File| {
        vec![
            f.take(LN_W, None).prefix(128),
            f.take(LN_B, None).prefix(128),
            f.take(POOL, None).prefix(64),
            f.take(POS, None).prefix(256),
        ]
    };
    let (micro_base, micro_target) = (safetensors(&micro(&b16)), safetensors(&micro(&f16)));
    let fp = zipllm::family::fingerprint_bytes(&micro_target, 0.01).unwrap();
    // a: fraction 0.01 (index 2), share 1.0 (index 8); b: max_bytes 2 MiB (+0x80: binary).
    out.write("fingerprint", "micro-json", &FingerprintInput::write(0x82, 21, &micro_base, &serde_json::to_vec(&fp).unwrap()));
    out.write("fingerprint", "micro-binary", &FingerprintInput::write(0x82, 21 | 0x80, &micro_base, &fp.to_bytes().unwrap()));
    // The fine-tune against a base of another dtype (incompatible), in JSON.
    out.write("fingerprint", "micro-vs-f32-json", &FingerprintInput::write(0x82, 21, &safetensors(&micro(&b32)), &serde_json::to_vec(&fp).unwrap()));
    for (fam, fraction) in [("tiny", 0.01), ("bf16", 0.01), ("mixed", 1.0)] {
        let (_, base, target) = get(fam);
        let fp = zipllm::family::fingerprint_bytes(target, fraction).unwrap();
        out.write("fingerprint", &format!("{fam}-binary"), &FingerprintInput::write(0x82, 21 | 0x80, base, &fp.to_bytes().unwrap()));
    }
    // Budget 512 bytes (b = 9), share 0.5 (index 6), fraction 1.0 (index 8).
    let (_, base, target) = get("tiny");
    let fp = zipllm::family::fingerprint_bytes(base, 1.0).unwrap();
    out.write("fingerprint", "tiny-self-budget", &FingerprintInput::write(0x68, 9 | 0x80, target, &fp.to_bytes().unwrap()));

    eprintln!("{} deltas, {} blob seeds, {} frames from deltas", stats.0, stats.1, stats.2);
}
