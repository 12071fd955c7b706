//! Ingest: a repo folder into the store. Files are hashed (sha256 for file dedup, BLAKE3 per
//! tensor for tensor dedup), safetensors files matched against the store's bases, tensors
//! stored as dedup hits, cast recipes, deltas or standalone, every part packed, the packs
//! written create-only, and the manifest written last.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use rayon::prelude::*;
use serde::Serialize;
use sha2::Digest as _;

use crate::codec::blob;
use crate::codec::encode::Strategy;
use crate::codec::entropy::DEFAULT_LEVEL;
use crate::error::{Error, Result};
use crate::family::{self, Fingerprint, SamplePlan};
use crate::model::{DType, Model};
use crate::native::read_at;
use crate::store::index::{BaseFile, Index};
use crate::store::layout::{
    self, manifest_key, pack_key, BaseInfo, BaseRef, Encoding, FileEntry, Manifest, Part, Segment,
    TensorRecord, MANIFEST_FORMAT, PACK_TARGET, PART_LEN,
};
use crate::store::objects::Requests;
use crate::store::plan::{self, Records};
use crate::store::{zip, Store};

/// Blocks sampled from every tensor for family matching (4 KiB each: 2,048 bf16 or 1,024 f32
/// elements per tensor, hundreds of thousands per model; the fingerprint costs 8 KiB a tensor).
pub const SAMPLE_BLOCKS: u64 = 2;

/// Bases compared with a new file at most (the most similar tables first).
pub const MAX_CANDIDATES: usize = 4;

/// Raw bytes encoded between two fetches of base parts (bounds ingest memory).
const WINDOW: u64 = 64 << 20;

/// Options of an ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// The revision to commit (`main` by default).
    pub revision: String,
    /// zstd level for every part.
    pub level: i32,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            revision: "main".into(),
            level: DEFAULT_LEVEL,
        }
    }
}

/// How a file's tensors were stored.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TensorCounts {
    /// Already in the store (or earlier in this repo).
    pub deduplicated: u64,
    /// Stored as the cast of a stored tensor.
    pub cast: u64,
    /// Stored as a delta against the base.
    pub delta: u64,
    /// Stored on their own.
    pub standalone: u64,
}

/// One file of an ingest.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// Path in the repo.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// sha256.
    pub sha256: String,
    /// `duplicate` (the whole file was in the store) or `stored`.
    pub outcome: String,
    /// `safetensors`, `zip` or `bytes`.
    pub format: String,
    /// The base chosen, if any.
    pub base: Option<BaseRef>,
    /// Tensors by how they were stored.
    pub tensors: TensorCounts,
    /// Pack bytes the file added.
    pub stored_bytes: u64,
}

/// What an ingest did.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// Repo id.
    pub repo: String,
    /// Revision.
    pub revision: String,
    /// Files, sorted by path.
    pub files: Vec<FileReport>,
    /// Bytes read from the folder.
    pub bytes_in: u64,
    /// Pack bytes written (new objects).
    pub bytes_added: u64,
    /// Packs written.
    pub packs_written: u64,
    /// Size of the manifest written.
    pub manifest_bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Requests made.
    pub requests: Requests,
}

/// Collects parts into packs and writes each sealed pack create-only.
struct Packer<'a> {
    store: &'a Store,
    buf: Vec<u8>,
    sealed: Vec<String>,
    bytes_added: u64,
}

const PENDING: &str = "pending-";

impl<'a> Packer<'a> {
    fn new(store: &'a Store) -> Self {
        Packer {
            store,
            buf: Vec::new(),
            sealed: Vec::new(),
            bytes_added: 0,
        }
    }

    /// Appends a blob; the part names its pack by a placeholder until [`Packer::finish`].
    fn add(&mut self, blob: &[u8], raw_len: u64, blake3: String, delta: bool) -> Result<Part> {
        if !self.buf.is_empty() && (self.buf.len() + blob.len()) as u64 > PACK_TARGET {
            self.seal()?;
        }
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(blob);
        Ok(Part {
            pack: format!("{PENDING}{}", self.sealed.len()),
            offset,
            len: blob.len() as u64,
            raw_len,
            blake3,
            delta,
        })
    }

