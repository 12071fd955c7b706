//! Restore: files of a revision back, byte for byte, streamed window by window (parts decoded in
//! parallel, written in order, sha256 checked before the file is renamed into place); and byte
//! ranges of one file, reading only the parts they need.

use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use sha2::Digest as _;

use crate::codec::blob::BlobDecoder;
use crate::error::{Error, Result};
use crate::store::layout::{manifest_key, FileEntry, Manifest, Segment, PART_LEN};
use crate::store::objects::Requests;
use crate::store::plan::{self, Records};
use crate::store::Store;

/// Output bytes decoded between two fetches (bounds restore memory).
const WINDOW: u64 = 64 << 20;

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// Repo id.
    pub repo: String,
    /// Revision.
    pub revision: String,
    /// Files written, with their checked sha256.
    pub files: Vec<RestoredFile>,
    /// Bytes written.
    pub bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Requests made.
    pub requests: Requests,
}

/// One restored file.
#[derive(Debug, Clone, Serialize)]
pub struct RestoredFile {
    /// Path in the repo.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// sha256, checked.
    pub sha256: String,
}

/// A piece of output: `range` of segment `seg` (offsets within the segment).
struct Piece {
    seg: usize,
    range: Range<u64>,
}

/// Cuts `range` of a file into pieces no larger than a part, in order.
fn pieces(entry: &FileEntry, range: Range<u64>) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for (i, s) in entry.segments.iter().enumerate() {
        let (lo, hi) = (at, at + s.len());
        at = hi;
        if hi <= range.start || lo >= range.end {
            continue;
        }
        let mut a = range.start.max(lo) - lo;
        let b = range.end.min(hi) - lo;
        while a < b {
            // Align to part boundaries so a piece decodes one part.
            let e = ((a / PART_LEN + 1) * PART_LEN).min(b);
            out.push(Piece {
                seg: i,
                range: a..e,
            });
            a = e;
        }
    }
    out
}

/// Reads segment pieces: the parts they need fetched once, then decoded in parallel.
fn read_pieces(
    store: &Store,
    records: &Records,
    entry: &FileEntry,
    pieces: &[Piece],
    check: bool,
) -> Result<Vec<Vec<u8>>> {
    let mut needs = Vec::new();
    for p in pieces {
        match &entry.segments[p.seg] {
            Segment::Bytes { parts, .. } => {
                for (_, part) in plan::overlapping(parts, &p.range) {
                    needs.push(part.clone());
                }
            }
            Segment::Tensor { blake3, .. } => {
                plan::needs(records, blake3, p.range.clone(), &mut needs)?
            }
        }
    }
    let cache = store.fetch(&needs)?;
    pieces
        .par_iter()
        .map_init(BlobDecoder::new, |dec, p| {
            let dec = dec.as_mut().map_err(|e| Error::internal(e.to_string()))?;
            match &entry.segments[p.seg] {
                Segment::Bytes { parts, .. } => {
                    let mut out = Vec::with_capacity((p.range.end - p.range.start) as usize);
                    for (start, part) in plan::overlapping(parts, &p.range) {
                        let blob = plan::Fetched::blob(&cache, part)
                            .ok_or_else(|| Error::internal("a part was not fetched"))?;
                        let bytes = plan::decode_part(dec, part, blob, None, 1, check)?;
                        let lo = p.range.start.max(start) - start;
                        let hi = p.range.end.min(start + part.raw_len) - start;
                        out.extend_from_slice(&bytes[lo as usize..hi as usize]);
                    }
                    Ok(out)
                }
                Segment::Tensor { blake3, .. } => {
                    plan::read(records, blake3, p.range.clone(), &cache, dec, check)
                }
            }
        })
        .collect()
}

/// Names the revision in a store-corruption error.
fn needed_by(e: Error, m: &Manifest) -> Error {
    match e {
        Error::StoreCorrupt {
            object,
            what,
            mut repos,
        } => {
            let who = format!("{}@{}", m.repo, m.revision);
            if !repos.contains(&who) {
                repos.push(who);
            }
            Error::StoreCorrupt {
                object,
                what,
                repos,
            }
        }
        other => other,
    }
}

