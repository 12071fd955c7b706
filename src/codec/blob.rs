//! Pieces to blobs and back: a [`Method`] (transform + layout) and zstd per stream.
//!
//! A blob is self-describing (see [`BlobHeader`]), so a decoder needs only the blob, the piece's
//! length and, for a delta transform, the base bytes.

use crate::codec::entropy::{self, Codec, Decompressor};
use crate::codec::format::BlobHeader;
use crate::codec::transform::{self, Layout, Transform};
use crate::error::{Error, Result};

/// A transform and a layout: how a piece is turned into streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Method {
    /// Residual transform.
    pub transform: Transform,
    /// Stream layout.
    pub layout: Layout,
}

impl Method {
    /// Shorthand constructor.
    pub const fn new(transform: Transform, layout: Layout) -> Self {
        Method { transform, layout }
    }

    /// `transform+layout`, e.g. `diff+sparse-planes`.
    pub fn name(&self) -> String {
        format!("{}+{}", self.transform.name(), self.layout.name())
    }
}

/// Encodes one piece. `base` must be given exactly when the method's transform needs one.
/// Streams that zstd does not shrink are stored as they are.
pub fn encode(
    target: &[u8],
    base: Option<&[u8]>,
    word: usize,
    method: Method,
    level: i32,
) -> Result<Vec<u8>> {
    let base = match (method.transform, base) {
        (Transform::None, _) => target,
        (_, Some(base)) => base,
        (t, None) => {
            return Err(Error::invalid(format!(
                "the {} transform needs a base",
                t.name()
            )));
        }
    };
    let streams = if method.layout == Layout::SparsePlanes {
        crate::codec::sparse::sparse_forward(method.transform, word, target, base)?
    } else {
        let mut residual = vec![0u8; target.len()];
        transform::forward(method.transform, word, target, base, &mut residual)?;
        transform::split(method.layout, word, &residual)?
    };
    let mut header = BlobHeader {
        transform: method.transform,
        layout: method.layout,
        word: word as u8,
        streams: Vec::with_capacity(streams.len()),
    };
    let mut bodies = Vec::with_capacity(streams.len());
    for s in streams {
        let packed = if s.len() >= 64 {
            Some(entropy::compress(&s, level)?)
        } else {
            None
        };
        match packed {
            Some(z) if z.len() < s.len() => {
                header
                    .streams
                    .push((Codec::Zstd, s.len() as u64, z.len() as u64));
                bodies.push(z);
            }
            _ => {
                header
                    .streams
                    .push((Codec::Stored, s.len() as u64, s.len() as u64));
                bodies.push(s);
            }
        }
    }
    let mut out =
        Vec::with_capacity(header.encoded_len() + bodies.iter().map(Vec::len).sum::<usize>());
    header.write(&mut out);
    for b in bodies {
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// Makes room for `len` bytes in a buffer whose contents do not matter (they are dropped if
/// it grows). Growing makes a new allocation rather than `realloc`, which would copy the old
/// capacity's bytes for nothing (4 MiB per chunk buffer, measured as 1-2% of a rebuild in wasm).
pub(crate) fn reserve_scratch(v: &mut Vec<u8>, len: usize) {
    if v.capacity() < len {
        *v = Vec::with_capacity(len.max(2 * v.capacity()));
    }
}

/// Sets the length of a scratch buffer whose old contents do not matter.
pub(crate) fn resize_scratch(v: &mut Vec<u8>, len: usize) {
    reserve_scratch(v, len);
    v.resize(len, 0);
}

/// Decodes blobs, reusing its buffers and zstd context from one blob to the next.
pub struct BlobDecoder {
    zstd: Decompressor,
    streams: Vec<Vec<u8>>,
    residual: Vec<u8>,
}

impl BlobDecoder {
    /// A decoder with empty buffers and the build's preferred zstd backend.
    pub fn new() -> Result<Self> {
        Ok(Self::with_decompressor(Decompressor::new()?))
    }

    /// A decoder using the given zstd decoder (e.g. [`Decompressor::pure_rust`]).
    pub fn with_decompressor(zstd: Decompressor) -> Self {
        BlobDecoder {
            zstd,
            streams: Vec::new(),
            residual: Vec::new(),
        }
    }

    /// Decodes `blob` into `out` (the piece's bytes), applying it to `base` when the blob's
    /// transform needs one. Every length is checked before anything is allocated or written.
    pub fn decode(
        &mut self,
        blob: &[u8],
        base: Option<&[u8]>,
        word: usize,
        out: &mut [u8],
    ) -> Result<()> {
        let (header, mut at) = BlobHeader::parse(blob)?;
        if header.word as usize != word {
            return Err(Error::corrupt(format!(
                "blob of {}-byte words used for a tensor of {word}-byte words",
                header.word
            )));
        }
        match (header.transform, base) {
            (Transform::None, None) | (Transform::Xor | Transform::Diff, Some(_)) => {}
            (Transform::None, Some(_)) => {
                return Err(Error::corrupt("a standalone blob is applied to a base"))
            }
            (_, None) => return Err(Error::corrupt("a delta blob has no base to apply to")),
        }
        let len = out.len();
        self.streams.resize_with(header.streams.len(), Vec::new);
        // Where each stream's bytes are: a stored stream is read in place in the blob, a
        // compressed one is decompressed into this decoder's buffer for it.
        let mut stored_at: Vec<Option<std::ops::Range<usize>>> = vec![None; header.streams.len()];
        let mut want = transform::stream_lengths(header.layout, word, len, None)?;
        for (i, &(codec, raw, stored)) in header.streams.iter().enumerate() {
            if i == 1 && header.layout == Layout::SparsePlanes {
                let first = match &stored_at[0] {
                    Some(r) => &blob[r.clone()],
                    None => &self.streams[0][..header.streams[0].1 as usize],
                };
                want = transform::stream_lengths(header.layout, word, len, Some(first))?;
            }
            if raw != want[i] as u64 {
                return Err(Error::corrupt(format!(
                    "blob stream {i} declares {raw} bytes where the piece needs {}",
                    want[i]
                )));
            }
            let body = at..at + stored as usize;
            at += stored as usize;
            match codec {
                // (`parse` checked that a stored stream's two lengths agree.)
                Codec::Stored => stored_at[i] = Some(body),
                Codec::Zstd => {
                    // Buffers are reused without zeroing: every byte used is overwritten here.
                    let buf = &mut self.streams[i];
                    resize_scratch(buf, raw as usize);
                    self.zstd
                        .decompress_into(&blob[body], &mut buf[..raw as usize])?;
                }
            }
        }
        let refs: Vec<&[u8]> = self
            .streams
            .iter()
            .zip(&header.streams)
            .zip(&stored_at)
            .map(|((s, &(_, raw, _)), stored)| match stored {
                Some(r) => &blob[r.clone()],
                None => &s[..raw as usize],
            })
            .collect();
        if header.layout == Layout::SparsePlanes {
            return crate::codec::sparse::sparse_inverse(
                header.transform,
                word,
                &refs,
                base.unwrap_or(&[]),
                out,
            );
        }
        match base {
            None => transform::join(header.layout, word, &refs, out),
            Some(base) => {
                resize_scratch(&mut self.residual, len);
                transform::join(header.layout, word, &refs, &mut self.residual)?;
                transform::inverse(header.transform, word, &self.residual, base, out)
            }
        }
    }
}