    fn seal(&mut self) -> Result<()> {
        let body = std::mem::take(&mut self.buf);
        let hash = blake3::hash(&body).to_hex().to_string();
        let len = body.len() as u64;
        if self
            .store
            .objects()
            .put_new(&pack_key(&hash), Bytes::from(body))?
        {
            self.bytes_added += len;
        }
        self.sealed.push(hash);
        Ok(())
    }

    /// Seals the last pack and returns every pack's hash, by placeholder number.
    fn finish(mut self) -> Result<(Vec<String>, u64)> {
        if !self.buf.is_empty() {
            self.seal()?;
        }
        Ok((self.sealed, self.bytes_added))
    }
}

fn fix_part(p: &mut Part, sealed: &[String]) -> Result<()> {
    if let Some(n) = p.pack.strip_prefix(PENDING) {
        let i: usize = n
            .parse()
            .map_err(|_| Error::internal("bad pack placeholder"))?;
        p.pack = sealed
            .get(i)
            .cloned()
            .ok_or_else(|| Error::internal("pack placeholder past the last pack"))?;
    }
    Ok(())
}

/// A file found in the folder.
struct Source {
    path: String,
    abs: PathBuf,
}

/// The regular files under `dir` (symlinks followed, `.git` left out), sorted by path.
fn walk(dir: &Path) -> Result<Vec<Source>> {
    let meta =
        std::fs::metadata(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::invalid(format!("{} is not a folder", dir.display())));
    }
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        let rd =
            std::fs::read_dir(&d).map_err(|e| Error::io(format!("listing {}", d.display()), e))?;
        for e in rd {
            let e = e.map_err(|e| Error::io(format!("listing {}", d.display()), e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == ".git" {
                continue;
            }
            let abs = e.path();
            let rel_path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let m = std::fs::metadata(&abs)
                .map_err(|e| Error::io(format!("reading {}", abs.display()), e))?;
            if m.is_dir() {
                stack.push((abs, rel_path));
            } else if m.is_file() {
                layout::check_file_path(&rel_path)?;
                out.push(Source {
                    path: rel_path,
                    abs,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// A stretch of the file being cut.
struct Cut {
    range: Range<u64>,
    /// Tensor name and dtype, for tensor stretches.
    tensor: Option<(String, String)>,
}

/// Hashes read in one pass over a file.
struct Hashed {
    sha256: String,
    /// Per cut: BLAKE3 (tensor cuts only) and, for F32 tensors, the BLAKE3 of the BF16 cast.
    cuts: Vec<(Option<String>, Option<String>)>,
}

/// One sequential read of the file: sha256 of all of it, BLAKE3 of every tensor stretch and of
/// the BF16 cast of every F32 tensor.
fn hash_pass(file: &File, abs: &Path, size: u64, cuts: &[Cut]) -> Result<Hashed> {
    struct Running {
        tensor: Option<blake3::Hasher>,
        /// The cast's hash, and the bytes of an element split between two reads.
        cast: Option<(blake3::Hasher, Vec<u8>)>,
    }
    let mut running: Vec<Running> = cuts
        .iter()
        .map(|c| Running {
            tensor: c.tensor.as_ref().map(|_| blake3::Hasher::new()),
            cast: c
                .tensor
                .as_ref()
                .filter(|(_, d)| d == "F32")
                .map(|_| (blake3::Hasher::new(), Vec::with_capacity(4))),
        })
        .collect();
    let mut sha = sha2::Sha256::new();
    let mut pos = 0u64;
    let mut ci = 0usize;
    let mut cast_buf = Vec::new();
    while pos < size {
        let n = (size - pos).min(8 << 20);
        let buf = read_at(file, pos, n, abs)?;
        sha.update(&buf);
        let end = pos + n;
        while ci < cuts.len() && cuts[ci].range.start < end {
            let r = &cuts[ci].range;
            let lo = r.start.max(pos);
            let hi = r.end.min(end);
            if lo < hi {
                let slice = &buf[(lo - pos) as usize..(hi - pos) as usize];
                if let Some(h) = &mut running[ci].tensor {
                    h.update(slice);
                }
                if let Some((h, carry)) = &mut running[ci].cast {
                    // Reads are cut at file offsets, which need not fall on the tensor's
                    // element grid: up to 3 bytes of a split element wait for the next read.
                    let mut s = slice;
                    if !carry.is_empty() {
                        let take = (4 - carry.len()).min(s.len());
                        carry.extend_from_slice(&s[..take]);
                        s = &s[take..];
                        if carry.len() == 4 {
                            let mut b = [0u8; 2];
                            crate::model::cast_f32_bytes_to_bf16(carry, &mut b);
                            h.update(&b);
                            carry.clear();
                        }
                    }
                    let whole = s.len() / 4 * 4;
                    cast_buf.resize(whole / 2, 0);
                    crate::model::cast_f32_bytes_to_bf16(&s[..whole], &mut cast_buf);
                    h.update(&cast_buf);
                    carry.extend_from_slice(&s[whole..]);
                }
            }
            if r.end <= end {
                ci += 1;
            } else {
                break;
            }
        }
        pos = end;
    }
    Ok(Hashed {
        sha256: hex_of(&sha.finalize()),
        cuts: running
            .into_iter()
            .map(|r| {
                (
                    r.tensor.map(|h| h.finalize().to_hex().to_string()),
                    r.cast.map(|(h, _)| h.finalize().to_hex().to_string()),
                )
            })
            .collect(),
    })
}

fn hex_of(bytes: &[u8]) -> String {
    crate::codec::rebuild::hex(bytes)
}

/// A piece of work: encode `range` of the file (a part of a tensor or of literal bytes).
struct Job {
    /// Index of the owning new record or literal segment.
    owner: Owner,
    range: Range<u64>,
    word: usize,
    /// For a delta: the base tensor and the range of it to apply to.
    base: Option<(String, Range<u64>)>,
}

#[derive(Clone, Copy)]
enum Owner {
    Record(usize),
    Literal(usize),
}

struct Encoded {
    blob: Vec<u8>,
    blake3: String,
    delta: bool,
}

fn encode_job(
    store_tensors: &Records,
    cache: &crate::store::PartCache,
    file: &File,
    abs: &Path,
    job: &Job,
    dtype: Option<DType>,
    level: i32,
) -> Result<Encoded> {
    let target = read_at(file, job.range.start, job.range.end - job.range.start, abs)?;
    let blake3 = blake3::hash(&target).to_hex().to_string();
    let strategy = Strategy::Auto;
    let standalone_method = match dtype {
        Some(d) => strategy.candidates(d, false)[0],
        None => strategy.candidates(DType::U8, false)[0],
    };
    if let (Some((base, base_range)), Some(d)) = (&job.base, dtype) {
        let base_bytes = crate::native::with_decoder(|dec| {
            plan::read(store_tensors, base, base_range.clone(), cache, dec, true)
        })?;
        let method = strategy.candidates(d, true)[0];
        let delta = blob::encode(&target, Some(&base_bytes), job.word, method, level)?;
        // Never keep a delta larger than the part compressed on its own. Compressing it on its
        // own too costs as much as the delta, so it is skipped when the delta is under half
        // of both the raw bytes and the base's own standalone size (a fine-tune's weights
        // compress like its base's: far from half of them).
        let base_standalone = standalone_len(store_tensors, base, base_range);
        let sure = (delta.len() as u64) * 2 <= job.range.end - job.range.start
            && base_standalone.is_some_and(|b| (delta.len() as u64) * 2 <= b);
        if sure {
            return Ok(Encoded {
                blob: delta,
                blake3,
                delta: true,
            });
        }
        let standalone = blob::encode(&target, None, job.word, standalone_method, level)?;
        if delta.len() < standalone.len() {
            return Ok(Encoded {
                blob: delta,
                blake3,
                delta: true,
            });
        }
        return Ok(Encoded {
            blob: standalone,
            blake3,
            delta: false,
        });
    }
    let standalone = blob::encode(&target, None, job.word, standalone_method, level)?;
    Ok(Encoded {
        blob: standalone,
        blake3,
        delta: false,
    })
}

/// What the base's bytes at `range` take compressed on their own, when the store knows it:
/// its standalone parts there (for a cast base, half its source's).
fn standalone_len(records: &Records, base: &str, range: &Range<u64>) -> Option<u64> {
    let rec = records.get(base)?;
    match &rec.encoding {
        Encoding::Raw { parts } => Some(
            plan::overlapping(parts, range)
                .iter()
                .map(|(_, p)| p.len)
                .sum(),
        ),
        Encoding::Cast { source, .. } => {
            let src = records.get(source)?;
            let wide = range.start * 2..range.end * 2;
            Some(
                plan::overlapping(src.parts(), &wide)
                    .iter()
                    .map(|(_, p)| p.len)
                    .sum::<u64>()
                    / 2,
            )
        }
        Encoding::Delta { .. } => None,
    }
}

fn dtype_named(name: &str) -> Option<DType> {
    DType::all().iter().copied().find(|d| d.name() == name)
}

/// Signature keys of a tensor table (see [`layout::BaseInfo::sigs`]).
pub fn sig_keys(sigs: &[family::TensorSig]) -> Vec<String> {
    sigs.iter()
        .map(|t| {
            let line = format!("{} {} {:?}", t.canonical, t.dtype, t.shape);
            blake3::hash(line.as_bytes()).to_hex()[..16].to_string()
        })
        .collect()
}

/// Reads a per-tensor fingerprint of a local safetensors file.
fn fingerprint_of(file: &File, abs: &Path, model: &Model) -> Result<Fingerprint> {
    let plan = SamplePlan::per_tensor(model, SAMPLE_BLOCKS);
    let bytes = plan
        .ranges
        .iter()
        .map(|r| read_at(file, r.start, r.end - r.start, abs))
        .collect::<Result<Vec<_>>>()?;
    plan.fingerprint(model, &bytes)
}

/// Ingests the folder `dir` as `repo` at `opts.revision`.
pub fn ingest(store: &Store, repo: &str, dir: &Path, opts: &IngestOptions) -> Result<IngestReport> {
    let started = Instant::now();
    let before = store.objects().requests();
    layout::check_repo_id(repo)?;
    layout::check_revision(&opts.revision)?;
    let sources = walk(dir)?;
    // Manifests that fail to read are left out of the index (verify reports them); a
    // revision's own earlier manifest is only replaced at the end.
    let manifests: Vec<Manifest> = store
        .manifests_lenient()?
        .into_iter()
        .filter_map(|(_, m)| m.ok())
        .collect();
    let mut index = Index::from_manifests(&manifests);
    drop(manifests);
    let mut packer = Packer::new(store);
    let mut reused_packs: HashSet<String> = HashSet::new();
    let mut entries = Vec::with_capacity(sources.len());
    let mut reports = Vec::with_capacity(sources.len());
    let mut bytes_in = 0;
    for src in &sources {
        let (entry, report) =
            ingest_file(store, &mut index, &mut packer, src, opts, &mut reused_packs)
                .map_err(|e| in_file(e, &src.path))?;
        bytes_in += entry.size;
        entries.push(entry);
        reports.push(report);
    }
    let (sealed, bytes_added) = packer.finish()?;
    // Everything this revision references, placeholders replaced by pack hashes.
    let mut tensors = Records::new();
    for e in &entries {
        index.file_records(e, &mut tensors);
    }
    for rec in tensors.values_mut() {
        match &mut rec.encoding {
            Encoding::Raw { parts } | Encoding::Delta { parts, .. } => {
                for p in parts {
                    fix_part(p, &sealed)?;
                }
            }
            Encoding::Cast { .. } => {}
        }
    }
    for e in &mut entries {
        for s in &mut e.segments {
            if let Segment::Bytes { parts, .. } = s {
                for p in parts {
                    fix_part(p, &sealed)?;
                }
            }
        }
        if let Some(b) = &mut e.base_info {
            fix_part(&mut b.fingerprint, &sealed)?;
        }
    }
    // Packs this revision shares with committed ones must still be there (a gc may have
    // removed them after their last manifest went): checked now, just before the commit.
    let sealed_set: HashSet<&String> = sealed.iter().collect();
    let mut shared: Vec<&String> = reused_packs
        .iter()
        .filter(|p| !sealed_set.contains(p))
        .collect();
    shared.sort();
    for p in shared {
        if !store.objects().exists(&pack_key(p))? {
            return Err(Error::store_corrupt(
                pack_key(p),
                "missing (the repo shares it with committed revisions; run `zipllm store verify`)",
            ));
        }
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        repo: repo.to_string(),
        revision: opts.revision.clone(),
        created: crate::store::now(),
        files: entries,
        tensors,
    };
    manifest
        .validate()
        .map_err(|e| Error::internal(format!("the manifest made does not validate: {e}")))?;
    let bytes = manifest.to_bytes()?;
    let manifest_bytes = bytes.len() as u64;
    store
        .objects()
        .put(&manifest_key(repo, &opts.revision), Bytes::from(bytes))?;
    Ok(IngestReport {
        repo: repo.to_string(),
        revision: opts.revision.clone(),
        files: reports,
        bytes_in,
        bytes_added,
        packs_written: sealed.len() as u64,
        manifest_bytes,
        seconds: started.elapsed().as_secs_f64(),
        requests: store.objects().requests().since(&before),
    })
}

/// Names the file in an error about it.
fn in_file(e: Error, path: &str) -> Error {
    match e {
        Error::BadSafetensors { what } => Error::BadSafetensors {
            what: format!("{path}: {what}"),
        },
        Error::InvalidInput { what } => Error::InvalidInput {
            what: format!("{path}: {what}"),
        },
        other => other,
    }
}

fn ingest_file(
    store: &Store,
    index: &mut Index,
    packer: &mut Packer<'_>,
    src: &Source,
    opts: &IngestOptions,
    reused_packs: &mut HashSet<String>,
) -> Result<(FileEntry, FileReport)> {
    let file =
        File::open(&src.abs).map_err(|e| Error::io(format!("opening {}", src.abs.display()), e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io(format!("reading {}", src.abs.display()), e))?
        .len();
    let prefix = read_at(&file, 0, size.min(8), &src.abs)?;
    // Cut the file into literal and tensor stretches.
    let mut model = None;
    let mut cuts: Vec<Cut> = Vec::new();
    let format;
    if src.path.ends_with(".safetensors") {
        let (_, m) = crate::native::read_header(&src.abs)?;
        let mut at = 0u64;
        cuts.push(Cut {
            range: 0..m.header_len,
            tensor: None,
        });
        at = at.max(m.header_len);
        let mut order: Vec<&crate::model::Tensor> =
            m.tensors.iter().filter(|t| !t.is_empty()).collect();
        order.sort_by_key(|t| t.start);
        for t in order {
            if t.start > at {
                cuts.push(Cut {
                    range: at..t.start,
                    tensor: None,
                });
            }
            cuts.push(Cut {
                range: t.start..t.end,
                tensor: Some((t.name.clone(), t.dtype.name().to_string())),
            });
            at = t.end;
        }
        if at < size {
            cuts.push(Cut {
                range: at..size,
                tensor: None,
            });
        }
        model = Some(m);
        format = "safetensors";
    } else if zip::is_zip(&prefix) {
        let tail_len = size.min(65_557);
        let tail = read_at(&file, size - tail_len, tail_len, &src.abs)?;
        let members = zip::central_directory(&tail, size)
            .map(|cd| read_at(&file, cd.start, cd.end - cd.start, &src.abs))
            .transpose()?
            .map(|cd| zip::stored_members(&cd))
            .unwrap_or_default();
        let mut at = 0u64;
        for m in &members {
            let lh = read_at(&file, m.header, 30.min(size - m.header.min(size)), &src.abs)?;
            let Some(start) = zip::data_start(m, &lh) else {
                continue;
            };
            let end = start.saturating_add(m.size);
            if start < at || end > size {
                continue;
            }
            if start > at {
                cuts.push(Cut {
                    range: at..start,
                    tensor: None,
                });
            }
            cuts.push(Cut {
                range: start..end,
                tensor: Some((m.name.clone(), "U8".into())),
            });
            at = end;
        }
        if at < size || cuts.is_empty() {
            cuts.push(Cut {
                range: at..size,
                tensor: None,
            });
        }
        format = if members.is_empty() { "bytes" } else { "zip" };
    } else {
        cuts.push(Cut {
            range: 0..size,
            tensor: None,
        });
        format = "bytes";
    }
    cuts.retain(|c| !c.range.is_empty());
    let hashed = hash_pass(&file, &src.abs, size, &cuts)?;
    let mut report = FileReport {
        path: src.path.clone(),
        size,
        sha256: hashed.sha256.clone(),
        outcome: "stored".into(),
        format: format.into(),
        base: None,
        tensors: TensorCounts::default(),
        stored_bytes: 0,
    };
    // File dedup.
    if let Some(known) = index.files.get(&hashed.sha256) {
        let mut entry = known.clone();
        entry.path = src.path.clone();
        entry.stored_bytes = 0;
        mark_reused(&entry, index, reused_packs);
        report.outcome = "duplicate".into();
        report.base = entry.base.clone();
        report.format = entry.format.clone();
        report.tensors.deduplicated = entry
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Tensor { .. }))
            .count() as u64;
        return Ok((entry, report));
    }
    // Family: the nearest related base among those sharing this file's tensor table.
    let mut fingerprint = None;
    let mut base: Option<(BaseRef, HashMap<String, String>)> = None;
    if let Some(m) = &model {
        let fp = fingerprint_of(&file, &src.abs, m)?;
        let sigs = sig_keys(&fp.tensors);
        let mut best: Option<(f64, BaseRef, Vec<FileEntry>)> = None;
        let candidates: Vec<Vec<BaseFile>> = index
            .candidates(&sigs, family::MIN_OVERLAP, MAX_CANDIDATES)
            .into_iter()
            .map(|c| c.files.into_iter().cloned().collect())
            .collect();
        for files in candidates {
            let infos: Vec<&Part> = files
                .iter()
                .filter_map(|f| f.entry.base_info.as_ref().map(|i| &i.fingerprint))
                .collect();
            if infos.len() != files.len() || files.is_empty() {
                continue;
            }
            let wanted: Vec<Part> = infos.iter().map(|p| (*p).clone()).collect();
            let cache = store.fetch(&wanted)?;
            let mut parts = Vec::with_capacity(infos.len());
            for info in infos {
                let blob = plan::Fetched::blob(&cache, info)
                    .ok_or_else(|| Error::internal("fingerprint not fetched"))?;
                let bytes = crate::native::with_decoder(|dec| {
                    plan::decode_part(dec, info, blob, None, 1, true)
                })?;
                parts.push(Fingerprint::from_bytes(&bytes).map_err(|e| {
                    Error::store_corrupt(
                        pack_key(&info.pack),
                        format!("corrupt: a fingerprint does not parse ({e})"),
                    )
                })?);
            }
            let cand_fp = Fingerprint::merge(&parts);
            let first = &files[0].at;
            let name = format!("{}@{}", first.repo, first.revision);
            let v = family::compare_fingerprints_within(&name, &fp, &cand_fp)?;
            if v.verdict == "related" {
                let d = v.normalized_distance.unwrap_or(f64::INFINITY);
                if best.as_ref().is_none_or(|(bd, _, _)| d < *bd) {
                    let mut at = first.clone();
                    at.bit_distance = v.bit_distance.unwrap_or(0.0);
                    best = Some((d, at, files.iter().map(|f| f.entry.clone()).collect()));
                }
            }
        }
        if let Some((_, at, base_entries)) = best {
            // Tensors are paired by canonical name across the base's files; the file holding
            // most of this one's tensors comes first and wins a name found twice.
            let mut pairs = HashMap::new();
            for e in &base_entries {
                for (k, v) in pairing(e) {
                    pairs.entry(k).or_insert(v);
                }
            }
            base = Some((at, pairs));
        }
        fingerprint = Some(fp);
    }
    report.base = base.as_ref().map(|(b, _)| b.clone());
    // Decide each stretch's fate.
    let level = opts.level;
    let mut new_records: Vec<(String, TensorRecord)> = Vec::new();
    let mut literal_parts: Vec<Vec<Part>> = Vec::new();
    let mut segments: Vec<Segment> = Vec::with_capacity(cuts.len());
    let mut jobs: Vec<Job> = Vec::new();
    let mut dtypes: Vec<Option<DType>> = Vec::new();
    let mut pending_here: HashMap<String, usize> = HashMap::new();
    let canon: HashMap<String, String> = match (&model, &fingerprint) {
        (Some(_), Some(fp)) => fp
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.canonical.clone()))
            .collect(),
        _ => HashMap::new(),
    };
    let mut has_delta = false;
    for (ci, cut) in cuts.iter().enumerate() {
        let len = cut.range.end - cut.range.start;
        let Some((name, dtype)) = &cut.tensor else {
            let li = literal_parts.len();
            literal_parts.push(Vec::new());
            split_jobs(
                &mut jobs,
                &mut dtypes,
                Owner::Literal(li),
                cut.range.clone(),
                1,
                None,
                None,
            );
            segments.push(Segment::Bytes {
                len,
                parts: Vec::new(),
            });
            continue;
        };
        let Some(hash) = hashed.cuts[ci].0.clone() else {
            return Err(Error::internal("a tensor stretch was not hashed"));
        };
        segments.push(Segment::Tensor {
            name: name.clone(),
            blake3: hash.clone(),
            len,
        });
        if let Some(rec) = index.tensors.get(&hash) {
            report.tensors.deduplicated += 1;
            has_delta |= index.through_delta(rec);
            continue;
        }
        if pending_here.contains_key(&hash) {
            report.tensors.deduplicated += 1;
            continue;
        }
        if dtype == "BF16" {
            if let Some(source) = index.casts.get(&hash) {
                report.tensors.cast += 1;
                let rec = TensorRecord {
                    len,
                    dtype: dtype.clone(),
                    encoding: Encoding::Cast {
                        source: source.clone(),
                        from: "F32".into(),
                        to: "BF16".into(),
                    },
                    bf16_cast: None,
                };
                has_delta |= index.through_delta(&rec);
                index.add_record(&hash, &rec);
                continue;
            }
        }
        let paired = base.as_ref().and_then(|(_, pairs)| {
            let c = canon.get(name)?;
            let b = pairs.get(c)?;
            let brec = index.tensors.get(b)?;
            (brec.len == len && brec.dtype == *dtype).then(|| b.clone())
        });
        let ri = new_records.len();
        let d = dtype_named(dtype);
        let word = d.map_or(1, |d| d.word().max(1));
        let encoding = match &paired {
            Some(b) => {
                report.tensors.delta += 1;
                has_delta = true;
                Encoding::Delta {
                    base: b.clone(),
                    parts: Vec::new(),
                }
            }
            None => {
                report.tensors.standalone += 1;
                Encoding::Raw { parts: Vec::new() }
            }
        };
        new_records.push((
            hash.clone(),
            TensorRecord {
                len,
                dtype: dtype.clone(),
                encoding,
                bf16_cast: hashed.cuts[ci].1.clone(),
            },
        ));
        pending_here.insert(hash, ri);
        split_jobs(
            &mut jobs,
            &mut dtypes,
            Owner::Record(ri),
            cut.range.clone(),
            word,
            d,
            paired,
        );
    }
    // Encode in windows: fetch the base parts a window needs, encode its jobs in parallel,
    // append the blobs in order.
    let mut stored_bytes = 0u64;
    let mut w_start = 0usize;
    while w_start < jobs.len() {
        let mut w_end = w_start;
        let mut raw = 0u64;
        while w_end < jobs.len()
            && (w_end == w_start
                || raw + (jobs[w_end].range.end - jobs[w_end].range.start) <= WINDOW)
        {
            raw += jobs[w_end].range.end - jobs[w_end].range.start;
            w_end += 1;
        }
        let window = &jobs[w_start..w_end];
        // Every pack the bases live in is referenced (checked before the commit), and what
        // is not at hand decoded is fetched.
        let bases_needs = |kept: &mut dyn FnMut(&Part) -> bool| -> Result<Vec<Part>> {
            let mut needs = Vec::new();
            for j in window {
                if let Some((b, r)) = &j.base {
                    plan::needs(&index.tensors, b, r.clone(), &mut needs, kept)?;
                }
            }
            Ok(needs)
        };
        for p in bases_needs(&mut |_| false)? {
            reused_packs.insert(p.pack);
        }
        let cache = store.fetch_needed(true, store.keeps_all(), bases_needs)?;
        let tensors = &index.tensors;
        let encoded: Vec<Encoded> = window
            .par_iter()
            .zip(&dtypes[w_start..w_end])
            .map(|(j, d)| encode_job(tensors, &cache, &file, &src.abs, j, *d, level))
            .collect::<Result<_>>()?;
        drop(cache);
        for (j, e) in window.iter().zip(encoded) {
            let part = packer.add(&e.blob, j.range.end - j.range.start, e.blake3, e.delta)?;
            stored_bytes += part.len;
            match j.owner {
                Owner::Literal(li) => literal_parts[li].push(part),
                Owner::Record(ri) => match &mut new_records[ri].1.encoding {
                    Encoding::Raw { parts } | Encoding::Delta { parts, .. } => parts.push(part),
                    Encoding::Cast { .. } => return Err(Error::internal("a job for a cast")),
                },
            }
        }
        w_start = w_end;
    }
    for (hash, rec) in &new_records {
        index.add_record(hash, rec);
    }
    let mut lit = literal_parts.into_iter();
    for s in &mut segments {
        if let Segment::Bytes { parts, .. } = s {
            *parts = lit.next().unwrap_or_default();
        }
    }
    // A safetensors file stored without deltas can be a base for later ones.
    let base_info = match (&fingerprint, has_delta) {
        (Some(fp), false) => {
            let bytes = fp.to_bytes()?;
            let blob = blob::encode(
                &bytes,
                None,
                1,
                Strategy::Auto.candidates(DType::U8, false)[0],
                level,
            )?;
            let part = packer.add(
                &blob,
                bytes.len() as u64,
                blake3::hash(&bytes).to_hex().to_string(),
                false,
            )?;
            stored_bytes += part.len;
            Some(BaseInfo {
                sigs: sig_keys(&fp.tensors),
                fingerprint: part,
            })
        }
        _ => None,
    };
    let entry = FileEntry {
        path: src.path.clone(),
        size,
        sha256: hashed.sha256,
        format: format.into(),
        segments,
        base: base.map(|(b, _)| b),
        base_info,
        stored_bytes,
    };
    mark_reused(&entry, index, reused_packs);
    // Later files of this ingest dedup against this one (bases come only from committed
    // revisions: this file's packs are not written yet).
    index
        .files
        .entry(entry.sha256.clone())
        .or_insert_with(|| entry.clone());
    report.stored_bytes = stored_bytes;
    Ok((entry, report))
}

/// Notes the committed packs an entry's records use.
fn mark_reused(entry: &FileEntry, index: &Index, reused: &mut HashSet<String>) {
    let mut recs = Records::new();
    index.file_records(entry, &mut recs);
    let parts =
        recs.values()
            .flat_map(|r| r.parts().to_vec())
            .chain(entry.segments.iter().flat_map(|s| match s {
                Segment::Bytes { parts, .. } => parts.clone(),
                Segment::Tensor { .. } => Vec::new(),
            }));
    for p in parts {
        if !p.pack.starts_with(PENDING) {
            reused.insert(p.pack);
        }
    }
}

/// The base's tensors by canonical name, paired for a new file.
fn pairing(base: &FileEntry) -> HashMap<String, String> {
    let names: Vec<&str> = base
        .segments
        .iter()
        .filter_map(|s| match s {
            Segment::Tensor { name, .. } => Some(name.as_str()),
            Segment::Bytes { .. } => None,
        })
        .collect();
    let canon = family::canonical_names(&names);
    let hashes = base.segments.iter().filter_map(|s| match s {
        Segment::Tensor { blake3, .. } => Some(blake3.clone()),
        Segment::Bytes { .. } => None,
    });
    canon.into_iter().zip(hashes).collect()
}

/// Splits `range` into part-sized jobs.
fn split_jobs(
    jobs: &mut Vec<Job>,
    dtypes: &mut Vec<Option<DType>>,
    owner: Owner,
    range: Range<u64>,
    word: usize,
    dtype: Option<DType>,
    base: Option<String>,
) {
    let mut at = range.start;
    while at < range.end {
        let end = (at + PART_LEN).min(range.end);
        jobs.push(Job {
            owner,
            range: at..end,
            word,
            base: base
                .clone()
                .map(|b| (b, at - range.start..end - range.start)),
        });
        dtypes.push(dtype);
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cast_hashes_survive_reads_off_the_element_grid() {
        // A 3-byte stretch first puts the F32 tensor off the 4-byte grid of the 8 MiB reads,
        // and it is long enough to cross one: the split element must be carried over.
        let words: Vec<u32> = (0..(9u32 << 18))
            .map(|i| i.wrapping_mul(0x9e37_79b9))
            .collect();
        let data: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut file = vec![b'{', b'}', b' '];
        file.extend_from_slice(&data);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.bin");
        std::fs::write(&path, &file).expect("write");
        let cuts = [
            Cut {
                range: 0..3,
                tensor: None,
            },
            Cut {
                range: 3..file.len() as u64,
                tensor: Some(("w".into(), "F32".into())),
            },
        ];
        let f = File::open(&path).expect("open");
        let got = hash_pass(&f, &path, file.len() as u64, &cuts).expect("hash pass");
        let mut cast = vec![0u8; data.len() / 2];
        crate::model::cast_f32_bytes_to_bf16(&data, &mut cast);
        assert_eq!(
            got.cuts[1].0.as_deref(),
            Some(blake3::hash(&data).to_hex().as_str())
        );
        assert_eq!(
            got.cuts[1].1.as_deref(),
            Some(blake3::hash(&cast).to_hex().as_str())
        );
        assert_eq!(got.cuts[0], (None, None));
    }
}
