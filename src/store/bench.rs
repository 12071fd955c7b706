//! `zipllm store bench CORPUS_DIR`: the paper's table for a corpus made by
//! `scripts/store_corpus.py`, next to what other ways of storing the same files give, and the
//! store's speeds next to single-pair encode/decode, all in one run.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::{self, IngestOptions, Store};

/// One repo of `corpus.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct CorpusRepo {
    /// Repo id.
    pub repo: String,
    /// Folder, relative to the corpus.
    pub dir: String,
    /// `base`, `finetune`, `reupload`, `resharded`, `unrelated`, …
    pub role: String,
    /// The repo whose weights a fine-tune came from.
    pub expect_base: Option<String>,
}

/// Speeds at one thread count.
#[derive(Debug, Clone, Serialize)]
pub struct Speed {
    /// Threads.
    pub threads: usize,
    /// Ingest of the whole corpus, MB/s of input.
    pub ingest_mb_s: f64,
    /// Ingest of the MiniLM repos alone (the first `minilm` repos), MB/s.
    pub ingest_minilm_mb_s: f64,
    /// Restore of every revision, MB/s of output, by one store handle (parts kept decoded
    /// from one repo's restore serve the next).
    pub restore_mb_s: f64,
    /// Restore of the MiniLM repos, MB/s, the same way.
    pub restore_minilm_mb_s: f64,
    /// Restore of every revision, each by a fresh store handle (as one `zipllm store restore`
    /// each), MB/s.
    pub restore_cold_mb_s: f64,
    /// The MiniLM repos, each by a fresh handle, MB/s.
    pub restore_cold_minilm_mb_s: f64,
    /// MB restored per CPU second of the process (every thread, user and system), MiniLM
    /// repos, one handle and fresh handles (Linux).
    pub restore_minilm_mb_per_cpu_s: Option<(f64, f64)>,
}

/// Lets writeback of what earlier steps wrote finish (Linux: `sync`), so that a timed restore
/// does not wait on it in its own fsyncs.
fn settle_disk() {
    #[cfg(target_os = "linux")]
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe {
        libc::sync()
    };
}

/// CPU seconds this process has used, every thread, user and system (Linux).
fn cpu_seconds() -> Option<f64> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getrusage writes the struct it is given and nothing else.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
            return None;
        }
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
        Some(t(u.ru_utime) + t(u.ru_stime))
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// The bench's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Every file of every repo.
    pub raw: u64,
    /// The store's stages.
    pub stats: store::Stats,
    /// Sum of `zstd -3` of every file.
    pub zstd3: u64,
    /// Content-defined chunks (FastCDC, 8/64/128 KiB as Xet) deduplicated, each zstd -3.
    pub cdc_zstd3: u64,
    /// The MiniLM family alone (base, casts, re-upload, fine-tunes, shards): bytes, chunk dedup
    /// + zstd -3 of them, and what a store holding only them stores.
    pub minilm: (u64, u64, u64),
    /// Distinct chunks.
    pub cdc_chunks: u64,
    /// Best single-file result per distinct file: the single-pair delta for a fine-tune (against
    /// its known base, in the same run), otherwise zstd -3 or our standalone compression,
    /// whichever is smaller.
    pub best_single: u64,
    /// Sum of single-pair `encode` deltas of the fine-tunes alone.
    pub single_pair_deltas: u64,
    /// Whether every fine-tune got the expected base and every unrelated model none.
    pub bases_right: bool,
    /// Base choices: (repo, file, base repo or null, expected).
    pub bases: Vec<(String, String, Option<String>, Option<String>)>,
    /// Ingest and restore speeds.
    pub speeds: Vec<Speed>,
    /// Single-pair encode and decode MB/s on one thread (ft-a fp32 and bf16 when present).
    pub single_pair_mb_s: Vec<(String, f64, f64)>,
    /// Requests per GB ingested and restored (1 thread run).
    pub requests_per_gb: (f64, f64),
    /// Objects per GB of input.
    pub objects_per_gb: f64,
}

