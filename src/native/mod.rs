//! Native file adapters around the core: memory-mapped inputs, chunks decoded on every core,
//! output written to a temporary file that is renamed into place only once every check passed.

pub mod bench;

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::Path;

use memmap2::Mmap;
use rayon::prelude::*;
use sha2::Digest as _;

use crate::codec::blob::BlobDecoder;
use crate::codec::encode::{self, EncodeOptions, EncodedDelta};
use crate::codec::rebuild::{Plan, Summary};
use crate::error::{Error, Result};

/// A read-only file mapped into memory, or bytes already in memory.
pub enum Mapped {
    /// A mapped file.
    Map(Mmap),
    /// Owned bytes (also what an empty file becomes: empty files cannot be mapped).
    Owned(Vec<u8>),
}

impl Mapped {
    /// Maps `path`.
    pub fn open(path: &Path) -> Result<Mapped> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .len();
        if len == 0 {
            return Ok(Mapped::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only; a file truncated underneath us is the same hazard
        // every mmap-based reader (safetensors' own loaders among them) accepts.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
        Ok(Mapped::Map(map))
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Mapped::Map(m) => m,
            Mapped::Owned(v) => v,
        }
    }
}

/// Runs `f` on a pool of `threads` threads (`None`: one per core).
pub fn with_threads<T: Send>(threads: Option<usize>, f: impl FnOnce() -> T + Send) -> Result<T> {
    Ok(thread_pool(threads)?.install(f))
}

/// Writes the output of `write` to `path` atomically: into a new temporary file
/// `.zipllm-XXXXXXXXXXXX.part` in the same folder (created like any new file, so on unix its mode
/// is 0666 less the umask), flushed and fsynced, then renamed over `path`, and on unix the folder
/// fsynced so the rename itself is durable. If `write` or any step up to the rename fails (or
/// `write` panics), the temporary file is removed and `path` is left as it was: absent, or the
/// previous file untouched. An error fsyncing the folder (other than from a filesystem that
/// does not sync folders) comes after the rename: the new file is then complete at `path`, but
/// its durability is not guaranteed, and the error is returned.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut (dyn Write + Send)) -> Result<()>,
) -> Result<()> {
    let mut batch = Batch::default();
    batch.write(path, write)?;
    batch.commit()
}

/// Files written as [`write_atomically`] writes one, put in place together: each is written to
/// its temporary file at once, and [`Batch::commit`] fsyncs them all, renames them all and then
/// fsyncs each folder once. A restore of a repo's dozen small files so waits for one journal
/// commit and one folder sync instead of two of each per file. Files of a batch not committed
/// are removed when it is dropped.
#[derive(Default)]
pub struct Batch {
    written: Vec<(Temporary, std::path::PathBuf)>,
}

impl Batch {
    /// Files a batch holds (open) before [`Batch::write`] commits them.
    const MAX: usize = 64;

