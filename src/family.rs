//! Family matching: which base was a model fine-tuned from?
//!
//! Three steps, all sans-I/O (callers hand in the bytes a [`SamplePlan`] asks for):
//!
//! * **Architecture**: tensor names are reduced to a canonical form (wrapper prefixes such as
//!   `model.`, `bert.` dropped), and two tables are aligned by canonical name and shape. The
//!   [`arch_signature`] hashes the sorted (name, dtype, shape) table.
//! * **Sampling**: [`SamplePlan::new`] picks 4 KiB blocks inside each tensor at positions
//!   derived from the tensor's canonical name, dtype and shape (stratified, blake3-seeded), so
//!   two parties holding different files sample the same elements without talking. A plan
//!   holding every byte is the exact mode.
//! * **Distance**: the mean number of differing bits per element between aligned samples, per
//!   dtype and overall, with a 95% error bound from the spread of per-block means. A fine-tune
//!   keeps sign, exponent and high mantissa bits; an unrelated model of the same architecture
//!   differs in about half its mantissa bits and its signs. docs/FAMILY.md gives the calibration.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{DType, Model};

/// Sample block size in bytes (a multiple of every word size).
pub const BLOCK: u64 = 4096;

/// Normalized distance (differing bits / bits per element) below which a candidate is related.
/// Calibrated in docs/FAMILY.md: fine-tunes measure 0.05 (bf16) to 0.23 (fp32), unrelated
/// weights of the same architecture 0.36 (bf16) to 0.43 (fp32).
pub const THRESHOLD: f64 = 0.30;

/// Minimum share of tensors that must line up by canonical name and shape.
pub const MIN_OVERLAP: f64 = 0.9;

/// Prefixes that wrap the same weights under different model classes.
const WRAPPERS: [&str; 8] = [
    "base_model.model.",
    "module.",
    "model.",
    "bert.",
    "roberta.",
    "transformer.",
    "encoder_model.",
    "0.auto_model.",
];

/// First components that name a module of the model itself, never a wrapper.
const STRUCTURAL: [&str; 14] = [
    "layers",
    "layer",
    "h",
    "blocks",
    "block",
    "encoder",
    "decoder",
    "embeddings",
    "embed_tokens",
    "lm_head",
    "norm",
    "pooler",
    "wte",
    "wpe",
];

/// The canonical names of a model's tensors: known wrapper prefixes dropped from each name,
/// then a first component every name shares (e.g. `distilbert.`) dropped too.
pub fn canonical_names(names: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = names
        .iter()
        .map(|n| {
            let mut s: &str = n;
            while let Some(rest) = WRAPPERS.iter().find_map(|p| s.strip_prefix(p)) {
                s = rest;
            }
            s.to_string()
        })
        .collect();
    if out.len() > 1 {
        let first = out[0].split_once('.').map(|(a, _)| format!("{a}."));
        // A shared first component is a model-class wrapper (`distilbert.`), unless it is a
        // module every transformer has: a shard of a checkpoint can hold only `layers.*` or
        // only `embeddings.*`, and must keep the names its base has.
        if let Some(p) = first.filter(|p| {
            !STRUCTURAL.contains(&p.trim_end_matches('.'))
                && !p.trim_end_matches('.').bytes().all(|b| b.is_ascii_digit())
                && out
                    .iter()
                    .all(|n| n.starts_with(p.as_str()) && n.len() > p.len())
        }) {
            for n in &mut out {
                *n = n[p.len()..].to_string();
            }
        }
    }
    out
}

/// One tensor of a fingerprint's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSig {
    /// Name as in the file.
    pub name: String,
    /// Canonical name (see [`canonical_names`]).
    pub canonical: String,
    /// Dtype name.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Bytes.
    pub len: u64,
}

pub fn tensor_sigs(model: &Model) -> Vec<TensorSig> {
    let names: Vec<&str> = model.tensors.iter().map(|t| t.name.as_str()).collect();
    model
        .tensors
        .iter()
        .zip(canonical_names(&names))
        .map(|(t, canonical)| TensorSig {
            name: t.name.clone(),
            canonical,
            dtype: t.dtype.name().to_string(),
            shape: t.shape.clone(),
            len: t.len(),
        })
        .collect()
}

