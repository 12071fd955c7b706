//! Making a delta: pair tensors, find what is unchanged or repeated, cut pieces and chunks,
//! compress pieces (in parallel with the `parallel` feature), and checksum everything.

use std::collections::HashMap;

use sha2::Digest as _;

use crate::codec::blob::{self, Method};
use crate::codec::entropy::DEFAULT_LEVEL;
use crate::codec::format::{
    BlobEntry, Chunk, Manifest, Piece, PieceSource, TensorEntry, TensorKind,
};
use crate::codec::transform::{Layout, Transform};
use crate::error::{Error, Result};
use crate::model::{DType, Model};

/// Which methods the encoder considers for each piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Our default: order-preserving difference with a change mask and byte planes for floats,
    /// XOR with a change mask for everything else (chosen on the measurements in the README).
    #[default]
    Auto,
    /// BitX as the paper describes it: XOR and byte planes.
    Bitx,
    /// BitX with the paper's sign/exponent/mantissa split for bf16 and f32 (planes otherwise).
    BitxFields,
    /// Try every method on every piece and keep the smallest (slower).
    Best,
}

impl Strategy {
    /// Parses `auto`, `bitx`, `bitx-fields` or `best`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "auto" => Strategy::Auto,
            "bitx" => Strategy::Bitx,
            "bitx-fields" => Strategy::BitxFields,
            "best" => Strategy::Best,
            _ => return None,
        })
    }

    /// The methods to try for a piece of `dtype`, paired with a base tensor or not.
    pub fn candidates(self, dtype: DType, paired: bool) -> Vec<Method> {
        let word = dtype.word();
        if !paired {
            let layout = if word > 1 {
                Layout::Planes
            } else {
                Layout::Bytes
            };
            return vec![Method::new(Transform::None, layout)];
        }
        let fields = matches!(dtype, DType::BF16 | DType::F32);
        let ours = if dtype.is_signed_float() {
            Transform::Diff
        } else {
            Transform::Xor
        };
        match self {
            Strategy::Auto => vec![Method::new(ours, Layout::SparsePlanes)],
            Strategy::Bitx => vec![Method::new(Transform::Xor, Layout::Planes)],
            Strategy::BitxFields if fields => vec![Method::new(Transform::Xor, Layout::Fields)],
            Strategy::BitxFields => vec![Method::new(Transform::Xor, Layout::Planes)],
            Strategy::Best => {
                let mut v = vec![
                    Method::new(ours, Layout::SparsePlanes),
                    Method::new(Transform::Xor, Layout::SparsePlanes),
                    Method::new(Transform::Xor, Layout::Planes),
                ];
                if dtype.is_signed_float() {
                    v.push(Method::new(Transform::Diff, Layout::Planes));
                }
                if fields {
                    v.push(Method::new(Transform::Xor, Layout::Fields));
                }
                v.dedup();
                v
            }
        }
    }
}

/// Encoder settings.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// zstd level for every stream.
    pub level: i32,
    /// Which methods to try.
    pub strategy: Strategy,
    /// Largest piece, in bytes (a multiple of 8).
    pub piece_len: u64,
    /// Chunks close once they reach this many output bytes.
    pub chunk_len: u64,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            level: DEFAULT_LEVEL,
            strategy: Strategy::Auto,
            piece_len: 4 << 20,
            chunk_len: 4 << 20,
        }
    }
}

/// A finished delta: the manifest and the blobs, ready to be written.
#[derive(Debug, Clone)]
pub struct EncodedDelta {
    /// The manifest.
    pub manifest: Manifest,
    /// The blobs, in payload order.
    pub blobs: Vec<Vec<u8>>,
}

impl EncodedDelta {
    /// The whole delta as one buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = self.manifest.to_bytes()?;
        for b in &self.blobs {
            out.extend_from_slice(b);
        }
        Ok(out)
    }

    /// Writes the delta.
    pub fn write_to(&self, w: &mut (impl std::io::Write + ?Sized)) -> Result<u64> {
        let head = self.manifest.to_bytes()?;
        let io = |e| Error::io("writing the delta", e);
        w.write_all(&head).map_err(io)?;
        for b in &self.blobs {
            w.write_all(b).map_err(io)?;
        }
        Ok(head.len() as u64 + self.manifest.payload_len)
    }
}

/// Work for one piece that needs a blob.
struct Job {
    piece: usize,
    target: std::ops::Range<usize>,
    base: Option<std::ops::Range<usize>>,
    dtype: DType,
}

fn map_indexed<T: Send + Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync + Send) -> Vec<R> {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        items.par_iter().map(f).collect()
    }
    #[cfg(not(feature = "parallel"))]
    {
        items.iter().map(f).collect()
    }
}