    /// Writes the output of `write` to a temporary file that [`Batch::commit`] renames to
    /// `path`.
    pub fn write(
        &mut self,
        path: &Path,
        write: impl FnOnce(&mut (dyn Write + Send)) -> Result<()>,
    ) -> Result<()> {
        if self.written.len() >= Self::MAX {
            self.commit()?;
        }
        let tmp = Temporary::create_in(folder_of(path))?;
        {
            let mut w = Output::new(tmp.file()?, &tmp.path);
            write(&mut w)?;
            w.finish()
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        self.written.push((tmp, path.to_path_buf()));
        Ok(())
    }

    /// Puts every file written so far in place, durably (see [`write_atomically`]).
    pub fn commit(&mut self) -> Result<()> {
        for (tmp, path) in &self.written {
            tmp.file()?
                .sync_all()
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        let mut folders = Vec::new();
        for (mut tmp, path) in self.written.drain(..) {
            tmp.rename_to(&path)?;
            let dir = folder_of(&path).to_path_buf();
            if !folders.contains(&dir) {
                folders.push(dir);
            }
        }
        folders.iter().try_for_each(|d| sync_dir(d))
    }
}

/// The folder a file is in (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The writer [`write_atomically`] hands out: bytes gather in a staging buffer and go to the
/// temporary file [`Output::STAGE`] bytes at a time.
///
/// On Linux they go with `O_DIRECT` where the filesystem takes it: from the staging buffer (kept
/// aligned to [`Output::ALIGN`]) straight to the disk, with no copy into the page cache, which
/// took a third of a restore's CPU time. The fsync that ends every output would push those bytes
/// to the disk anyway. The last partial block goes through the page cache. Where `O_DIRECT` is
/// refused (tmpfs, some network filesystems) and elsewhere, the bytes go through the page cache,
/// and on Linux each stretch is handed to the disk at once (`sync_file_range`, which does not
/// wait), so the closing fsync waits for the last stretch rather than for all of it.
struct Output<'a> {
    file: &'a File,
    /// An `O_DIRECT` descriptor of the same file (Linux), until the filesystem refuses one.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    direct: Option<File>,
    /// Room for `ALIGN + STAGE` bytes, from the spare buffers (none until the first write):
    /// `start` bytes of padding, then the staged bytes.
    stage: Vec<u8>,
    /// Where the aligned stretch of `stage` starts.
    start: usize,
    /// Bytes staged.
    fill: usize,
    /// Bytes already in the file.
    at: u64,
    /// Where the last writeback hint ended.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    hinted: u64,
}

impl<'a> Output<'a> {
    const STAGE: usize = 8 << 20;
    const ALIGN: usize = 4096;

    fn new(file: &'a File, _path: &Path) -> Output<'a> {
        #[cfg(target_os = "linux")]
        let direct = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(_path)
                .ok()
        };
        #[cfg(not(target_os = "linux"))]
        let direct = None;
        Output {
            file,
            direct,
            stage: Vec::new(),
            start: 0,
            fill: 0,
            at: 0,
            hinted: 0,
        }
    }

    /// Writes the first `n` staged bytes to the file and keeps the rest staged.
    fn spill(&mut self, n: usize) -> std::io::Result<()> {
        let bytes = &self.stage[self.start..self.start + n];
        #[cfg(target_os = "linux")]
        if let Some(direct) = &self.direct {
            use std::os::unix::fs::FileExt as _;
            match direct.write_all_at(bytes, self.at) {
                Ok(()) => {}
                // Refused from the first block on: this filesystem takes no O_DIRECT.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && self.at == 0 => {
                    self.direct = None;
                    return self.spill(n);
                }
                Err(e) => return Err(e),
            }
            self.staged_out(n);
            return Ok(());
        }
        (&mut &*self.file).write_all(bytes)?;
        #[cfg(target_os = "linux")]
        if self.at + n as u64 - self.hinted >= Self::STAGE as u64 {
            use std::os::fd::AsRawFd as _;
            // A hint: its failure only means the fsync does all the work.
            // SAFETY: a plain syscall on an open descriptor; no memory is passed.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.hinted as libc::off64_t,
                    (self.at + n as u64 - self.hinted) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.hinted = self.at + n as u64;
        }
        self.staged_out(n);
        Ok(())
    }

    /// Drops the first `n` staged bytes, now in the file.
    fn staged_out(&mut self, n: usize) {
        let (from, to) = (self.start + n, self.start + self.fill);
        self.stage.copy_within(from..to, self.start);
        self.fill -= n;
        self.stage.truncate(self.start + self.fill);
        self.at += n as u64;
    }

    /// Writes what is staged: whole blocks as they go, the last partial one through the page
    /// cache (the buffered descriptor writes at its own position, which is `at` by then only if
    /// nothing went direct, so it is written at its offset).
    fn finish(mut self) -> std::io::Result<()> {
        let whole = self.fill / Self::ALIGN * Self::ALIGN;
        if self.direct.is_some() && whole > 0 {
            self.spill(whole)?;
        }
        if self.fill > 0 {
            #[cfg(target_os = "linux")]
            if self.direct.is_some() {
                use std::os::unix::fs::FileExt as _;
                let tail = &self.stage[self.start..self.start + self.fill];
                self.file.write_all_at(tail, self.at)?;
                self.staged_out(self.fill);
                return Ok(());
            }
            self.spill(self.fill)?;
        }
        Ok(())
    }
}