/// blake3 (hex) of the sorted `canonical-name dtype shape` lines: equal for the same
/// architecture and dtypes whatever the wrapper prefixes and tensor order.
pub fn arch_signature(sigs: &[TensorSig]) -> String {
    let mut lines: Vec<String> = sigs
        .iter()
        .map(|t| format!("{} {} {:?}\n", t.canonical, t.dtype, t.shape))
        .collect();
    lines.sort();
    blake3::hash(lines.concat().as_bytes()).to_hex().to_string()
}

/// How two tensor tables line up.
#[derive(Debug, Clone, Serialize)]
pub struct Alignment {
    /// Tensors matched by canonical name and shape, over the larger table's count.
    pub overlap: f64,
    /// Matched pairs: (index in a, index in b).
    pub pairs: Vec<(usize, usize)>,
    /// Matched pairs whose dtypes differ.
    pub dtype_mismatches: usize,
}

/// Aligns two tables by canonical name and shape.
pub fn align(a: &[TensorSig], b: &[TensorSig]) -> Alignment {
    let by_name: HashMap<&str, usize> = b
        .iter()
        .enumerate()
        .map(|(i, t)| (t.canonical.as_str(), i))
        .collect();
    let mut pairs = Vec::new();
    let mut dtype_mismatches = 0;
    for (i, t) in a.iter().enumerate() {
        if let Some(&j) = by_name.get(t.canonical.as_str()) {
            if b[j].shape == t.shape {
                pairs.push((i, j));
                dtype_mismatches += usize::from(b[j].dtype != t.dtype);
            }
        }
    }
    let denom = a.len().max(b.len()).max(1);
    Alignment {
        overlap: pairs.len() as f64 / denom as f64,
        pairs,
        dtype_mismatches,
    }
}

/// One sampled block: `len` bytes at `offset` within tensor `tensor` of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Index into the fingerprint's tensor table.
    pub tensor: u32,
    /// Offset within the tensor's bytes.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

fn merge_ranges(blocks: &[Block], starts: &[u64]) -> Vec<Range<u64>> {
    let mut ranges: Vec<Range<u64>> = Vec::new();
    for b in blocks {
        let s = starts[b.tensor as usize] + b.offset;
        match ranges.last_mut() {
            Some(r) if r.end == s => r.end = s + b.len,
            _ => ranges.push(s..s + b.len),
        }
    }
    ranges
}

/// Which blocks of a model to read.
#[derive(Debug, Clone)]
pub struct SamplePlan {
    /// The model's tensor table.
    pub tensors: Vec<TensorSig>,
    /// Blocks, in file order.
    pub blocks: Vec<Block>,
    /// Absolute file ranges of the blocks, adjacent ones merged.
    pub ranges: Vec<Range<u64>>,
    starts: Vec<u64>,
}

fn seeded(t: &TensorSig) -> blake3::OutputReader {
    let mut h = blake3::Hasher::new_derive_key("zipllm family sample v1");
    h.update(t.canonical.as_bytes());
    h.update(&[0]);
    h.update(t.dtype.as_bytes());
    h.update(format!("{:?}", t.shape).as_bytes());
    h.finalize_xof()
}

impl SamplePlan {
    /// Samples about `fraction` of every tensor's bytes (at least one block of each, whole
    /// tensors when they are smaller than a block); `fraction >= 1` takes everything.
    pub fn new(model: &Model, fraction: f64) -> SamplePlan {
        Self::build(
            model,
            |len| (len as f64 * fraction / BLOCK as f64).ceil() as u64,
            fraction >= 1.0,
        )
    }

