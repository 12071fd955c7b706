//! Restore: files of a revision back, byte for byte, streamed window by window (parts decoded in
//! parallel, written in order, sha256 checked before the file is renamed into place); and byte
//! ranges of one file, reading only the parts they need.

use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use rayon::prelude::*;
use serde::Serialize;
use sha2::Digest as _;

use crate::error::{Error, Result};
use crate::store::layout::{manifest_key, FileEntry, Manifest, Part, Segment, PART_LEN};
use crate::store::objects::Requests;
use crate::store::plan::{self, Records};
use crate::store::{PartCache, Store};

/// Output bytes decoded between two fetches (bounds restore memory).
const WINDOW: u64 = 64 << 20;

/// Decoded pieces (each at most a part) waiting for the output thread.
const QUEUED: usize = 4;

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

/// The parts `pieces` need, bases and cast sources included, but for those `kept` says are at
/// hand decoded.
fn needs_of(
    records: &Records,
    entry: &FileEntry,
    pieces: &[Piece],
    kept: &mut dyn FnMut(&Part) -> bool,
) -> Result<Vec<Part>> {
    let mut needs = Vec::new();
    for p in pieces {
        match &entry.segments[p.seg] {
            Segment::Bytes { parts, .. } => {
                for (_, part) in plan::overlapping(parts, &p.range) {
                    if !kept(part) {
                        needs.push(part.clone());
                    }
                }
            }
            Segment::Tensor { blake3, .. } => {
                plan::needs(records, blake3, p.range.clone(), &mut needs, kept)?
            }
        }
    }
    Ok(needs)
}

/// Fetches the parts `pieces` need but for those at hand decoded; with `keep`, the parts then
/// decoded are offered for keeping.
fn fetch_pieces(
    store: &Store,
    records: &Records,
    entry: &FileEntry,
    pieces: &[Piece],
    check: bool,
    keep: bool,
) -> Result<PartCache> {
    store.fetch_needed(check, keep, |kept| needs_of(records, entry, pieces, kept))
}

/// Whether restoring `entries` needs some part more than once (a tensor in two files or twice
/// in one, a base under two fine-tuned files): then the parts decoded are worth keeping for the
/// rest of the restore. Otherwise keeping them would only cost fresh memory.
fn meets_a_part_twice(m: &Manifest, entries: &[&FileEntry]) -> bool {
    let mut seen = std::collections::HashSet::new();
    for e in entries {
        let Ok(needs) = needs_of(&m.tensors, e, &pieces(e, 0..e.size), &mut |_| false) else {
            return false;
        };
        for p in needs {
            if !seen.insert((p.pack, p.offset)) {
                return true;
            }
        }
    }
    false
}

/// Decodes pieces from fetched parts, in parallel, in order.
fn decode_pieces(
    records: &Records,
    entry: &FileEntry,
    pieces: &[Piece],
    cache: &PartCache,
    check: bool,
) -> Result<Vec<Bytes>> {
    pieces
        .par_iter()
        .map(|p| {
            crate::native::with_decoder(|dec| match &entry.segments[p.seg] {
                Segment::Bytes { parts, .. } => {
                    let mut out = Vec::with_capacity((p.range.end - p.range.start) as usize);
                    for (start, part) in plan::overlapping(parts, &p.range) {
                        let bytes = plan::part_bytes(cache, dec, part, 1, check, |_| Ok(None))?;
                        let lo = (p.range.start.max(start) - start) as usize;
                        let hi = (p.range.end.min(start + part.raw_len) - start) as usize;
                        if out.is_empty() && (hi - lo) as u64 == p.range.end - p.range.start {
                            return Ok(bytes.slice(lo..hi));
                        }
                        out.extend_from_slice(&bytes[lo..hi]);
                    }
                    Ok(Bytes::from(out))
                }
                Segment::Tensor { blake3, .. } => {
                    plan::read(records, blake3, p.range.clone(), cache, dec, check)
                }
            })
        })
        .collect()
}

/// Reads segment pieces: the parts they need fetched once, then decoded in parallel.
fn read_pieces(
    store: &Store,
    records: &Records,
    entry: &FileEntry,
    pieces: &[Piece],
    check: bool,
    keep: bool,
) -> Result<Vec<Bytes>> {
    let cache = fetch_pieces(store, records, entry, pieces, check, keep)?;
    decode_pieces(records, entry, pieces, &cache, check)
}

