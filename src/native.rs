//! Native file adapters around the core: memory-mapped inputs, chunks decoded on every core,
//! output written to a temporary file that is renamed into place only once every check passed.

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::Path;

use memmap2::Mmap;
use rayon::prelude::*;
use sha2::Digest as _;

use crate::blob::BlobDecoder;
use crate::encode::{self, EncodeOptions, EncodedDelta};
use crate::error::{Error, Result};
use crate::rebuild::{hex, Plan, Summary};

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
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        b = b.num_threads(n.max(1));
    }
    let pool = b
        .build()
        .map_err(|e| Error::invalid(format!("cannot start worker threads: {e}")))?;
    Ok(pool.install(f))
}

/// Writes `bytes` to `path` through a temporary file in the same folder, renamed at the end.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut (dyn Write + Send)) -> Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".zipllm-")
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(|e| Error::io(format!("creating a temporary file in {}", dir.display()), e))?;
    {
        let mut w = std::io::BufWriter::with_capacity(8 << 20, tmp.as_file());
        write(&mut w)?;
        w.flush()
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    tmp.persist(path).map_err(|e| {
        Error::io(
            format!("renaming the output to {}", path.display()),
            e.error,
        )
    })?;
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

    /// Decodes chunk `index` against `base` (the whole base file).
    pub fn decode_chunk(
        &self,
        index: usize,
        base: &[u8],
        decoder: &mut BlobDecoder,
    ) -> Result<Vec<u8>> {
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
        let mut out = vec![0u8; self.plan.manifest.chunks[index].out_len as usize];
        self.plan
            .decode_chunk(index, |b| self.blob(b), &base_bytes, &mut out, decoder)?;
        Ok(out)
    }
}

/// Rebuilds the target from `base` and `delta`, handing verified bytes to `sink` in file order,
/// and checks the whole file's sha256 and blake3. `threads` decode chunks in parallel.
pub fn rebuild(
    base: &Path,
    delta: &Path,
    threads: Option<usize>,
    progress: &(dyn Fn(u64) + Sync),
    sink: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
) -> Result<Summary> {
    let delta = DeltaFile::open(delta)?;
    let base_map = Mapped::open(base)?;
    rebuild_mapped(base_map.bytes(), &delta, threads, progress, sink)
}

/// [`rebuild`] over bytes already in memory.
pub fn rebuild_mapped(
    base: &[u8],
    delta: &DeltaFile,
    threads: Option<usize>,
    progress: &(dyn Fn(u64) + Sync),
    sink: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
) -> Result<Summary> {
    let plan = &delta.plan;
    let m = &plan.manifest;
    let header = base.get(..m.base_header_len as usize).unwrap_or(base);
    plan.check_base(Some(base.len() as u64), header)?;

    with_threads(threads, || {
        let workers = rayon::current_num_threads();
        let window = (workers * 2).max(1);
        let mut sha = sha2::Sha256::new();
        let mut blake = blake3::Hasher::new();
        let mut consume = |bytes: &[u8]| -> Result<()> {
            sha.update(bytes);
            blake.update(bytes);
            sink(bytes)?;
            progress(bytes.len() as u64);
            Ok(())
        };
        consume(&m.header)?;
        let decode_window = |range: Range<usize>| -> Vec<Result<Vec<u8>>> {
            range
                .into_par_iter()
                .map_init(BlobDecoder::new, |dec, i| match dec {
                    Ok(dec) => delta.decode_chunk(i, base, dec),
                    Err(e) => Err(Error::invalid(e.to_string())),
                })
                .collect()
        };
        let n = m.chunks.len();
        let mut pending = decode_window(0..window.min(n));
        let mut next = window.min(n);
        loop {
            let upcoming = next..(next + window).min(n);
            next = upcoming.end;
            let more = !upcoming.is_empty();
            let (written, decoded) = rayon::join(
                || -> Result<()> {
                    for chunk in pending.drain(..) {
                        consume(&chunk?)?;
                    }
                    Ok(())
                },
                || {
                    if more {
                        decode_window(upcoming)
                    } else {
                        Vec::new()
                    }
                },
            );
            written?;
            if !more {
                break;
            }
            pending = decoded;
        }
        let sha: [u8; 32] = sha.finalize().into();
        let blake = blake.finalize();
        if sha != m.target_sha256 || blake.as_bytes() != &m.target_blake3 {
            return Err(Error::corrupt(format!(
                "the rebuilt file has sha256 {} but the delta promises {}",
                hex(&sha),
                hex(&m.target_sha256)
            )));
        }
        Ok(Summary {
            size: m.target_size,
            sha256: hex(&sha),
            blake3: blake.to_hex().to_string(),
        })
    })?
}

/// Rebuilds into the file `out`, atomically: nothing is left at `out` unless every check passed.
pub fn rebuild_to_file(
    base: &Path,
    delta: &Path,
    out: &Path,
    threads: Option<usize>,
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
            threads,
            progress,
            &mut sink,
        )?);
        Ok(())
    })?;
    summary.ok_or_else(|| Error::invalid("internal: no summary"))
}

/// Rebuilds only output bytes `range` (decoding just the chunks that cover it).
pub fn rebuild_range(base: &Path, delta: &Path, range: Range<u64>) -> Result<Vec<u8>> {
    let delta = DeltaFile::open(delta)?;
    let base_map = Mapped::open(base)?;
    let base = base_map.bytes();
    let m = &delta.plan.manifest;
    if range.start > range.end || range.end > m.target_size {
        return Err(Error::invalid(format!(
            "range {}..{} is outside the {}-byte target",
            range.start, range.end, m.target_size
        )));
    }
    delta.plan.check_base(
        Some(base.len() as u64),
        base.get(..m.base_header_len as usize).unwrap_or(base),
    )?;
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    let header_len = m.header.len() as u64;
    if range.start < header_len {
        out.extend_from_slice(&m.header[range.start as usize..range.end.min(header_len) as usize]);
    }
    let mut decoder = BlobDecoder::new()?;
    for i in delta.plan.chunks_for(range.clone()) {
        let c = m.chunks[i];
        let bytes = delta.decode_chunk(i, base, &mut decoder)?;
        let from = range.start.max(c.out_start) - c.out_start;
        let to = range.end.min(c.out_start + c.out_len) - c.out_start;
        out.extend_from_slice(&bytes[from as usize..to as usize]);
    }
    Ok(out)
}