    /// A plan of `count(len)` blocks from each tensor of `len` bytes (all of it with `whole`).
    fn build(model: &Model, count: impl Fn(u64) -> u64, whole: bool) -> SamplePlan {
        let tensors = tensor_sigs(model);
        let mut blocks = Vec::new();
        for (i, (t, sig)) in model.tensors.iter().zip(&tensors).enumerate() {
            let len = t.len();
            if len == 0 {
                continue;
            }
            let whole_blocks = len / BLOCK;
            if whole_blocks == 0 || whole {
                blocks.push(Block {
                    tensor: i as u32,
                    offset: 0,
                    len,
                });
                continue;
            }
            let n = count(len).clamp(1, whole_blocks);
            // Stratified: one block in each of n equal strata, its position drawn from the
            // tensor's own seed.
            let mut rng = seeded(sig);
            for k in 0..n {
                let lo = k * whole_blocks / n;
                let hi = ((k + 1) * whole_blocks / n).max(lo + 1);
                let mut r = [0u8; 8];
                rng.fill(&mut r);
                let pick = lo + u64::from_le_bytes(r) % (hi - lo);
                blocks.push(Block {
                    tensor: i as u32,
                    offset: pick * BLOCK,
                    len: BLOCK,
                });
            }
        }
        let starts: Vec<u64> = model.tensors.iter().map(|t| t.start).collect();
        let ranges = merge_ranges(&blocks, &starts);
        SamplePlan {
            tensors,
            blocks,
            ranges,
            starts,
        }
    }

    /// A plan taking the same `blocks` blocks of every tensor (fewer from a tensor with fewer
    /// whole blocks; whole tensors smaller than a block), wherever the tensor sits in whichever
    /// file: two models' plans sample the same elements of every tensor they share, so their
    /// fingerprints can be compared with each other ([`compare_fingerprints`]).
    pub fn per_tensor(model: &Model, blocks: u64) -> SamplePlan {
        Self::build(model, |len| (len / BLOCK).min(blocks), false)
    }

    /// A plan reading at most `min(max_bytes, share × file)` bytes, header included. When one
    /// block per tensor would not fit, the smallest tensors are left out (deterministically:
    /// the choice depends only on the tensor table).
    pub fn with_budget(model: &Model, max_bytes: u64, share: f64) -> SamplePlan {
        let budget = ((max_bytes as f64).min(share * model.file_len as f64) as u64)
            .saturating_sub(model.header_len);
        let data = (model.file_len - model.header_len).max(1);
        let mut plan = SamplePlan::new(model, budget as f64 / data as f64);
        if plan.bytes() > budget {
            let mut per_tensor: BTreeMap<u32, u64> = BTreeMap::new();
            for b in &plan.blocks {
                *per_tensor.entry(b.tensor).or_default() += b.len;
            }
            let mut order: Vec<(u32, u64)> = per_tensor.into_iter().collect();
            order.sort_by_key(|&(t, _)| (std::cmp::Reverse(model.tensors[t as usize].len()), t));
            let mut keep = std::collections::BTreeSet::new();
            let mut used = 0u64;
            for (t, bytes) in order {
                if used + bytes <= budget {
                    used += bytes;
                    keep.insert(t);
                }
            }
            plan.blocks.retain(|b| keep.contains(&b.tensor));
            plan.ranges = merge_ranges(&plan.blocks, &plan.starts);
        }
        plan
    }

    /// Total bytes the plan reads.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// Builds the fingerprint from the bytes of [`SamplePlan::ranges`], in order.
    pub fn fingerprint(&self, model: &Model, range_bytes: &[Vec<u8>]) -> Result<Fingerprint> {
        if range_bytes.len() != self.ranges.len()
            || range_bytes
                .iter()
                .zip(&self.ranges)
                .any(|(b, r)| b.len() as u64 != r.end - r.start)
        {
            return Err(Error::invalid(
                "sample bytes do not match the plan's ranges",
            ));
        }
        let mut samples = Vec::with_capacity(self.blocks.len());
        let mut ri = 0usize;
        for b in &self.blocks {
            let s = self.starts[b.tensor as usize] + b.offset;
            while self.ranges[ri].end <= s {
                ri += 1;
            }
            let at = (s - self.ranges[ri].start) as usize;
            samples.push(Sample {
                block: *b,
                bytes: range_bytes[ri][at..at + b.len as usize].to_vec(),
            });
        }
        Ok(Fingerprint {
            version: 1,
            file_len: model.file_len,
            header_len: model.header_len,
            arch: arch_signature(&self.tensors),
            tensors: self.tensors.clone(),
            samples,
            bytes_read: model.header_len + self.bytes(),
        })
    }
}