fn files_of(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in
            std::fs::read_dir(&d).map_err(|e| Error::io(format!("listing {}", d.display()), e))?
        {
            let p = e.map_err(|e| Error::io("listing", e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
}

fn zstd3(b: &[u8]) -> Result<u64> {
    zstd::bulk::compress(b, 3)
        .map(|z| z.len() as u64)
        .map_err(|e| Error::io("zstd", e))
}

/// Runs the bench on `corpus` (with its `corpus.json`), using `work` for the stores.
pub fn run(corpus: &Path, work: &Path) -> Result<BenchReport> {
    let list: Vec<CorpusRepo> = serde_json::from_slice(&read(&corpus.join("corpus.json"))?)
        .map_err(|e| Error::invalid(format!("corpus.json: {e}")))?;
    let is_minilm = |r: &CorpusRepo| r.repo.contains("MiniLM") || r.repo.starts_with("example/");
    // Baselines over every file.
    let mut raw = 0;
    let mut zstd_total = 0;
    let mut seen_chunks = HashSet::new();
    let mut cdc = 0;
    let mut seen_files = HashSet::new();
    let mut best_single = 0;
    let mut single_pair_deltas = 0;
    let mut single_pair_mb_s = Vec::new();
    let mut minilm_raw = 0;
    let mut minilm_cdc = 0;
    let mut minilm_chunks = HashSet::new();
    for r in &list {
        let dir = corpus.join(&r.dir);
        for p in files_of(&dir)? {
            let bytes = read(&p)?;
            raw += bytes.len() as u64;
            let z = zstd3(&bytes)?;
            zstd_total += z;
            if is_minilm(r) {
                minilm_raw += bytes.len() as u64;
            }
            for c in fastcdc::v2020::FastCDC::new(&bytes, 8 << 10, 64 << 10, 128 << 10) {
                let chunk = &bytes[c.offset..c.offset + c.length];
                let h = blake3::hash(chunk);
                let fresh = seen_chunks.insert(h);
                let fresh_minilm = is_minilm(r) && minilm_chunks.insert(h);
                if fresh || fresh_minilm {
                    let z = zstd3(chunk)?;
                    cdc += if fresh { z } else { 0 };
                    minilm_cdc += if fresh_minilm { z } else { 0 };
                }
            }
            if !seen_files.insert(blake3::hash(&bytes)) {
                continue;
            }
            let mut best = z;
            let is_st = p.extension().is_some_and(|e| e == "safetensors");
            if is_st {
                // Our standalone compression, as a delta against nothing would be.
                let own = standalone_len(&bytes)?;
                best = best.min(own);
            }
            if let (true, Some(b)) = (is_st, &r.expect_base) {
                let base_repo = list
                    .iter()
                    .find(|x| &x.repo == b)
                    .ok_or_else(|| Error::invalid(format!("corpus.json: no repo {b}")))?;
                let base_path = corpus.join(&base_repo.dir).join("model.safetensors");
                let base = read(&base_path)?;
                // One thread, like the store's per-thread figures.
                let (delta_bytes, enc_s, rebuilt, dec_s) =
                    crate::native::with_threads(Some(1), || -> Result<_> {
                        let t0 = Instant::now();
                        let delta = crate::codec::encode::encode(
                            &base,
                            &bytes,
                            &crate::EncodeOptions::default(),
                            &|_| {},
                        )?;
                        let delta_bytes = delta.to_bytes()?;
                        let enc_s = t0.elapsed().as_secs_f64();
                        let t1 = Instant::now();
                        let rebuilt = crate::rebuild_in_memory(&base, &delta_bytes)?;
                        Ok((delta_bytes, enc_s, rebuilt, t1.elapsed().as_secs_f64()))
                    })??;
                if rebuilt != bytes {
                    return Err(Error::internal(
                        "a single-pair delta did not rebuild its file",
                    ));
                }
                let d = delta_bytes.len() as u64;
                single_pair_deltas += d;
                best = best.min(d);
                if r.role == "finetune" {
                    let mb = bytes.len() as f64 / 1e6;
                    single_pair_mb_s.push((r.repo.clone(), mb / enc_s, mb / dec_s));
                }
            }
            best_single += best;
        }
    }
    // The store, at 1 and 2 threads, each in a fresh folder.
    let mut speeds = Vec::new();
    let mut stats = None;
    let mut bases = Vec::new();
    let mut requests_per_gb = (0.0, 0.0);
    let mut objects_per_gb = 0.0;
    for threads in [1usize, 2] {
        let dir = work.join(format!("store-{threads}"));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open(
            dir.to_str()
                .ok_or_else(|| Error::invalid("work path is not UTF-8"))?,
        )?;
        let (mut all_in, mut all_s, mut ml_in, mut ml_s) = (0u64, 0f64, 0u64, 0f64);
        let before = s.objects().requests();
        let mut reports = Vec::new();
        for r in &list {
            let rep = crate::native::with_threads(Some(threads), || {
                store::ingest::ingest(&s, &r.repo, &corpus.join(&r.dir), &IngestOptions::default())
            })??;
            all_in += rep.bytes_in;
            all_s += rep.seconds;
            if is_minilm(r) {
                ml_in += rep.bytes_in;
                ml_s += rep.seconds;
            }
            reports.push(rep);
        }
        let ingest_req = s.objects().requests().since(&before);
        let out = work.join(format!("restore-{threads}"));
        // Restores every repo: by `s` (cold: by a fresh handle each), checking every file.
        let store_dir = dir
            .to_str()
            .ok_or_else(|| Error::invalid("work path is not UTF-8"))?;
        let restore_all = |cold: bool| -> Result<(f64, f64, Option<f64>, u64)> {
            let _ = std::fs::remove_dir_all(&out);
            settle_disk();
            // One session handle for the whole corpus, opened with nothing decoded yet.
            let mut session = Store::open(store_dir)?;
            session.keep_decoded(crate::store::decoded::Decoded::from_env().budget());
            let (mut r_all, mut r_s, mut r_ml, mut r_ml_s, mut ml_cpu) =
                (0u64, 0f64, 0u64, 0f64, Some(0f64));
            let mut requests = 0;
            for r in &list {
                let fresh;
                let by = if cold {
                    fresh = Store::open(store_dir)?;
                    &fresh
                } else {
                    &session
                };
                let cpu = cpu_seconds();
                let rep = crate::native::with_threads(Some(threads), || {
                    store::restore::restore(by, &r.repo, "main", &out.join(&r.dir), None)
                })??;
                r_all += rep.bytes;
                r_s += rep.seconds;
                requests += rep.requests.total();
                if is_minilm(r) {
                    r_ml += rep.bytes;
                    r_ml_s += rep.seconds;
                    ml_cpu = match (ml_cpu, cpu, cpu_seconds()) {
                        (Some(t), Some(a), Some(b)) => Some(t + b - a),
                        _ => None,
                    };
                }
            }
            // Byte-exact, file by file.
            for r in &list {
                for p in files_of(&corpus.join(&r.dir))? {
                    let rel = p
                        .strip_prefix(corpus)
                        .map_err(|_| Error::internal("path outside corpus"))?;
                    if read(&p)? != read(&out.join(rel))? {
                        return Err(Error::internal(format!(
                            "{} did not restore byte for byte",
                            rel.display()
                        )));
                    }
                }
            }
            let mb = |b: u64| b as f64 / 1e6;
            Ok((
                mb(r_all) / r_s,
                mb(r_ml) / r_ml_s,
                ml_cpu.map(|c| mb(r_ml) / c),
                requests,
            ))
        };
        let (cold_mb_s, cold_ml_mb_s, cold_cpu, restore_req) = restore_all(true)?;
        let (warm_mb_s, warm_ml_mb_s, warm_cpu, _) = restore_all(false)?;
        let _ = std::fs::remove_dir_all(&out);
        speeds.push(Speed {
            threads,
            ingest_mb_s: all_in as f64 / 1e6 / all_s,
            ingest_minilm_mb_s: ml_in as f64 / 1e6 / ml_s,
            restore_mb_s: warm_mb_s,
            restore_minilm_mb_s: warm_ml_mb_s,
            restore_cold_mb_s: cold_mb_s,
            restore_cold_minilm_mb_s: cold_ml_mb_s,
            restore_minilm_mb_per_cpu_s: warm_cpu.zip(cold_cpu),
        });
        if threads == 1 {
            let gb = all_in as f64 / 1e9;
            requests_per_gb = (ingest_req.total() as f64 / gb, restore_req as f64 / gb);
            let st = store::maintain::stats(&s)?;
            objects_per_gb = (st.packs + st.revisions) as f64 / gb;
            for (r, rep) in list.iter().zip(&reports) {
                for f in &rep.files {
                    if f.format != "safetensors" {
                        continue;
                    }
                    bases.push((
                        r.repo.clone(),
                        f.path.clone(),
                        f.base.as_ref().map(|b| b.repo.clone()),
                        r.expect_base.clone(),
                    ));
                }
            }
            stats = Some(st);
        }
    }
    // The MiniLM family in a store of its own.
    let dir = work.join("store-minilm");
    let _ = std::fs::remove_dir_all(&dir);
    let s = Store::open(
        dir.to_str()
            .ok_or_else(|| Error::invalid("work path is not UTF-8"))?,
    )?;
    for r in list.iter().filter(|r| is_minilm(r)) {
        store::ingest::ingest(&s, &r.repo, &corpus.join(&r.dir), &IngestOptions::default())?;
    }
    let minilm = (minilm_raw, minilm_cdc, store::maintain::stats(&s)?.stored);
    // A fine-tune must get its base or a copy of the same file; a re-upload or a resharded
    // copy is right with any base as long as it deduplicated; an unrelated model, none.
    let bases_right =
        bases
            .iter()
            .zip(std::iter::repeat(&list))
            .all(|((repo, _, got, want), list)| {
                let role = list
                    .iter()
                    .find(|r| &r.repo == repo)
                    .map(|r| r.role.as_str())
                    .unwrap_or("");
                match role {
                    "finetune" => got.is_some() && got == want,
                    "unrelated" | "base" => got.is_none(),
                    _ => true,
                }
            });
    Ok(BenchReport {
        raw,
        stats: stats.ok_or_else(|| Error::internal("no stats"))?,
        zstd3: zstd_total,
        cdc_zstd3: cdc,
        minilm,
        cdc_chunks: seen_chunks.len() as u64,
        best_single,
        single_pair_deltas,
        bases_right,
        bases,
        speeds,
        single_pair_mb_s,
        requests_per_gb,
        objects_per_gb,
    })
}

/// Our standalone compression of a safetensors file: every tensor coded on its own.
fn standalone_len(bytes: &[u8]) -> Result<u64> {
    let model = crate::model::Model::parse(bytes)?;
    let mut total = zstd3(&bytes[..model.header_len as usize])?;
    for t in &model.tensors {
        let data = &bytes[t.start as usize..t.end as usize];
        let mut at = 0;
        while at < data.len() {
            let end = (at + crate::store::layout::PART_LEN as usize).min(data.len());
            let m = crate::codec::encode::Strategy::Auto.candidates(t.dtype, false)[0];
            total += crate::codec::blob::encode(&data[at..end], None, t.dtype.word().max(1), m, 3)?
                .len() as u64;
            at = end;
        }
    }
    Ok(total)
}