/// Cuts `pieces` into the windows a whole file is fetched in: the first of a part, each next
/// one twice as large up to [`WINDOW`] (the first bytes come out soon, and later fetches are
/// large enough to run ahead of decoding).
fn windows(pieces: &[Piece]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut max) = (0, PART_LEN);
    while start < pieces.len() {
        let end = run_end(pieces, start, max);
        out.push(start..end);
        start = end;
        max = (max * 2).min(WINDOW);
    }
    out
}

/// Cuts `pieces` into runs of at most `max` bytes (one piece at least), as index ranges.
fn runs(pieces: &[Piece], max: u64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < pieces.len() {
        let end = run_end(pieces, start, max);
        out.push(start..end);
        start = end;
    }
    out
}

/// The end of the run starting at `start`: as many pieces as fit in `max` bytes, one at least.
fn run_end(pieces: &[Piece], start: usize, max: u64) -> usize {
    let (mut end, mut bytes) = (start, 0);
    while end < pieces.len()
        && (end == start || bytes + (pieces[end].range.end - pieces[end].range.start) <= max)
    {
        bytes += pieces[end].range.end - pieces[end].range.start;
        end += 1;
    }
    end
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

/// Streams a whole file into `out`, returning its sha256 (hex), in three stages on their own
/// threads: a fetch thread reads the parts of the next window (≤ [`WINDOW`] bytes of output)
/// while the pool decodes this one a batch at a time (about a part per thread), and an output
/// thread hashes and writes each batch as soon as it is decoded. At most two windows of parts
/// and [`QUEUED`] decoded pieces are held at once, so memory stays bounded. With `check`, every
/// part is also checked against its BLAKE3 as it is decoded (see [`stream_checked`]); with
/// `keep`, decoded parts are kept for later reads (see [`crate::store::decoded`]).
pub fn stream_file(
    store: &Store,
    m: &Manifest,
    entry: &FileEntry,
    out: &mut (dyn Write + Send),
    check: bool,
    keep: bool,
) -> Result<String> {
    let all = pieces(entry, 0..entry.size);
    let windows = windows(&all);
    let batch = PART_LEN * rayon::current_num_threads() as u64;
    let path = &entry.path;
    let (all, windows) = (&all, &windows);
    std::thread::scope(|scope| {
        // A rendezvous channel: the fetch thread holds one window while the pool decodes
        // the one before.
        let (fetched_tx, fetched_rx) = std::sync::mpsc::sync_channel::<Result<PartCache>>(0);
        let named = |name: &str| std::thread::Builder::new().name(format!("zipllm-{name}"));
        let spawn_failed = |e| Error::io("starting a restore thread", e);
        named("fetch")
            .spawn_scoped(scope, move || {
                for w in windows {
                    let got = fetch_pieces(store, &m.tensors, entry, &all[w.clone()], check, keep);
                    let failed = got.is_err();
                    // A closed channel means decoding stopped.
                    if fetched_tx.send(got).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(spawn_failed)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(QUEUED);
        let (to_writer, for_writer) = std::sync::mpsc::sync_channel::<Bytes>(QUEUED);
        let hasher = named("sha256")
            .spawn_scoped(scope, move || {
                let mut sha = sha2::Sha256::new();
                for c in rx {
                    sha.update(&c);
                    // A closed channel means the writer failed: its error is the one to report.
                    if to_writer.send(c).is_err() {
                        break;
                    }
                }
                crate::codec::rebuild::hex(&sha.finalize())
            })
            .map_err(spawn_failed)?;
        let writer = named("write")
            .spawn_scoped(scope, move || -> Result<()> {
                for c in for_writer {
                    out.write_all(&c)
                        .map_err(|e| Error::io(format!("writing {path}"), e))?;
                }
                Ok(())
            })
            .map_err(spawn_failed)?;
        let mut decoded = Ok(());
        'windows: for w in windows {
            let cache = match fetched_rx.recv() {
                Ok(Ok(cache)) => cache,
                Ok(Err(e)) => {
                    decoded = Err(needed_by(e, m));
                    break;
                }
                Err(_) => {
                    decoded = Err(Error::internal("the fetch thread stopped"));
                    break;
                }
            };
            let window = &all[w.clone()];
            for b in runs(window, batch) {
                match decode_pieces(&m.tensors, entry, &window[b], &cache, check) {
                    // A closed channel means the writer failed: its error is the one to report.
                    Ok(chunks) => {
                        for c in chunks {
                            if tx.send(c).is_err() {
                                break 'windows;
                            }
                        }
                    }
                    Err(e) => {
                        decoded = Err(needed_by(e, m));
                        break 'windows;
                    }
                }
            }
        }
        drop(tx);
        drop(fetched_rx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the output thread panicked")));
        let digest = hasher
            .join()
            .map_err(|_| Error::internal("the hashing thread panicked"));
        decoded?;
        written?;
        digest
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
    keep: bool,
) -> Result<()> {
    stream_checked_from(store, m, entry, out, keep, None)
}

/// [`stream_checked`], from parts already `fetched` if given (every part the file needs).
fn stream_checked_from(
    store: &Store,
    m: &Manifest,
    entry: &FileEntry,
    out: &mut (dyn Write + Send),
    keep: bool,
    fetched: Option<&PartCache>,
) -> Result<()> {
    let got = match fetched {
        Some(cache) => write_fetched(m, entry, cache, out)?,
        None => stream_file(store, m, entry, out, false, keep)?,
    };
    if got != entry.sha256 {
        // Parts kept decoded unchecked may be what went wrong: none is used again.
        store.decoded().clear();
        stream_file(store, m, entry, &mut std::io::sink(), true, false)?;
    }
    check_sha(m, entry, &got)
}

/// Writes a small file whose parts are all at hand into `out` on this thread, returning its
/// sha256 (hex).
fn write_fetched(
    m: &Manifest,
    entry: &FileEntry,
    fetched: &PartCache,
    out: &mut (dyn Write + Send),
) -> Result<String> {
    let all = pieces(entry, 0..entry.size);
    let chunks =
        decode_pieces(&m.tensors, entry, &all, fetched, false).map_err(|e| needed_by(e, m))?;
    let mut sha = sha2::Sha256::new();
    for c in chunks {
        sha.update(&c);
        out.write_all(&c)
            .map_err(|e| Error::io(format!("writing {}", entry.path), e))?;
    }
    Ok(crate::codec::rebuild::hex(&sha.finalize()))
}

/// Cuts a revision's files into the order a restore writes them: runs of small files (each
/// at most a part), whose parts are fetched together in one batch, then each large file on its
/// own (`false`), streamed window by window. `fetched(file)` is what a file's parts take to
/// fetch (a small file may need whole parts of its base, and a cast twice its bytes): a run
/// holds at most [`WINDOW`] of them, as a streamed window does, or one file.
fn restore_order<'a>(
    entries: &[&'a FileEntry],
    fetched: impl Fn(&FileEntry) -> u64,
) -> Vec<(Vec<&'a FileEntry>, bool)> {
    let mut out: Vec<(Vec<&FileEntry>, bool)> = Vec::new();
    let mut run: (Vec<&FileEntry>, u64) = (Vec::new(), 0);
    for &e in entries.iter().filter(|e| e.size <= PART_LEN) {
        let cost = fetched(e);
        if run.1 + cost > WINDOW && !run.0.is_empty() {
            out.push((std::mem::take(&mut run.0), true));
            run.1 = 0;
        }
        run.0.push(e);
        run.1 += cost;
    }
    if !run.0.is_empty() {
        out.push((run.0, true));
    }
    let large = entries.iter().filter(|e| e.size > PART_LEN);
    out.extend(large.map(|&e| (vec![e], false)));
    out
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
    let keep = store.keeps_all() || meets_a_part_twice(&m, &entries);
    // Files go in place together at the end (one journal commit and one folder sync for all);
    // if one fails, those before it still go in place, as if each were written on its own.
    let mut batch = crate::native::Batch::default();
    let mut write = |entry: &FileEntry, fetched: Option<&PartCache>| {
        let dest = out_dir.join(&entry.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        batch.write(&dest, |w| {
            stream_checked_from(store, &m, entry, w, keep, fetched)
        })
    };
    let mut written = Ok(());
    let fetched = |e: &FileEntry| -> u64 {
        let needs = needs_of(&m.tensors, e, &pieces(e, 0..e.size), &mut |_| false);
        // A plan that fails here fails again, with its error, when the run is fetched.
        needs.map_or(0, |n| n.iter().map(|p| p.len).sum())
    };
    for (run, small) in restore_order(&entries, fetched) {
        written = if small {
            let fetched = store
                .fetch_needed(false, keep, |kept| {
                    let mut all = Vec::new();
                    for e in &run {
                        all.extend(needs_of(&m.tensors, e, &pieces(e, 0..e.size), kept)?);
                    }
                    Ok(all)
                })
                .map_err(|e| needed_by(e, &m));
            fetched.and_then(|f| run.iter().try_for_each(|e| write(e, Some(&f))))
        } else {
            run.iter().try_for_each(|e| write(e, None))
        };
        if written.is_err() {
            break;
        }
    }
    batch.commit()?;
    written?;
    let files: Vec<RestoredFile> = entries
        .iter()
        .map(|e| RestoredFile {
            path: e.path.clone(),
            size: e.size,
            sha256: e.sha256.clone(),
        })
        .collect();
    let bytes = entries.iter().map(|e| e.size).sum();
    Ok(RestoreReport {
        repo: repo.to_string(),
        revision: revision.to_string(),
        files,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        requests: store.objects().requests().since(&before),
    })
}

/// Checks that a revision's file restores to its sha256, writing nothing (decoded parts are kept:
/// a walk over many files meets the same bases again).
pub fn check_file(store: &Store, m: &Manifest, entry: &FileEntry) -> Result<()> {
    stream_checked(store, m, entry, &mut std::io::sink(), true)
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
    let chunks = read_pieces(store, &m.tensors, entry, &ps, true, store.keeps_all())
        .map_err(|e| needed_by(e, &m))?;
    Ok(chunks.iter().flat_map(|c| c.iter().copied()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_grow_from_a_part_to_the_window() {
        let parts: Vec<Piece> = (0..20)
            .map(|i| Piece {
                seg: 0,
                range: i * PART_LEN..(i + 1) * PART_LEN,
            })
            .collect();
        let sizes: Vec<usize> = windows(&parts).iter().map(|w| w.len()).collect();
        assert_eq!(sizes, vec![1, 2, 4, 8, 5]);
        // Small pieces fill a window up to its size; a piece larger than it is one window.
        let small: Vec<Piece> = (0..10)
            .map(|i| Piece {
                seg: 0,
                range: i * (3 << 20)..(i + 1) * (3 << 20),
            })
            .collect();
        let sizes: Vec<usize> = windows(&small).iter().map(|w| w.len()).collect();
        assert_eq!(sizes, vec![2, 5, 3]);
        assert_eq!(runs(&parts[..1], 1).len(), 1);
    }

    #[test]
    fn small_files_come_first_in_runs_fetched_together() {
        let file = |path: &str, size: u64| FileEntry {
            path: path.into(),
            size,
            sha256: String::new(),
            format: "bytes".into(),
            segments: Vec::new(),
            base: None,
            base_info: None,
            stored_bytes: 0,
        };
        let mb = 1 << 20;
        let files = [
            file("config.json", 700),
            file("model-1.safetensors", PART_LEN + 1),
            file("tokenizer.json", 7 * mb),
            file("a.bin", PART_LEN),
            file("model-2.safetensors", 5 * PART_LEN),
        ];
        let mut many: Vec<FileEntry> = (0..20).map(|i| file(&format!("{i}.txt"), 5 * mb)).collect();
        many.extend(files.iter().cloned());
        let order = |e: &[FileEntry]| -> Vec<(Vec<String>, bool)> {
            let refs: Vec<&FileEntry> = e.iter().collect();
            restore_order(&refs, |f| f.size)
                .into_iter()
                .map(|(run, small)| (run.iter().map(|f| f.path.clone()).collect(), small))
                .collect()
        };
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            order(&files),
            vec![
                (names(&["config.json", "tokenizer.json", "a.bin"]), true),
                (names(&["model-1.safetensors"]), false),
                (names(&["model-2.safetensors"]), false),
            ]
        );
        // Runs stay within a window.
        for (run, small) in order(&many) {
            let bytes: u64 = run
                .iter()
                .map(|p| many.iter().find(|f| &f.path == p).map_or(0, |f| f.size))
                .sum();
            assert!(!small || bytes <= WINDOW, "{run:?}");
        }
        assert_eq!(order(&many).iter().filter(|(_, small)| !small).count(), 2);
        // What a file needs fetched, not its size, fills a run: here a 700-byte file needs a
        // whole window of its base.
        let refs: Vec<&FileEntry> = files.iter().collect();
        let runs = restore_order(&refs, |f| if f.size == 700 { WINDOW } else { f.size });
        let sizes: Vec<usize> = runs.iter().map(|(r, _)| r.len()).collect();
        assert_eq!(sizes, vec![1, 2, 1, 1]);
    }
}