/// One sampled block's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Where it is.
    pub block: Block,
    /// Its bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// What a party knows of a model after reading its header and sampled blocks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Fingerprint layout version.
    pub version: u32,
    /// File length.
    pub file_len: u64,
    /// Header region length.
    pub header_len: u64,
    /// [`arch_signature`] of the table.
    pub arch: String,
    /// Tensor table.
    pub tensors: Vec<TensorSig>,
    /// Sampled blocks.
    pub samples: Vec<Sample>,
    /// Bytes read to make it (header and samples).
    pub bytes_read: u64,
}

impl Fingerprint {
    /// One fingerprint for several files read as one model (a model stored in shards): their
    /// tensor tables one after the other, samples renumbered to match.
    pub fn merge(parts: &[Fingerprint]) -> Fingerprint {
        let mut tensors = Vec::new();
        let mut samples = Vec::new();
        let (mut file_len, mut header_len, mut bytes_read) = (0, 0, 0);
        for p in parts {
            let first = tensors.len() as u32;
            tensors.extend(p.tensors.iter().cloned());
            samples.extend(p.samples.iter().map(|s| {
                let mut s = s.clone();
                s.block.tensor += first;
                s
            }));
            file_len += p.file_len;
            header_len += p.header_len;
            bytes_read += p.bytes_read;
        }
        Fingerprint {
            version: parts.first().map_or(1, |p| p.version),
            file_len,
            header_len,
            arch: arch_signature(&tensors),
            tensors,
            samples,
            bytes_read,
        }
    }
}

/// First bytes of a fingerprint file.
pub const FINGERPRINT_MAGIC: &[u8; 8] = b"ZLLMFP1\n";

