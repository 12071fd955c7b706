//! `zipllm store simulate`: the store at hub scale, on metadata only. A hub like the ZipLLM
//! paper's (3,048 LLMs, ~43 TB, in families around a few dozen bases) is generated as tensor
//! tables — no weights — and run through the store's own manifest, index, family-lookup,
//! restore-planning and gc code, to measure what grows with the hub: objects, requests,
//! manifest and index sizes, the work of finding a duplicate tensor or a model's family, and gc.
//!
//! Sizes of encoded parts are modeled (standalone BF16 at 0.68 of raw, deltas at 0.35, the
//! ratios measured on the real corpus); everything else is the real code on real structures.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use crate::store::index::Index;
use crate::store::layout::{
    BaseInfo, BaseRef, Encoding, FileEntry, Manifest, Part, Segment, TensorRecord, MANIFEST_FORMAT,
    PACK_TARGET, PART_LEN,
};
use crate::store::plan::{self, Records};

/// One architecture: Llama-style blocks.
struct Arch {
    name: &'static str,
    layers: u64,
    hidden: u64,
    inter: u64,
    vocab: u64,
    kv: u64,
    /// Share of the hub's models of this architecture.
    weight: f64,
}

const ARCHS: [Arch; 9] = [
    Arch {
        name: "llama-7b",
        layers: 32,
        hidden: 4096,
        inter: 11008,
        vocab: 32000,
        kv: 4096,
        weight: 0.22,
    },
    Arch {
        name: "mistral-7b",
        layers: 32,
        hidden: 4096,
        inter: 14336,
        vocab: 32000,
        kv: 1024,
        weight: 0.20,
    },
    Arch {
        name: "llama3-8b",
        layers: 32,
        hidden: 4096,
        inter: 14336,
        vocab: 128256,
        kv: 1024,
        weight: 0.18,
    },
    Arch {
        name: "llama-13b",
        layers: 40,
        hidden: 5120,
        inter: 13824,
        vocab: 32000,
        kv: 5120,
        weight: 0.10,
    },
    Arch {
        name: "qwen2-1.5b",
        layers: 28,
        hidden: 1536,
        inter: 8960,
        vocab: 151936,
        kv: 256,
        weight: 0.10,
    },
    Arch {
        name: "qwen2-0.5b",
        layers: 24,
        hidden: 896,
        inter: 4864,
        vocab: 151936,
        kv: 128,
        weight: 0.08,
    },
    Arch {
        name: "gemma-2b",
        layers: 18,
        hidden: 2048,
        inter: 16384,
        vocab: 256000,
        kv: 256,
        weight: 0.06,
    },
    Arch {
        name: "phi-2",
        layers: 32,
        hidden: 2560,
        inter: 10240,
        vocab: 51200,
        kv: 2560,
        weight: 0.04,
    },
    Arch {
        name: "llama-70b",
        layers: 80,
        hidden: 8192,
        inter: 28672,
        vocab: 32000,
        kv: 1024,
        weight: 0.02,
    },
];

/// Compressed / raw for a standalone BF16 part and for a delta part.
const STANDALONE_RATIO: f64 = 0.68;
const DELTA_RATIO: f64 = 0.35;
/// Hugging Face's default shard size.
const SHARD: u64 = 5_000_000_000;

impl Arch {
    /// (name, shape) of every tensor, BF16.
    fn tensors(&self) -> Vec<(String, Vec<u64>)> {
        let (h, i, v, kv) = (self.hidden, self.inter, self.vocab, self.kv);
        let mut t = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            for (n, s) in [
                ("self_attn.q_proj.weight", vec![h, h]),
                ("self_attn.k_proj.weight", vec![kv, h]),
                ("self_attn.v_proj.weight", vec![kv, h]),
                ("self_attn.o_proj.weight", vec![h, h]),
                ("mlp.gate_proj.weight", vec![i, h]),
                ("mlp.up_proj.weight", vec![i, h]),
                ("mlp.down_proj.weight", vec![h, i]),
                ("input_layernorm.weight", vec![h]),
                ("post_attention_layernorm.weight", vec![h]),
            ] {
                t.push((format!("{p}.{n}"), s));
            }
        }
        t.push(("model.norm.weight".to_string(), vec![h]));
        t.push(("lm_head.weight".to_string(), vec![v, h]));
        t
    }
}

