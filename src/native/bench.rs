//! `zipllm bench`: sizes and speeds on one base/fine-tune pair, measured side by side in one run.
//!
//! Sizes: our delta, BitX byte planes in our container, the paper's own layout (per tensor: XOR,
//! then an exponent stream and a sign+mantissa stream, zstd level 3 each), and plain `zstd -3`
//! of the fine-tune; per dtype, every method on whole tensors. Speeds: encode and decode with
//! one thread and with all threads, and decode time next to zstd decoding the plain-compressed
//! fine-tune in the same process.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::codec::blob::{self, Method};
use crate::codec::encode::{encode, EncodeOptions, Strategy};
use crate::codec::transform::{Layout, Transform};
use crate::error::{Error, Result};
use crate::model::{DType, Model};
use crate::native::{rebuild_mapped, with_threads, DeltaFile, RebuildOptions};

/// Everything `zipllm bench` measures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Bytes in the fine-tune.
    pub target_bytes: u64,
    /// zstd level used for our delta.
    pub level: i32,
    /// Our delta, default settings.
    pub ours_bytes: u64,
    /// BitX (XOR + byte planes) in our container.
    pub bitx_planes_bytes: u64,
    /// The paper's layout, per tensor, zstd level 3.
    pub paper_layout_bytes: u64,
    /// Plain zstd level 3 of the fine-tune.
    pub zstd3_bytes: u64,
    /// `ours / paper_layout`.
    pub ours_vs_paper: f64,
    /// Per dtype of the paired, changed tensors: bytes by method, whole tensors, level 3.
    pub methods_by_dtype: BTreeMap<String, BTreeMap<String, u64>>,
    /// Threads used for the "all threads" figures.
    pub threads: usize,
    /// Encode speed, MB/s of fine-tune, one thread.
    pub encode_mb_s_1: f64,
    /// Encode speed, all threads.
    pub encode_mb_s_all: f64,
    /// Decode speed, one decoding thread, every chunk checked against its blake3.
    pub decode_mb_s_1: f64,
    /// Decode speed, all threads.
    pub decode_mb_s_all: f64,
    /// Decode speed, one decoding thread, with the whole-file sha256 and blake3 computed on the
    /// output thread as well.
    pub decode_full_hash_mb_s_1: f64,
    /// zstd decoding the plain level-3 fine-tune, one thread, MB/s of output.
    pub zstd_decode_mb_s: f64,
    /// Our one-thread decode time divided by zstd's.
    pub decode_time_vs_zstd: f64,
}

fn mb_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

/// Runs `f` `runs` times and returns its last result and the best time in seconds.
fn best_of<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<(T, f64)> {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        last = Some(f()?);
        best = best.min(t.elapsed().as_secs_f64());
    }
    last.map(|v| (v, best))
        .ok_or_else(|| Error::invalid("no runs"))
}

/// The paper's layout size: per tensor, XOR with the base, fields for bf16/f32 (planes for other
/// dtypes), zstd level 3 per stream; unchanged tensors cost nothing, unpaired ones plain zstd.
pub fn paper_layout_size(base: &[u8], target: &[u8]) -> Result<u64> {
    let bm = Model::parse(base)?;
    let tm = Model::parse(target)?;
    let mut total = tm.header_len;
    for t in &tm.tensors {
        let bytes = &target[t.start as usize..t.end as usize];
        let paired = bm.counterpart(t);
        total += match paired {
            Some(b) if &base[b.start as usize..b.end as usize] == bytes => 0,
            Some(b) => {
                let layout = if matches!(t.dtype, DType::BF16 | DType::F32) {
                    Layout::Fields
                } else {
                    Layout::Planes
                };
                let method = Method::new(Transform::Xor, layout);
                blob::encode(
                    bytes,
                    Some(&base[b.start as usize..b.end as usize]),
                    t.dtype.word(),
                    method,
                    3,
                )?
                .len() as u64
            }
            None => zstd_len(bytes, 3)?,
        };
    }
    Ok(total)
}