/// Streams a whole file into `out`, returning its sha256 (hex). Windows are decoded on the
/// thread pool while an output thread hashes and writes the previous one (at most one window
/// waits between them, so memory stays bounded). With `check`, every part is also checked
/// against its BLAKE3 as it is decoded (see [`stream_checked`]).
pub fn stream_file(
    store: &Store,
    m: &Manifest,
    entry: &FileEntry,
    out: &mut (dyn Write + Send),
    check: bool,
) -> Result<String> {
    let all = pieces(entry, 0..entry.size);
    let path = &entry.path;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Vec<u8>>>(1);
        let writer = scope.spawn(move || -> Result<String> {
            let mut sha = sha2::Sha256::new();
            for chunks in rx {
                for c in chunks {
                    sha.update(&c);
                    out.write_all(&c)
                        .map_err(|e| Error::io(format!("writing {path}"), e))?;
                }
            }
            Ok(crate::codec::rebuild::hex(&sha.finalize()))
        });
        let mut decoded = Ok(());
        let mut start = 0;
        while start < all.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < all.len()
                && (end == start || bytes + (all[end].range.end - all[end].range.start) <= WINDOW)
            {
                bytes += all[end].range.end - all[end].range.start;
                end += 1;
            }
            match read_pieces(store, &m.tensors, entry, &all[start..end], check) {
                // A closed channel means the writer failed: its error is the one to report.
                Ok(chunks) => {
                    if tx.send(chunks).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    decoded = Err(needed_by(e, m));
                    break;
                }
            }
            start = end;
        }
        drop(tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the output thread panicked")));
        decoded?;
        written
    })
}

/// Streams a file into `out` and checks its sha256. Parts are not hashed one by one on the way
/// (the sha256 covers every byte); if the sha256 fails, the file is read again with every part
/// checked, to name the damaged object and the revisions needing it.
pub fn stream_checked(
    store: &Store,
    m: &Manifest,
    entry: &FileEntry,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let got = stream_file(store, m, entry, out, false)?;
    if got != entry.sha256 {
        stream_file(store, m, entry, &mut std::io::sink(), true)?;
    }
    check_sha(m, entry, &got)
}

/// Checks a streamed file's sha256 against its entry.
fn check_sha(m: &Manifest, entry: &FileEntry, got: &str) -> Result<()> {
    if got != entry.sha256 {
        return Err(needed_by(
            Error::store_corrupt(
                manifest_key(&m.repo, &m.revision),
                format!(
                    "inconsistent: {} restores to sha256 {got}, not the recorded {}",
                    entry.path, entry.sha256
                ),
            ),
            m,
        ));
    }
    Ok(())
}

/// Restores a revision's files (or one) into `out_dir`, each written atomically after its
/// sha256 is checked.
pub fn restore(
    store: &Store,
    repo: &str,
    revision: &str,
    out_dir: &Path,
    only: Option<&str>,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let before = store.objects().requests();
    let m = store.manifest(repo, revision)?;
    let entries: Vec<&FileEntry> = match only {
        Some(p) => vec![m.file(p)?],
        None => m.files.iter().collect(),
    };
    let mut files = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let dest = out_dir.join(&entry.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        crate::native::write_atomically(&dest, |w| stream_checked(store, &m, entry, w))?;
        bytes += entry.size;
        files.push(RestoredFile {
            path: entry.path.clone(),
            size: entry.size,
            sha256: entry.sha256.clone(),
        });
    }
    Ok(RestoreReport {
        repo: repo.to_string(),
        revision: revision.to_string(),
        files,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        requests: store.objects().requests().since(&before),
    })
}

/// Checks that a revision's file restores to its sha256, writing nothing.
pub fn check_file(store: &Store, m: &Manifest, entry: &FileEntry) -> Result<()> {
    stream_checked(store, m, entry, &mut std::io::sink())
}

/// Reads `range` of one file (every part it touches checked against its BLAKE3).
pub fn read_range(
    store: &Store,
    repo: &str,
    revision: &str,
    path: &str,
    range: Range<u64>,
) -> Result<Vec<u8>> {
    let m = store.manifest(repo, revision)?;
    let entry = m.file(path)?;
    if range.start > range.end || range.end > entry.size {
        return Err(Error::invalid(format!(
            "range {}-{} is outside {path} ({} bytes)",
            range.start, range.end, entry.size
        )));
    }
    let ps = pieces(entry, range);
    let chunks = read_pieces(store, &m.tensors, entry, &ps, true).map_err(|e| needed_by(e, &m))?;
    Ok(chunks.concat())
}