/// xorshift64*, for a reproducible hub.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Packs parts as the ingest does: in order, sealed at [`PACK_TARGET`].
struct Packer {
    packs: u64,
    fill: u64,
    total: u64,
}

impl Packer {
    fn part(&mut self, raw: u64, ratio: f64, delta: bool) -> Part {
        let len = ((raw as f64 * ratio) as u64).max(16);
        if self.fill > 0 && self.fill + len > PACK_TARGET {
            self.packs += 1;
            self.fill = 0;
        }
        let p = Part {
            pack: fake_hash(0x7061_636b, self.packs),
            offset: self.fill,
            len,
            raw_len: raw,
            blake3: fake_hash(0x7061_7274, self.total),
            delta,
        };
        self.fill += len;
        self.total += 1;
        p
    }
    fn seal(&mut self) {
        if self.fill > 0 {
            self.packs += 1;
            self.fill = 0;
        }
    }
}

fn fake_hash(kind: u64, n: u64) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&kind.to_le_bytes());
    h.update(&n.to_le_bytes());
    h.finalize().to_hex().to_string()
}

fn parts_of(p: &mut Packer, len: u64, ratio: f64, delta: bool) -> Vec<Part> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let raw = PART_LEN.min(len - at);
        out.push(p.part(raw, ratio, delta));
        at += raw;
    }
    out
}

/// Distribution of a quantity over models.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub median: f64,
    /// Largest.
    pub max: f64,
    /// Sum.
    pub total: f64,
}

fn spread(mut v: Vec<f64>) -> Spread {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    Spread {
        min: v.first().copied().unwrap_or(0.0),
        median: v.get(v.len() / 2).copied().unwrap_or(0.0),
        max: v.last().copied().unwrap_or(0.0),
        total: v.iter().sum(),
    }
}

/// What the simulation measured.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// Models (repos) in the hub.
    pub models: u64,
    /// Of which bases.
    pub bases: u64,
    /// Of which byte-identical re-uploads.
    pub reuploads: u64,
    /// Bytes of every file.
    pub raw_bytes: u64,
    /// After file dedup.
    pub after_file_dedup: u64,
    /// After tensor dedup.
    pub after_tensor_dedup: u64,
    /// Modeled bytes in packs.
    pub pack_bytes: u64,
    /// Pack objects.
    pub packs: u64,
    /// Parts.
    pub parts: u64,
    /// Objects (packs + manifests) per TB stored.
    pub objects_per_tb: f64,
    /// Manifest JSON bytes per model.
    pub manifest_bytes: Spread,
    /// The same, zstd -3.
    pub manifest_zstd_bytes: Spread,
    /// Seconds to build the dedup/family index from every manifest (parsing excluded).
    pub index_build_s: f64,
    /// Distinct tensors in the index.
    pub index_tensors: u64,
    /// Resident memory the index added, MB (from /proc/self/statm; 0 where unavailable).
    pub index_rss_mb: f64,
    /// Mean nanoseconds per tensor dedup lookup.
    pub dedup_lookup_ns: f64,
    /// Bases compared per fine-tune: mean and maximum (all bases: `bases`).
    pub candidates_mean: f64,
    /// Largest number of candidates for one model.
    pub candidates_max: u64,
    /// Whether every fine-tune's true base was among its candidates.
    pub true_base_found: bool,
    /// Mean microseconds per family lookup.
    pub family_lookup_us: f64,
    /// Requests to ingest one more model when every manifest must be read (no local cache) and
    /// with a cache of manifests already seen: (LIST pages + GETs + HEADs + PUTs).
    pub ingest_requests_uncached: u64,
    /// With a local manifest cache.
    pub ingest_requests_cached: u64,
    /// Manifest bytes an uncached ingest reads first.
    pub ingest_manifest_bytes_uncached: u64,
    /// Ranged GETs to restore one file, per GB of it (mean over a sample of files).
    pub restore_gets_per_gb: f64,
    /// Seconds for gc's mark (every manifest's parts into a set) and sweep (set difference
    /// against the pack listing).
    pub gc_mark_sweep_s: f64,
    /// Packs the sweep found unreferenced (0: nothing was removed).
    pub gc_unreferenced: u64,
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |pages| pages * 4096.0 / 1e6)
}