impl Fingerprint {
    /// A compact file: magic, u64 length of a JSON description (everything but the sample
    /// bytes), the JSON, then every sample's bytes in order.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut meta = self.clone();
        let data: Vec<u8> = meta
            .samples
            .iter_mut()
            .flat_map(|s| std::mem::take(&mut s.bytes))
            .collect();
        let json = serde_json::to_vec(&meta)
            .map_err(|e| Error::invalid(format!("cannot write fingerprint: {e}")))?;
        let mut out = FINGERPRINT_MAGIC.to_vec();
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Reads a file written by [`Fingerprint::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Fingerprint> {
        let bad = |what: &str| Error::invalid(format!("not a zipllm fingerprint: {what}"));
        if bytes.len() < 16 || &bytes[..8] != FINGERPRINT_MAGIC {
            return Err(bad("bad magic"));
        }
        let n = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| bad("short"))?) as usize;
        let json = bytes
            .get(16..16usize.saturating_add(n))
            .ok_or_else(|| bad("truncated description"))?;
        let mut fp: Fingerprint = serde_json::from_slice(json).map_err(|e| bad(&e.to_string()))?;
        let mut at = 16 + n;
        for s in &mut fp.samples {
            let end = at
                .checked_add(s.block.len as usize)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| bad("truncated samples"))?;
            s.bytes = bytes[at..end].to_vec();
            at = end;
        }
        if at != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(fp)
    }
}

/// Fingerprints a model held in memory (or mapped), reading about `fraction` of it.
pub fn fingerprint_bytes(file: &[u8], fraction: f64) -> Result<Fingerprint> {
    let model = Model::parse(file)?;
    let plan = SamplePlan::new(&model, fraction);
    let bytes: Vec<Vec<u8>> = plan
        .ranges
        .iter()
        .map(|r| file[r.start as usize..r.end as usize].to_vec())
        .collect();
    plan.fingerprint(&model, &bytes)
}

/// Distance figures for one dtype.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DtypeDistance {
    /// Mean differing bits per element.
    pub bit_distance: f64,
    /// Elements compared.
    pub elements: u64,
}

/// The verdict on one candidate.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    /// The candidate as the caller named it.
    pub candidate: String,
    /// `related`, `unrelated` or `incompatible`.
    pub verdict: String,
    /// Why, for `incompatible`; a summary otherwise.
    pub reason: String,
    /// Mean differing bits per element over all compared elements (None when incompatible).
    pub bit_distance: Option<f64>,
    /// `bit_distance` over the bits of an element, what the threshold applies to.
    pub normalized_distance: Option<f64>,
    /// The normalized threshold.
    pub threshold: f64,
    /// 95% bound on the normalized distance's sampling error (0 in exact mode).
    pub error_bound: f64,
    /// Probability-like confidence in the verdict, from the distance's margin to the threshold
    /// in units of its standard error.
    pub confidence: f64,
    /// Share of tensors that line up by name and shape.
    pub overlap: f64,
    /// Per dtype.
    pub per_dtype: BTreeMap<String, DtypeDistance>,
    /// Elements compared.
    pub elements: u64,
}

fn normal_cdf(z: f64) -> f64 {
    // Abramowitz–Stegun 7.1.26 erf approximation (error < 1.5e-7).
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Compares a target's fingerprint with a candidate base. `read(tensor_index_in_candidate,
/// offset, len)` returns candidate bytes; only blocks of aligned tensors are asked for.
pub fn compare(
    candidate_name: &str,
    target: &Fingerprint,
    candidate: &Model,
    mut read: impl FnMut(usize, u64, u64) -> Result<Vec<u8>>,
) -> Result<Verdict> {
    compare_sigs(
        candidate_name,
        target,
        &tensor_sigs(candidate),
        false,
        |i, o, l| read(i, o, l).map(Some),
    )
}

/// Compares two fingerprints sampled with the same per-tensor plan
/// ([`SamplePlan::per_tensor`]): blocks the candidate did not sample are skipped, so no bytes
/// beyond the two fingerprints are needed (what the store does with thousands of bases).
pub fn compare_fingerprints(
    candidate_name: &str,
    target: &Fingerprint,
    candidate: &Fingerprint,
) -> Result<Verdict> {
    compare_fingerprints_as(candidate_name, target, candidate, false)
}

/// [`compare_fingerprints`] for a target that may be a part of the candidate: one shard of a
/// model against the whole of its base, or against a base stored in shards of other sizes
/// ([`Fingerprint::merge`] of them). The architecture gate then asks that [`MIN_OVERLAP`] of
/// the *target's* tensors line up, rather than of the larger table; bit distance decides as
/// always.
pub fn compare_fingerprints_within(
    candidate_name: &str,
    target: &Fingerprint,
    candidate: &Fingerprint,
) -> Result<Verdict> {
    compare_fingerprints_as(candidate_name, target, candidate, true)
}

fn compare_fingerprints_as(
    candidate_name: &str,
    target: &Fingerprint,
    candidate: &Fingerprint,
    within: bool,
) -> Result<Verdict> {
    let blocks: HashMap<(u32, u64, u64), &[u8]> = candidate
        .samples
        .iter()
        .map(|s| {
            (
                (s.block.tensor, s.block.offset, s.block.len),
                s.bytes.as_slice(),
            )
        })
        .collect();
    compare_sigs(
        candidate_name,
        target,
        &candidate.tensors,
        within,
        |i, off, len| Ok(blocks.get(&(i as u32, off, len)).map(|b| b.to_vec())),
    )
}

/// [`compare`] against a candidate's tensor table; `read` answers `None` for bytes it does not
/// have (those samples are skipped).
fn compare_sigs(
    candidate_name: &str,
    target: &Fingerprint,
    cand_sigs: &[TensorSig],
    within: bool,
    mut read: impl FnMut(usize, u64, u64) -> Result<Option<Vec<u8>>>,
) -> Result<Verdict> {
    let mut al = align(&target.tensors, cand_sigs);
    if within {
        al.overlap = al.pairs.len() as f64 / target.tensors.len().max(1) as f64;
    }
    let mut v = Verdict {
        candidate: candidate_name.to_string(),
        verdict: "incompatible".into(),
        reason: String::new(),
        bit_distance: None,
        normalized_distance: None,
        threshold: THRESHOLD,
        error_bound: 0.0,
        confidence: 1.0,
        overlap: al.overlap,
        per_dtype: BTreeMap::new(),
        elements: 0,
    };
    if al.overlap < MIN_OVERLAP {
        v.reason = format!(
            "different architecture: {} of {} target tensors line up by name and shape with the candidate's {}",
            al.pairs.len(),
            target.tensors.len(),
            cand_sigs.len()
        );
        return Ok(v);
    }
    if al.dtype_mismatches * 2 > al.pairs.len() {
        let (i, j) = al
            .pairs
            .iter()
            .copied()
            .find(|&(i, j)| target.tensors[i].dtype != cand_sigs[j].dtype)
            .unwrap_or((0, 0));
        v.reason = format!(
            "dtype mismatch: the target stores {} where the candidate stores {} (e.g. `{}`); compare against a base in the same dtype",
            target.tensors[i].dtype, cand_sigs[j].dtype, target.tensors[i].name
        );
        return Ok(v);
    }
    let partner: HashMap<usize, usize> = al.pairs.iter().copied().collect();
    let mut block_means = Vec::new();
    let mut bits_total = 0u64;
    let mut elem_bits_total = 0u64;
    for s in &target.samples {
        let ti = s.block.tensor as usize;
        let Some(&ci) = partner.get(&ti) else {
            continue;
        };
        let dtype = &target.tensors[ti].dtype;
        if cand_sigs[ci].dtype != *dtype {
            continue;
        }
        // A block of one repeated value (zeros, ones: initial values every model of the
        // architecture shares until trained) says nothing about lineage.
        if is_constant(&s.bytes, dtype) {
            continue;
        }
        let Some(other) = read(ci, s.block.offset, s.block.len)? else {
            continue;
        };
        if other.len() != s.bytes.len() {
            return Err(Error::invalid(
                "candidate returned the wrong number of bytes",
            ));
        }
        let full_bits = DType::all()
            .iter()
            .find(|d| d.name() == dtype)
            .map_or(8, |d| d.bits().max(1));
        // F32 elements are compared on their upper 16 bits (sign, exponent, 7 mantissa bits:
        // the bf16 view). Any training reshuffles the low 16 mantissa bits of every weight
        // it touches, related or not, so counting them drowns the signal; see docs/FAMILY.md.
        let (bits, word_bits, elements) = if dtype == "F32" {
            let bits: u64 = s
                .bytes
                .chunks_exact(4)
                .zip(other.chunks_exact(4))
                .map(|(a, b)| ((a[2] ^ b[2]).count_ones() + (a[3] ^ b[3]).count_ones()) as u64)
                .sum();
            (bits, 16, (s.bytes.len() as u64 / 4).max(1))
        } else {
            let bits: u64 = s
                .bytes
                .iter()
                .zip(&other)
                .map(|(a, b)| (a ^ b).count_ones() as u64)
                .sum();
            (
                bits,
                full_bits,
                (s.bytes.len() as u64 * 8 / full_bits).max(1),
            )
        };
        let e = v.per_dtype.entry(dtype.clone()).or_default();
        e.bit_distance =
            (e.bit_distance * e.elements as f64 + bits as f64) / (e.elements + elements) as f64;
        e.elements += elements;
        v.elements += elements;
        bits_total += bits;
        elem_bits_total += elements * word_bits;
        block_means.push((bits as f64 / (elements * word_bits) as f64, elements as f64));
    }
    if v.elements == 0 {
        v.reason = "no sampled elements to compare".into();
        return Ok(v);
    }
    let norm = bits_total as f64 / elem_bits_total as f64;
    let dist = bits_total as f64 / v.elements as f64;
    // Standard error of the element-weighted mean of block means.
    let w: f64 = block_means.iter().map(|b| b.1).sum();
    let var: f64 = block_means
        .iter()
        .map(|(m, n)| n * (m - norm).powi(2))
        .sum::<f64>()
        / w;
    let k = block_means.len() as f64;
    let exact = target
        .samples
        .iter()
        .map(|s| s.bytes.len() as u64)
        .sum::<u64>()
        + target.header_len
        >= target.file_len;
    let se = if exact || k < 2.0 {
        0.0
    } else {
        (var / (k - 1.0)).sqrt()
    };
    v.bit_distance = Some(dist);
    v.normalized_distance = Some(norm);
    v.error_bound = 1.96 * se;
    v.confidence = if se == 0.0 {
        1.0
    } else {
        normal_cdf((norm - THRESHOLD).abs() / se)
    };
    let related = norm < THRESHOLD;
    v.verdict = if related { "related" } else { "unrelated" }.into();
    v.reason = format!(
        "{:.3} differing bits per bit (± {:.3}) over {} elements, {} the threshold {THRESHOLD}",
        norm,
        v.error_bound,
        v.elements,
        if related { "below" } else { "above" }
    );
    Ok(v)
}

/// The candidate bytes [`compare`] will ask for, as (candidate tensor index, offset, length):
/// lets an asynchronous caller fetch them all first.
pub fn reads_needed(target: &Fingerprint, candidate: &Model) -> Result<Vec<(usize, u64, u64)>> {
    let mut wanted = Vec::new();
    compare("", target, candidate, |i, off, len| {
        wanted.push((i, off, len));
        Ok(vec![0; len as usize])
    })?;
    Ok(wanted)
}

/// Compares a fingerprint with a candidate held in memory.
pub fn compare_bytes(
    candidate_name: &str,
    target: &Fingerprint,
    candidate: &[u8],
) -> Result<Verdict> {
    let model = Model::parse(candidate)?;
    let starts: Vec<(u64, u64)> = model.tensors.iter().map(|t| (t.start, t.end)).collect();
    compare(candidate_name, target, &model, |i, off, len| {
        let (s, e) = starts[i];
        let a = s + off;
        if a + len > e {
            return Err(Error::invalid("sample past the end of a tensor"));
        }
        Ok(candidate[a as usize..(a + len) as usize].to_vec())
    })
}

/// Whether `bytes` hold one value repeated (by the dtype's word).
fn is_constant(bytes: &[u8], dtype: &str) -> bool {
    let word = DType::all()
        .iter()
        .find(|d| d.name() == dtype)
        .map_or(1, |d| d.word().max(1));
    match bytes.get(..word) {
        Some(first) => bytes.chunks_exact(word).all(|w| w == first),
        None => true,
    }
}

/// Ranks verdicts: related first by distance, then unrelated by distance, then incompatible.
pub fn rank(verdicts: &mut [Verdict]) {
    let key = |v: &Verdict| {
        let group = match v.verdict.as_str() {
            "related" => 0,
            "unrelated" => 1,
            _ => 2,
        };
        (group, v.normalized_distance.unwrap_or(f64::INFINITY))
    };
    verdicts.sort_by(|a, b| {
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
}

/// The dtype names in a table, for messages.
pub fn dtypes(sigs: &[TensorSig]) -> Vec<String> {
    let mut d: Vec<String> = sigs.iter().map(|t| t.dtype.clone()).collect();
    d.sort();
    d.dedup();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_prefixes_line_up() {
        let a = canonical_names(&["bert.embeddings.word", "bert.encoder.layer.0.w"]);
        let b = canonical_names(&["embeddings.word", "encoder.layer.0.w"]);
        assert_eq!(a, b);
        let c = canonical_names(&["model.layers.0.w", "lm_head.weight"]);
        assert_eq!(c, vec!["layers.0.w", "lm_head.weight"]);
        let d = canonical_names(&["distilbert.a.w", "distilbert.b.w"]);
        assert_eq!(d, vec!["a.w", "b.w"]);
        // A shard holding only one module keeps its names.
        let e = canonical_names(&["model.layers.30.w", "model.layers.31.w"]);
        assert_eq!(e, vec!["layers.30.w", "layers.31.w"]);
        let f = canonical_names(&["embeddings.word.weight", "embeddings.norm.weight"]);
        assert_eq!(f, vec!["embeddings.word.weight", "embeddings.norm.weight"]);
    }

    #[test]
    fn normal_cdf_is_sane() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-6);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-3);
        assert!(normal_cdf(-3.0) < 0.002);
    }
}