impl Write for Output<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.stage.capacity() == 0 {
            // Filled only as far as bytes arrive (a fresh buffer's pages are faulted in only
            // where they land, so a small file costs little); a large output reuses a spare.
            let mut stage = take_buffer_of(Self::ALIGN + Self::STAGE);
            if stage.capacity() < Self::ALIGN + Self::STAGE {
                return_buffer(stage);
                stage = Vec::with_capacity(Self::ALIGN + Self::STAGE);
            }
            stage.clear();
            self.start = stage.as_ptr().align_offset(Self::ALIGN).min(Self::ALIGN);
            stage.resize(self.start, 0);
            self.stage = stage;
        }
        // Within the capacity: the buffer never moves, so the staged bytes stay aligned.
        let n = buf.len().min(Self::STAGE - self.fill);
        self.stage.extend_from_slice(&buf[..n]);
        self.fill += n;
        if self.fill == Self::STAGE {
            self.spill(Self::STAGE)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Output<'_> {
    fn drop(&mut self) {
        return_buffer(std::mem::take(&mut self.stage));
    }
}

/// A new temporary file, closed and removed when dropped unless renamed into place.
struct Temporary {
    file: Option<File>,
    path: std::path::PathBuf,
    renamed: bool,
}

impl Temporary {
    /// Creates `.zipllm-XXXXXXXXXXXX.part` in `dir` under a name no other file has
    /// (`create_new`: an existing file, or a symlink planted there, is never opened).
    fn create_in(dir: &Path) -> Result<Temporary> {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let failed = |e| Error::io(format!("creating a temporary file in {}", dir.display()), e);
        let mut taken = 0;
        loop {
            // RandomState's keys are random per process and differ per instance; with the
            // process id, a counter and the time, names from this and other processes differ.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
                h.write_u128(t.as_nanos());
            }
            let path = dir.join(format!(".zipllm-{:012x}.part", h.finish() >> 16));
            // Mode 0666 on unix (std's default), less the umask: an ordinary new file.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(Temporary {
                        file: Some(file),
                        path,
                        renamed: false,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && taken < 64 => taken += 1,
                Err(e) => return Err(failed(e)),
            }
        }
    }

    fn file(&self) -> Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| Error::internal("the temporary file is closed"))
    }

    /// Closes the file (Windows renames no open file) and renames it to `dest`.
    fn rename_to(&mut self, dest: &Path) -> Result<()> {
        drop(self.file.take());
        std::fs::rename(&self.path, dest).map_err(|e| {
            Error::io(
                format!("renaming {} to {}", self.path.display(), dest.display()),
                e,
            )
        })?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        // Closed first: Windows deletes no open file.
        drop(self.file.take());
        if !self.renamed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Fsyncs folder `dir` so a rename in it is durable (unix). Filesystems that cannot sync a
/// folder say so with EINVAL (or ENOSYS): that is not an error; every other failure is.
/// Elsewhere a no-op: Windows has no folder fsync through std (NTFS journals renames).
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::io::ErrorKind;
        let synced = File::open(dir).and_then(|d| d.sync_all());
        if let Err(e) = synced {
            if !matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Unsupported) {
                return Err(Error::io(
                    format!("syncing the folder {}", dir.display()),
                    e,
                ));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Encodes files: `target` against `base`, on `threads` threads.
pub fn encode_files(
    base: &Path,
    target: &Path,
    options: &EncodeOptions,
    threads: Option<usize>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<EncodedDelta> {
    let b = Mapped::open(base)?;
    let t = Mapped::open(target)?;
    with_threads(threads, || {
        encode::encode(b.bytes(), t.bytes(), options, progress)
    })?
}

/// An opened delta: its plan and its bytes.
pub struct DeltaFile {
    map: Mapped,
    /// The parsed manifest.
    pub plan: Plan,
}

impl DeltaFile {
    /// Opens and parses a delta file; a file shorter or longer than its manifest says is an error.
    pub fn open(path: &Path) -> Result<DeltaFile> {
        Self::from_mapped(Mapped::open(path)?)
    }

    /// A delta held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<DeltaFile> {
        Self::from_mapped(Mapped::Owned(bytes))
    }

    fn from_mapped(map: Mapped) -> Result<DeltaFile> {
        let plan = Plan::from_delta_head(map.bytes())?;
        let have = map.bytes().len() as u64;
        let want = plan.delta_len();
        if have < want {
            return Err(Error::truncated(format!(
                "the delta is {have} bytes but its manifest describes {want}"
            )));
        }
        if have > want {
            return Err(Error::corrupt(format!(
                "{} unexpected bytes after the end of the delta",
                have - want
            )));
        }
        Ok(DeltaFile { map, plan })
    }

    /// The whole delta.
    pub fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    /// Blob `index`'s bytes.
    pub fn blob(&self, index: u32) -> Option<&[u8]> {
        let r = self.plan.blob_range(index);
        self.map.bytes().get(r.start as usize..r.end as usize)
    }

    /// Decodes chunk `index` against `base` (the whole base file) into `out`, which is resized
    /// to the chunk's length (a reused buffer is not zeroed first: every byte is overwritten).
    pub fn decode_chunk_into(
        &self,
        index: usize,
        base: &[u8],
        decoder: &mut BlobDecoder,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let reads = self.plan.manifest.base_reads(index);
        let base_bytes: Cow<[u8]> = match reads.as_slice() {
            [] => Cow::Borrowed(&[]),
            [r] => Cow::Borrowed(&base[r.start as usize..r.end as usize]),
            many => Cow::Owned(
                many.iter()
                    .flat_map(|r| &base[r.start as usize..r.end as usize])
                    .copied()
                    .collect(),
            ),
        };
        out.resize(self.plan.manifest.chunks[index].out_len as usize, 0);
        self.plan
            .decode_chunk(index, |b| self.blob(b), &base_bytes, out, decoder)
    }
}

/// How much a rebuild checks and how many threads it uses.
#[derive(Debug, Clone, Copy)]
pub struct RebuildOptions {
    /// Threads decoding chunks (`None`: one per core). Writing and whole-file hashing run on
    /// one more thread, overlapping the decoding.
    pub threads: Option<usize>,
    /// Also hash the whole output (sha256 and blake3) and compare with the manifest. Every
    /// chunk is checked against its blake3 either way, so every byte is verified without it;
    /// this re-derives the hub's sha256 independently.
    pub full_hash: bool,
    /// The sha256 the output must have (the hub's LFS oid): a delta that promises another file
    /// fails with [`crate::ErrorCode::UnexpectedTarget`] before anything is decoded, and the
    /// whole output is hashed and compared. Needs `full_hash`.
    pub expect_sha256: Option<[u8; 32]>,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        RebuildOptions {
            threads: None,
            full_hash: true,
            expect_sha256: None,
        }
    }
}

/// Rebuilds the target from `base` and `delta`, handing verified bytes to `sink` in file order.
pub fn rebuild(
    base: &Path,
    delta: &Path,
    options: RebuildOptions,
    progress: &(dyn Fn(u64) + Sync),
    sink: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
) -> Result<Summary> {
    let delta = DeltaFile::open(delta)?;
    let base_map = Mapped::open(base)?;
    rebuild_mapped(base_map.bytes(), &delta, options, progress, sink)
}

/// [`rebuild`] over bytes already in memory.
pub fn rebuild_mapped(
    base: &[u8],
    delta: &DeltaFile,
    options: RebuildOptions,
    progress: &(dyn Fn(u64) + Sync),
    sink: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
) -> Result<Summary> {
    let plan = &delta.plan;
    let m = &plan.manifest;
    if let Some(expected) = &options.expect_sha256 {
        if !options.full_hash {
            return Err(Error::invalid(
                "an expected sha256 needs the whole-file hash (do not turn it off)",
            ));
        }
        crate::codec::rebuild::check_expected(&m.target_sha256, expected)?;
    }
    let header = base.get(..m.base_header_len as usize).unwrap_or(base);
    plan.check_base(Some(base.len() as u64), header)?;

    let pool = thread_pool(options.threads)?;
    let window = (pool.current_num_threads() * 2).max(2);
    let (chunks_tx, chunks_rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>>>(window);
    let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let spare_rx = std::sync::Mutex::new(spare_rx);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<Summary> {
            let mut sha = options.full_hash.then(sha2::Sha256::new);
            let mut blake = options.full_hash.then(blake3::Hasher::new);
            let mut consume = |bytes: &[u8]| -> Result<()> {
                if let (Some(sha), Some(blake)) = (sha.as_mut(), blake.as_mut()) {
                    sha.update(bytes);
                    blake.update(bytes);
                }
                sink(bytes)?;
                progress(bytes.len() as u64);
                Ok(())
            };
            consume(&m.header)?;
            for chunk in chunks_rx {
                let chunk = chunk?;
                consume(&chunk)?;
                let _ = spare_tx.send(chunk);
            }
            let computed = sha
                .zip(blake)
                .map(|(sha, blake)| (sha.finalize().into(), blake.finalize()));
            Summary::of(m, m.target_size, computed)
        });

        pool.install(|| {
            let mut allocated = 0usize;
            let n = m.chunks.len();
            let mut start = 0;
            while start < n {
                let range = start..(start + window).min(n);
                start = range.end;
                // At most `2 * window` output buffers ever exist: past that, wait for the writer
                // to hand one back, so memory stays bounded and pages stay faulted in.
                let buffers: Vec<Vec<u8>> = {
                    let spare = spare_rx.lock().ok();
                    range
                        .clone()
                        .map(|_| {
                            let spare = spare.as_ref();
                            if let Some(buf) = spare.and_then(|r| r.try_recv().ok()) {
                                return buf;
                            }
                            if allocated < 2 * window {
                                allocated += 1;
                                return take_buffer();
                            }
                            spare.and_then(|r| r.recv().ok()).unwrap_or_default()
                        })
                        .collect()
                };
                let decoded: Vec<Result<Vec<u8>>> = range
                    .into_par_iter()
                    .zip(buffers)
                    .map(|(i, mut buf)| {
                        with_decoder(|dec| delta.decode_chunk_into(i, base, dec, &mut buf))?;
                        Ok(buf)
                    })
                    .collect();
                let failed = decoded.iter().any(|r| r.is_err());
                for r in decoded {
                    if chunks_tx.send(r).is_err() {
                        return;
                    }
                }
                if failed {
                    return;
                }
            }
        });
        drop(chunks_tx);
        let result = writer
            .join()
            .map_err(|_| Error::internal("the output thread panicked"))?;
        if let Ok(spare) = spare_rx.lock() {
            for buf in spare.try_iter() {
                return_buffer(buf);
            }
        }
        result
    })
}