fn zstd_len(bytes: &[u8], level: i32) -> Result<u64> {
    Ok((crate::codec::entropy::compress(bytes, level)?.len() as u64).min(bytes.len() as u64))
}

fn methods_by_dtype(base: &[u8], target: &[u8]) -> Result<BTreeMap<String, BTreeMap<String, u64>>> {
    let bm = Model::parse(base)?;
    let tm = Model::parse(target)?;
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for t in &tm.tensors {
        let Some(b) = bm.counterpart(t) else {
            continue;
        };
        let tb = &target[t.start as usize..t.end as usize];
        let bb = &base[b.start as usize..b.end as usize];
        if tb == bb {
            continue;
        }
        let row = out.entry(t.dtype.name().to_string()).or_default();
        for method in Strategy::Best.candidates(t.dtype, true) {
            let n = blob::encode(tb, Some(bb), t.dtype.word(), method, 3)?.len() as u64;
            *row.entry(method.name()).or_default() += n;
        }
    }
    Ok(out)
}

/// Measures one pair. `threads` is the "all threads" count.
pub fn run(
    base: &[u8],
    target: &[u8],
    level: i32,
    threads: usize,
    runs: usize,
) -> Result<BenchReport> {
    let options = EncodeOptions {
        level,
        ..Default::default()
    };
    let n = target.len() as u64;
    let quiet = |_: u64| {};

    let (ours, enc1) = best_of(runs, || {
        with_threads(Some(1), || encode(base, target, &options, &quiet))?
    })?;
    let (_, enc_all) = best_of(runs, || {
        with_threads(Some(threads), || encode(base, target, &options, &quiet))?
    })?;
    let bitx = with_threads(Some(threads), || {
        encode(
            base,
            target,
            &EncodeOptions {
                strategy: Strategy::Bitx,
                ..options
            },
            &quiet,
        )
    })??;
    let delta_bytes = ours.to_bytes()?;
    let delta = DeltaFile::from_bytes(delta_bytes)?;

    let decode = |t: usize, full_hash: bool| {
        best_of(runs, || {
            let mut sink = |_: &[u8]| Ok(());
            let options = RebuildOptions {
                threads: Some(t),
                full_hash,
                ..Default::default()
            };
            rebuild_mapped(base, &delta, options, &quiet, &mut sink)
        })
    };
    let (_, dec1) = decode(1, false)?;
    let (_, dec_all) = decode(threads, false)?;
    let (_, dec1_full) = decode(1, true)?;

    let plain = crate::codec::entropy::compress(target, 3)?;
    let mut out = vec![0u8; target.len()];
    let (_, zstd_d) = best_of(runs, || {
        crate::codec::entropy::Decompressor::new()?.decompress_into(&plain, &mut out)
    })?;

    let paper = with_threads(Some(threads), || paper_layout_size(base, target))??;
    let ours_bytes = delta.plan.delta_len();
    Ok(BenchReport {
        target_bytes: n,
        level,
        ours_bytes,
        bitx_planes_bytes: bitx.manifest.payload_len + bitx.manifest.to_bytes()?.len() as u64,
        paper_layout_bytes: paper,
        zstd3_bytes: plain.len() as u64,
        ours_vs_paper: ours_bytes as f64 / paper.max(1) as f64,
        methods_by_dtype: methods_by_dtype(base, target)?,
        threads,
        encode_mb_s_1: mb_s(n, enc1),
        encode_mb_s_all: mb_s(n, enc_all),
        decode_mb_s_1: mb_s(n, dec1),
        decode_mb_s_all: mb_s(n, dec_all),
        decode_full_hash_mb_s_1: mb_s(n, dec1_full),
        zstd_decode_mb_s: mb_s(n, zstd_d),
        decode_time_vs_zstd: dec1 / zstd_d.max(1e-9),
    })
}