/// Encodes `target` against `base` (both whole safetensors files). `progress` is called with
/// the number of target bytes just processed, from any thread.
pub fn encode(
    base: &[u8],
    target: &[u8],
    options: &EncodeOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<EncodedDelta> {
    if options.piece_len == 0
        || options.piece_len % 8 != 0
        || options.piece_len > crate::codec::format::MAX_PIECE_LEN
    {
        return Err(Error::invalid(
            "piece length must be a non-zero multiple of 8 up to 64 MiB",
        ));
    }
    // A chunk closes at the first piece that takes it to `chunk_len` or past, so it can be a
    // piece short of `chunk_len` plus a whole piece: keep that within what decoders accept.
    let longest_chunk = options.chunk_len.saturating_add(options.piece_len - 1);
    if options.chunk_len == 0 || longest_chunk > crate::codec::format::MAX_CHUNK_LEN {
        return Err(Error::invalid(format!(
            "chunk length must be non-zero and at most {} bytes with {}-byte pieces",
            crate::codec::format::MAX_CHUNK_LEN + 1 - options.piece_len,
            options.piece_len
        )));
    }
    if !crate::codec::entropy::supported_levels().contains(&options.level) {
        return Err(Error::invalid(format!(
            "zstd level {} is not available in this build (levels {:?})",
            options.level,
            crate::codec::entropy::supported_levels()
        )));
    }
    let base_model = Model::parse(base)
        .map_err(|e| Error::bad_safetensors(format!("base: {}", strip_prefix(&e))))?;
    let model = Model::parse(target)
        .map_err(|e| Error::bad_safetensors(format!("target: {}", strip_prefix(&e))))?;

    // Tensor contents, hashed once for deduplication.
    let hashes = map_indexed(&model.tensors, |t| {
        blake3::hash(&target[t.start as usize..t.end as usize])
    });
    let mut seen: HashMap<([u8; 32], usize), usize> = HashMap::new();

    let mut tensors = Vec::with_capacity(model.tensors.len());
    let mut pieces: Vec<Piece> = Vec::new();
    let mut tensor_pieces: Vec<std::ops::Range<usize>> = Vec::with_capacity(model.tensors.len());
    let mut jobs = Vec::new();
    for (i, t) in model.tensors.iter().enumerate() {
        let paired = base_model.counterpart(t);
        let bytes = &target[t.start as usize..t.end as usize];
        let first = pieces.len();
        let key = (*hashes[i].as_bytes(), t.dtype.word());
        let same = paired.is_some_and(|b| &base[b.start as usize..b.end as usize] == bytes);
        let (kind, reference) = if same {
            (TensorKind::SameAsBase, paired.map_or(0, |b| b.start))
        } else if let Some(&j) = seen.get(&key).filter(|_| !t.is_empty()) {
            (TensorKind::Duplicate, j as u64)
        } else if let Some(b) = paired {
            (TensorKind::Delta, b.start)
        } else {
            (TensorKind::Standalone, 0)
        };
        if kind == TensorKind::Duplicate {
            let source = tensor_pieces[reference as usize].clone();
            let shift = model.tensors[reference as usize].start;
            for k in source {
                let p = pieces[k];
                pieces.push(Piece {
                    out_start: p.out_start - shift + t.start,
                    ..p
                });
            }
        } else {
            let mut offset = 0u64;
            while offset < t.len() {
                let len = options.piece_len.min(t.len() - offset);
                let out_start = t.start + offset;
                let base_start = paired.map(|b| b.start + offset);
                let source = match (kind, base_start) {
                    (TensorKind::SameAsBase, Some(base_start)) => PieceSource::Base { base_start },
                    (_, Some(base_start))
                        if base[base_start as usize..(base_start + len) as usize]
                            == target[out_start as usize..(out_start + len) as usize] =>
                    {
                        PieceSource::Base { base_start }
                    }
                    (_, Some(base_start)) => {
                        jobs.push(Job {
                            piece: pieces.len(),
                            target: out_start as usize..(out_start + len) as usize,
                            base: Some(base_start as usize..(base_start + len) as usize),
                            dtype: t.dtype,
                        });
                        PieceSource::BaseAndBlob {
                            base_start,
                            blob: 0,
                        }
                    }
                    (_, None) => {
                        jobs.push(Job {
                            piece: pieces.len(),
                            target: out_start as usize..(out_start + len) as usize,
                            base: None,
                            dtype: t.dtype,
                        });
                        PieceSource::Blob { blob: 0 }
                    }
                };
                pieces.push(Piece {
                    out_start,
                    len,
                    source,
                });
                offset += len;
            }
            if kind == TensorKind::SameAsBase {
                progress(t.len());
            }
        }
        seen.entry(key).or_insert(i);
        tensor_pieces.push(first..pieces.len());
        tensors.push(TensorEntry {
            name: t.name.clone(),
            dtype: t.dtype,
            out: t.start..t.end,
            kind,
            reference,
        });
    }

    let encoded: Vec<Result<Vec<u8>>> = map_indexed(&jobs, |job| {
        let t = &target[job.target.clone()];
        let b = job.base.clone().map(|r| &base[r]);
        let mut best: Option<Vec<u8>> = None;
        for method in options.strategy.candidates(job.dtype, b.is_some()) {
            let blob = blob::encode(t, b, job.dtype.word(), method, options.level)?;
            if best.as_ref().is_none_or(|x| blob.len() < x.len()) {
                best = Some(blob);
            }
        }
        progress(t.len() as u64);
        best.ok_or_else(|| Error::invalid("no encoding method applies"))
    });

    // Blobs are numbered in piece order, which is the order of first use: duplicates only
    // point back at pieces already numbered.
    let mut blob_of_piece: HashMap<usize, u32> = HashMap::with_capacity(jobs.len());
    let mut blobs = Vec::with_capacity(jobs.len());
    let mut entries = Vec::with_capacity(jobs.len());
    let mut offset = 0u64;
    for (job, blob) in jobs.iter().zip(encoded) {
        let blob = blob?;
        blob_of_piece.insert(job.piece, blobs.len() as u32);
        entries.push(BlobEntry {
            offset,
            len: blob.len() as u64,
        });
        offset += blob.len() as u64;
        blobs.push(blob);
    }
    // Duplicated pieces were copied before their originals had blob numbers: resolve them
    // through the original piece, found by its position in the source tensor.
    let mut original_of: Vec<Option<usize>> = vec![None; pieces.len()];
    for (i, t) in tensors.iter().enumerate() {
        if t.kind == TensorKind::Duplicate {
            let src = tensor_pieces[t.reference as usize].clone();
            for (k, p) in tensor_pieces[i].clone().zip(src) {
                original_of[k] = Some(original_of[p].unwrap_or(p));
            }
        }
    }
    for (k, p) in pieces.iter_mut().enumerate() {
        let owner = original_of[k].unwrap_or(k);
        let resolved = blob_of_piece.get(&owner).copied();
        match (&mut p.source, resolved) {
            (PieceSource::BaseAndBlob { blob, .. } | PieceSource::Blob { blob }, Some(b)) => {
                *blob = b
            }
            (PieceSource::Base { .. }, None) => {}
            _ => return Err(Error::internal("a piece lost its blob")),
        }
    }

    let mut chunks = Vec::new();
    let mut first = 0usize;
    let mut len = 0u64;
    for (i, p) in pieces.iter().enumerate() {
        len += p.len;
        if len >= options.chunk_len || i + 1 == pieces.len() {
            chunks.push(Chunk {
                out_start: pieces[first].out_start,
                out_len: len,
                first_piece: first as u32,
                piece_count: (i + 1 - first) as u32,
                out_blake3: [0; 32],
                base_blake3: [0; 32],
            });
            first = i + 1;
            len = 0;
        }
    }
    let sums = map_indexed(&chunks, |c| {
        let out = blake3::hash(&target[c.out_start as usize..(c.out_start + c.out_len) as usize]);
        let mut h = blake3::Hasher::new();
        for p in &pieces[c.pieces()] {
            if let Some(r) = p.base() {
                h.update(&base[r.start as usize..r.end as usize]);
            }
        }
        (*out.as_bytes(), *h.finalize().as_bytes())
    });
    for (c, (out, b)) in chunks.iter_mut().zip(sums) {
        c.out_blake3 = out;
        c.base_blake3 = b;
    }

    let (target_sha256, target_blake3) = join(
        || sha2::Sha256::digest(target).into(),
        || *hash_all(target).as_bytes(),
    );
    let manifest = Manifest {
        target_size: target.len() as u64,
        target_blake3,
        target_sha256,
        base_size: base.len() as u64,
        base_header_len: base_model.header_len,
        base_header_blake3: *blake3::hash(&base[..base_model.header_len as usize]).as_bytes(),
        header: target[..model.header_len as usize].to_vec(),
        tensors,
        blobs: entries,
        pieces,
        chunks,
        payload_len: offset,
    };
    // What we write must be what every decoder accepts: hold it to the same checks.
    manifest
        .validate()
        .map_err(|e| Error::internal(format!("the encoder made an invalid delta: {e}")))?;
    Ok(EncodedDelta { manifest, blobs })
}

fn strip_prefix(e: &Error) -> String {
    match e {
        Error::BadSafetensors { what } => what.clone(),
        other => other.to_string(),
    }
}

/// blake3 of a whole buffer, on every core when there are threads.
pub(crate) fn hash_all(data: &[u8]) -> blake3::Hash {
    #[cfg(feature = "parallel")]
    {
        blake3::Hasher::new().update_rayon(data).finalize()
    }
    #[cfg(not(feature = "parallel"))]
    {
        blake3::hash(data)
    }
}

pub(crate) fn join<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    #[cfg(feature = "parallel")]
    {
        rayon::join(a, b)
    }
    #[cfg(not(feature = "parallel"))]
    {
        (a(), b())
    }
}