/// Output buffers kept between rebuilds in one process (at most 16), so a warm process does
/// not fault fresh pages in for every file.
static SPARE_BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

pub(crate) fn take_buffer() -> Vec<u8> {
    take_buffer_of(usize::MAX)
}

/// A spare buffer, the smallest holding `len` bytes if any does (else the largest).
pub(crate) fn take_buffer_of(len: usize) -> Vec<u8> {
    let Ok(mut v) = SPARE_BUFFERS.lock() else {
        return Vec::new();
    };
    let fit = (0..v.len())
        .filter(|&i| v[i].capacity() >= len)
        .min_by_key(|&i| v[i].capacity())
        .or_else(|| (0..v.len()).max_by_key(|&i| v[i].capacity()));
    fit.map(|i| v.swap_remove(i)).unwrap_or_default()
}

/// Keeps `buf` for reuse if it is worth it (64 KiB or more) and fewer than 16 are kept.
pub(crate) fn return_buffer(buf: Vec<u8>) {
    if buf.capacity() < 64 << 10 {
        return;
    }
    if let Ok(mut v) = SPARE_BUFFERS.lock() {
        if v.len() < 16 {
            v.push(buf);
        }
    }
}

thread_local! {
    /// One blob decoder per worker thread, its buffers and zstd context reused across chunks.
    static DECODER: std::cell::RefCell<Option<BlobDecoder>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's blob decoder (made on first use, kept for the thread's life).