/// Simulates a hub of `models` models (the paper's: 3,048).
pub fn run(models: u64, seed: u64) -> SimReport {
    let mut rng = Rng(seed | 1);
    let mut packer = Packer {
        packs: 0,
        fill: 0,
        total: 0,
    };
    let mut manifests: Vec<Manifest> = Vec::new();
    // Bases: a few per architecture (the base and its instruct / chat siblings, trained apart).
    let mut bases: Vec<(usize, usize)> = Vec::new(); // (arch, manifest index)
    let base_count = (models / 75).max(ARCHS.len() as u64);
    let mut truth: Vec<Option<usize>> = Vec::new(); // manifest → base manifest
    let mut reuploads = 0;
    let mut created = 0u64;
    let pick_arch = |rng: &mut Rng| {
        let mut u = rng.unit();
        for (i, a) in ARCHS.iter().enumerate() {
            if u < a.weight {
                return i;
            }
            u -= a.weight;
        }
        0
    };
    for n in 0..models {
        created += 1;
        let is_base = (n as usize) < base_count as usize;
        let arch_i = if is_base {
            n as usize % ARCHS.len()
        } else {
            pick_arch(&mut rng)
        };
        let arch = &ARCHS[arch_i];
        let repo = format!("org{}/model-{n}", n % 500);
        // 3% of uploads are byte-identical copies of an earlier model.
        if !is_base && rng.unit() < 0.03 && !manifests.is_empty() {
            let src = (rng.next() % manifests.len() as u64) as usize;
            let mut m = manifests[src].clone();
            m.repo = repo;
            m.created = created;
            for f in &mut m.files {
                f.stored_bytes = 0;
            }
            truth.push(truth[src]);
            manifests.push(m);
            reuploads += 1;
            continue;
        }
        let base = if is_base {
            None
        } else {
            // Popular bases take most fine-tunes (Zipf over this architecture's bases).
            let mine: Vec<usize> = bases
                .iter()
                .filter(|(a, _)| *a == arch_i)
                .map(|(_, m)| *m)
                .collect();
            let k = ((1.0 / (1.0 - rng.unit() * 0.95)).floor() as usize - 1).min(mine.len() - 1);
            Some(mine[k])
        };
        let table = arch.tensors();
        let mut tensors: BTreeMap<String, TensorRecord> = BTreeMap::new();
        let mut segs: Vec<(String, String, u64)> = Vec::new();
        // A fine-tune keeps its base's embeddings and norms as they are 1 time in 5 (frozen).
        let frozen = !is_base && rng.unit() < 0.2;
        let base_segs: HashMap<String, String> = match base {
            Some(b) => manifests[b]
                .files
                .iter()
                .flat_map(|f| f.segments.iter())
                .filter_map(|s| match s {
                    Segment::Tensor { name, blake3, .. } => Some((name.clone(), blake3.clone())),
                    Segment::Bytes { .. } => None,
                })
                .collect(),
            None => HashMap::new(),
        };
        for (name, shape) in &table {
            let len = shape.iter().product::<u64>() * 2;
            let keep = frozen && (name.contains("embed") || name.contains("norm"));
            let hash = match (keep, base_segs.get(name)) {
                (true, Some(h)) => h.clone(),
                _ => fake_hash(
                    0x7465_6e73,
                    packer.total * 1_000_003 + segs.len() as u64 + n * 7919,
                ),
            };
            let shared = keep && base_segs.contains_key(name);
            if !shared && !tensors.contains_key(&hash) {
                let encoding = match base_segs.get(name) {
                    Some(b) => Encoding::Delta {
                        base: b.clone(),
                        parts: parts_of(&mut packer, len, DELTA_RATIO, true),
                    },
                    None => Encoding::Raw {
                        parts: parts_of(&mut packer, len, STANDALONE_RATIO, false),
                    },
                };
                tensors.insert(
                    hash.clone(),
                    TensorRecord {
                        len,
                        dtype: "BF16".into(),
                        encoding,
                        bf16_cast: None,
                    },
                );
            }
            segs.push((name.clone(), hash, len));
        }
        // Closure: the base's records this one needs.
        if let Some(b) = base {
            let need: Vec<String> = tensors
                .values()
                .filter_map(|r| r.dependency().map(str::to_string))
                .collect();
            for h in need.iter().chain(segs.iter().map(|s| &s.1)) {
                if !tensors.contains_key(h) {
                    if let Some(r) = manifests[b].tensors.get(h) {
                        tensors.insert(h.clone(), r.clone());
                    }
                }
            }
        }
        // Shards of at most 5 GB, then the small files.
        let mut files = Vec::new();
        let total: u64 = segs.iter().map(|s| s.2).sum();
        let shards = total.div_ceil(SHARD).max(1);
        let per = segs.len().div_ceil(shards as usize);
        for (si, chunk) in segs.chunks(per).enumerate() {
            let header = 100 * chunk.len() as u64;
            let mut segments = vec![Segment::Bytes {
                len: header,
                parts: parts_of(&mut packer, header, 0.3, false),
            }];
            segments.extend(chunk.iter().map(|(name, h, len)| Segment::Tensor {
                name: name.clone(),
                blake3: h.clone(),
                len: *len,
            }));
            let size = header + chunk.iter().map(|s| s.2).sum::<u64>();
            let sigs = chunk
                .iter()
                .map(|(name, _, _)| {
                    blake3::hash(format!("{} {name}", arch.name).as_bytes()).to_hex()[..16]
                        .to_string()
                })
                .collect();
            files.push(FileEntry {
                path: format!("model-{:05}-of-{shards:05}.safetensors", si + 1),
                size,
                sha256: fake_hash(0x0073_6861, n * 1000 + si as u64),
                format: "safetensors".into(),
                segments,
                base: base.map(|b| BaseRef {
                    repo: manifests[b].repo.clone(),
                    revision: "main".into(),
                    path: format!("model-{:05}-of-{shards:05}.safetensors", si + 1),
                    sha256: String::new(),
                    bit_distance: 2.0,
                }),
                base_info: is_base.then(|| BaseInfo {
                    sigs,
                    fingerprint: packer.part(16 * 4096 * chunk.len() as u64 / 4, 1.0, false),
                }),
                stored_bytes: 0,
            });
        }
        for (p, len) in [
            ("config.json", 700u64),
            ("tokenizer.json", 1_800_000),
            ("README.md", 5_000),
        ] {
            files.push(FileEntry {
                path: p.into(),
                size: len,
                sha256: fake_hash(0x0063_6667, n * 10 + len),
                format: "bytes".into(),
                segments: vec![Segment::Bytes {
                    len,
                    parts: parts_of(&mut packer, len, 0.3, false),
                }],
                base: None,
                base_info: None,
                stored_bytes: 0,
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        packer.seal();
        if is_base {
            bases.push((arch_i, manifests.len()));
        }
        truth.push(base);
        manifests.push(Manifest {
            format: MANIFEST_FORMAT.into(),
            repo,
            revision: "main".into(),
            created,
            files,
            tensors,
        });
    }
    // Stages.
    let mut raw = 0;
    let mut file_dedup = 0;
    let mut tensor_dedup = 0;
    let mut pack_bytes = 0;
    let mut seen_files = HashSet::new();
    let mut seen_tensors = HashSet::new();
    let mut seen_parts = HashSet::new();
    for m in &manifests {
        for f in &m.files {
            raw += f.size;
            if !seen_files.insert(f.sha256.clone()) {
                continue;
            }
            file_dedup += f.size;
            for s in &f.segments {
                match s {
                    Segment::Bytes { len, .. } => tensor_dedup += len,
                    Segment::Tensor { blake3, len, .. } => {
                        if seen_tensors.insert(blake3.clone()) {
                            tensor_dedup += len;
                        }
                    }
                }
            }
        }
        for p in m.parts() {
            if seen_parts.insert((p.pack.clone(), p.offset)) {
                pack_bytes += p.len;
            }
        }
    }
    // Manifest sizes.
    let mut json_sizes = Vec::new();
    let mut zstd_sizes = Vec::new();
    for m in manifests.iter().step_by((manifests.len() / 200).max(1)) {
        let j = serde_json::to_vec(m).unwrap_or_default();
        json_sizes.push(j.len() as f64);
        zstd_sizes.push(zstd::bulk::compress(&j, 3).map_or(0, |z| z.len()) as f64);
    }
    let scale = manifests.len() as f64 / json_sizes.len().max(1) as f64;
    let mut manifest_bytes = spread(json_sizes);
    manifest_bytes.total *= scale;
    let mut manifest_zstd_bytes = spread(zstd_sizes);
    manifest_zstd_bytes.total *= scale;
    // The index, as every ingest builds it.
    let rss0 = rss_mb();
    let t = Instant::now();
    let index = Index::from_manifests(&manifests);
    let index_build_s = t.elapsed().as_secs_f64();
    let index_rss_mb = (rss_mb() - rss0).max(0.0);
    // Dedup lookups: every tensor of a sample of models.
    let sample: Vec<&Manifest> = manifests
        .iter()
        .step_by((manifests.len() / 100).max(1))
        .collect();
    let keys: Vec<&String> = sample.iter().flat_map(|m| m.tensors.keys()).collect();
    let t = Instant::now();
    let hits = keys
        .iter()
        .filter(|k| index.tensors.contains_key(k.as_str()))
        .count();
    let dedup_lookup_ns = t.elapsed().as_nanos() as f64 / keys.len().max(1) as f64;
    debug_assert_eq!(hits, keys.len());
    // Family lookups for every fine-tune's first shard.
    let mut cands = Vec::new();
    let mut found = true;
    let t = Instant::now();
    for (i, m) in manifests.iter().enumerate() {
        let Some(b) = truth[i] else { continue };
        let f = &m.files.iter().find(|f| f.format == "safetensors");
        let Some(f) = f else { continue };
        let arch_sigs: Vec<String> = manifests[b]
            .files
            .iter()
            .find(|x| x.path == f.path)
            .and_then(|x| x.base_info.as_ref())
            .map(|bi| bi.sigs.clone())
            .unwrap_or_default();
        let c = index.candidates(&arch_sigs, crate::family::MIN_OVERLAP, usize::MAX);
        found &= c
            .iter()
            .any(|x| x.files.iter().any(|f| f.at.repo == manifests[b].repo));
        cands.push(c.len() as f64);
    }
    let family_lookup_us = t.elapsed().as_secs_f64() * 1e6 / cands.len().max(1) as f64;
    let candidates_mean = cands.iter().sum::<f64>() / cands.len().max(1) as f64;
    let candidates_max = cands.iter().fold(0.0f64, |a, &b| a.max(b)) as u64;
    // Ingest requests for the next model: LIST (1,000 keys a page) + a GET per manifest when
    // uncached; then its packs, the HEADs of shared packs and the manifest.
    let avg_packs = packer.packs as f64 / models as f64;
    let list_pages = (manifests.len() as u64).div_ceil(1000);
    let per_model_writes = avg_packs.ceil() as u64 + 1 + 8;
    let ingest_requests_uncached = list_pages + manifests.len() as u64 + per_model_writes;
    let ingest_requests_cached = list_pages + 1 + per_model_writes;
    let ingest_manifest_bytes_uncached = manifest_bytes.total as u64;
    // Restore plans for a sample of files: merged ranged reads, as `Store::fetch` merges them.
    let mut gets = 0u64;
    let mut gb = 0f64;
    for m in sample.iter().take(20) {
        for f in m.files.iter().filter(|f| f.format == "safetensors") {
            let mut needs = Vec::new();
            for s in &f.segments {
                match s {
                    Segment::Tensor { blake3, len, .. } => {
                        let _ = plan::needs(
                            &m.tensors as &Records,
                            blake3,
                            0..*len,
                            &mut needs,
                            &mut |_| false,
                        );
                    }
                    Segment::Bytes { parts, .. } => needs.extend(parts.iter().cloned()),
                }
            }
            gets += merged_reads(&needs);
            gb += f.size as f64 / 1e9;
        }
    }
    // gc: mark every part's pack, sweep against the listing.
    let t = Instant::now();
    let mut marked: HashSet<&str> = HashSet::new();
    for m in &manifests {
        for p in m.parts() {
            marked.insert(&p.pack);
        }
    }
    let listing: Vec<String> = (0..packer.packs)
        .map(|i| fake_hash(0x7061_636b, i))
        .collect();
    let unreferenced = listing
        .iter()
        .filter(|p| !marked.contains(p.as_str()))
        .count();
    let gc_mark_sweep_s = t.elapsed().as_secs_f64();
    SimReport {
        models,
        bases: bases.len() as u64,
        reuploads,
        raw_bytes: raw,
        after_file_dedup: file_dedup,
        after_tensor_dedup: tensor_dedup,
        pack_bytes,
        packs: packer.packs,
        parts: packer.total,
        objects_per_tb: (packer.packs + models) as f64 / (pack_bytes as f64 / 1e12),
        manifest_bytes,
        manifest_zstd_bytes,
        index_build_s,
        index_tensors: index.tensors.len() as u64,
        index_rss_mb,
        dedup_lookup_ns,
        candidates_mean,
        candidates_max,
        true_base_found: found,
        family_lookup_us,
        ingest_requests_uncached,
        ingest_requests_cached,
        ingest_manifest_bytes_uncached,
        restore_gets_per_gb: gets as f64 / gb.max(1e-9),
        gc_mark_sweep_s,
        gc_unreferenced: unreferenced as u64,
    }
}

/// Reads `Store::fetch` makes for these parts (same merge rule).
fn merged_reads(parts: &[Part]) -> u64 {
    let mut by_pack: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for p in parts {
        if seen.insert((&p.pack, p.offset)) {
            by_pack
                .entry(&p.pack)
                .or_default()
                .push((p.offset, p.offset + p.len));
        }
    }
    let mut n = 0;
    for (_, mut r) in by_pack {
        r.sort_unstable();
        let mut cur: Option<(u64, u64)> = None;
        for (a, b) in r {
            cur = match cur {
                Some((s, e)) if a <= e + super::COALESCE_GAP && b.max(e) - s <= super::MAX_READ => {
                    Some((s, e.max(b)))
                }
                Some(_) => {
                    n += 1;
                    Some((a, b))
                }
                None => Some((a, b)),
            };
        }
        n += u64::from(cur.is_some());
    }
    n
}