pub(crate) fn with_decoder<T>(f: impl FnOnce(&mut BlobDecoder) -> Result<T>) -> Result<T> {
    DECODER.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| Error::internal("decoder re-entered"))?;
        if slot.is_none() {
            *slot = Some(BlobDecoder::new()?);
        }
        match slot.as_mut() {
            Some(dec) => f(dec),
            None => Err(Error::internal("no decoder")),
        }
    })
}

/// A spare buffer lent out as [`bytes::Bytes`]: back to the spare buffers when the last view of
/// it is dropped.
#[cfg(feature = "store")]
struct Lent(Vec<u8>);

#[cfg(feature = "store")]
impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(feature = "store")]
impl Drop for Lent {
    fn drop(&mut self) {
        return_buffer(std::mem::take(&mut self.0));
    }
}

/// `len` bytes written by `fill` into a spare buffer (its earlier contents are not cleared:
/// `fill` must write all of it), handed out as `Bytes` that give the buffer back when dropped.
#[cfg(feature = "store")]
pub(crate) fn lent_bytes(
    len: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<bytes::Bytes> {
    let mut buf = take_buffer_of(len);
    buf.resize(len, 0);
    buf.truncate(len);
    fill(&mut buf)?;
    Ok(bytes::Bytes::from_owner(Lent(buf)))
}

/// A pool of `threads` workers (`None`: one per core), created once per size and kept, so
/// repeated rebuilds in one process (a server, the benchmark) reuse warm threads and buffers.
fn thread_pool(threads: Option<usize>) -> Result<std::sync::Arc<rayon::ThreadPool>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let n = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| Error::invalid("thread pool registry poisoned"))?;
    if let Some(pool) = pools.get(&n) {
        return Ok(pool.clone());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("zipllm-pool-{i}"))
        .build()
        .map_err(|e| Error::invalid(format!("cannot start worker threads: {e}")))?;
    let pool = Arc::new(pool);
    pools.insert(n, pool.clone());
    Ok(pool)
}

/// Rebuilds into the file `out`, atomically: nothing is left at `out` unless every check passed.
pub fn rebuild_to_file(
    base: &Path,
    delta: &Path,
    out: &Path,
    options: RebuildOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Summary> {
    let delta = DeltaFile::open(delta)?;
    let base_map = Mapped::open(base)?;
    let mut summary = None;
    write_atomically(out, |w| {
        let mut sink = |bytes: &[u8]| {
            w.write_all(bytes)
                .map_err(|e| Error::io(format!("writing {}", out.display()), e))
        };
        summary = Some(rebuild_mapped(
            base_map.bytes(),
            &delta,
            options,
            progress,
            &mut sink,
        )?);
        Ok(())
    })?;
    summary.ok_or_else(|| Error::internal("no summary"))
}

/// Rebuilds only output bytes `range` (decoding just the chunks that cover them).
pub fn rebuild_range(base: &Path, delta: &Path, range: Range<u64>) -> Result<Vec<u8>> {
    let delta = DeltaFile::open(delta)?;
    let base_map = Mapped::open(base)?;
    let base = base_map.bytes();
    let plan = &delta.plan;
    let m = &plan.manifest;
    plan.check_range(&range)?;
    plan.check_base(
        Some(base.len() as u64),
        base.get(..m.base_header_len as usize).unwrap_or(base),
    )?;
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    out.extend_from_slice(plan.header_within(&range));
    let mut decoder = BlobDecoder::new()?;
    for i in plan.chunks_for(range.clone()) {
        let base_bytes: Vec<u8> = m
            .base_reads(i)
            .iter()
            .flat_map(|r| &base[r.start as usize..r.end as usize])
            .copied()
            .collect();
        let part =
            plan.decode_chunk_within(i, &range, |b| delta.blob(b), &base_bytes, &mut decoder)?;
        out.extend_from_slice(&part);
    }
    Ok(out)
}

/// Reads `len` bytes at `offset` of an open file.
pub(crate) fn read_at(file: &File, offset: u64, len: u64, path: &Path) -> Result<Vec<u8>> {
    let what = || format!("reading {len} bytes at {offset} of {}", path.display());
    let n = usize::try_from(len).map_err(|_| Error::invalid(what()))?;
    let mut buf = vec![0u8; n];
    read_exact_at(file, &mut buf, offset).map_err(|e| Error::io(what(), e))?;
    Ok(buf)
}

/// Fills `buf` from `offset` of `file` (positioned read; on Windows and elsewhere the file's
/// cursor moves, which nothing here relies on).
#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(not(any(unix, windows)))]
fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek};
    file.seek(std::io::SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

/// Parses a file's safetensors header reading only the header.
pub fn read_header(path: &Path) -> Result<(File, crate::model::Model)> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        .len();
    let prefix = read_at(&file, 0, 8.min(len), path)?;
    let region = crate::model::Model::header_region_len(&prefix, Some(len))?;
    let header = read_at(&file, 0, region, path)?;
    let model = crate::model::Model::parse_header(&header, Some(len))?;
    Ok((file, model))
}

/// Fingerprints a file reading only its header and the sampled blocks: at most
/// `min(max_bytes, share × file)` bytes, or every byte with `exact`.
pub fn fingerprint_file(
    path: &Path,
    max_bytes: u64,
    share: f64,
    exact: bool,
) -> Result<crate::family::Fingerprint> {
    let (file, model) = read_header(path)?;
    let plan = if exact {
        crate::family::SamplePlan::new(&model, 1.0)
    } else {
        crate::family::SamplePlan::with_budget(&model, max_bytes, share)
    };
    let bytes = plan
        .ranges
        .iter()
        .map(|r| read_at(&file, r.start, r.end - r.start, path))
        .collect::<Result<Vec<_>>>()?;
    plan.fingerprint(&model, &bytes)
}

/// Compares a target fingerprint with a candidate file, reading only the aligned blocks.
pub fn compare_file(
    name: &str,
    target: &crate::family::Fingerprint,
    path: &Path,
) -> Result<crate::family::Verdict> {
    let (file, model) = read_header(path)?;
    let spans: Vec<(u64, u64)> = model.tensors.iter().map(|t| (t.start, t.end)).collect();
    crate::family::compare(name, target, &model, |i, off, len| {
        let (s, e) = spans[i];
        if s + off + len > e {
            return Err(Error::invalid("sample past the end of a tensor"));
        }
        read_at(&file, s + off, len, path)
    })
}

/// The `.safetensors` files directly inside `dir` (sorted), or in its subfolders one level down.
pub fn safetensors_in(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let list = |d: &Path| -> Result<Vec<std::path::PathBuf>> {
        let rd =
            std::fs::read_dir(d).map_err(|e| Error::io(format!("listing {}", d.display()), e))?;
        Ok(rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
    };
    let mut out = Vec::new();
    for p in list(dir)? {
        if p.is_dir() {
            out.extend(
                list(&p)?
                    .into_iter()
                    .filter(|q| q.extension().is_some_and(|x| x == "safetensors")),
            );
        } else if p.extension().is_some_and(|x| x == "safetensors") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}
