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
        let (header, at) = BlobHeader::parse(blob)?;
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
        let refs = streams_of(&mut self.zstd, &mut self.streams, &header, blob, at, len)?;
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

    /// Decodes elements `elems` of a standalone F32 blob of `len` bytes straight to their BF16
    /// cast in `out` (two bytes an element, rounded as [`crate::model::f32_to_bf16_bits`]),
    /// without the F32 words in between. Only a byte-planes blob (what standalone F32 pieces
    /// are encoded as) is cast this way: for any other, nothing is written and the answer is
    /// `Ok(false)`, so the caller decodes it and casts the words.
    pub fn decode_bf16_cast(
        &mut self,
        blob: &[u8],
        len: usize,
        elems: std::ops::Range<usize>,
        out: &mut [u8],
    ) -> Result<bool> {
        let (header, at) = BlobHeader::parse(blob)?;
        if (header.transform, header.layout, header.word) != (Transform::None, Layout::Planes, 4) {
            return Ok(false);
        }
        if len % 4 != 0 || elems.start > elems.end || elems.end > len / 4 {
            return Err(Error::corrupt(format!(
                "elements {elems:?} of a {len}-byte F32 piece"
            )));
        }
        if out.len() != 2 * elems.len() {
            return Err(Error::internal(
                "a BF16 cast's output is not two bytes an element",
            ));
        }
        let refs = streams_of(&mut self.zstd, &mut self.streams, &header, blob, at, len)?;
        let [p0, p1, p2, p3] = refs[..] else {
            return Err(Error::corrupt("an F32 planes blob without four planes"));
        };
        transform::planes_to_bf16([p0, p1, p2, p3], elems, out);
        Ok(true)
    }
}

/// Decodes a blob's streams (`header` parsed, the first at `at`) for a piece of `len` bytes:
/// stored ones are read in place in the blob, compressed ones decompressed into `buffers`.
/// Every declared length is checked against the layout before anything is written.
fn streams_of<'a>(
    zstd: &mut Decompressor,
    buffers: &'a mut Vec<Vec<u8>>,
    header: &BlobHeader,
    blob: &'a [u8],
    mut at: usize,
    len: usize,
) -> Result<Vec<&'a [u8]>> {
    let word = header.word as usize;
    buffers.resize_with(header.streams.len(), Vec::new);
    let mut stored_at: Vec<Option<std::ops::Range<usize>>> = vec![None; header.streams.len()];
    let mut want = transform::stream_lengths(header.layout, word, len, None)?;
    for (i, &(codec, raw, stored)) in header.streams.iter().enumerate() {
        if i == 1 && header.layout == Layout::SparsePlanes {
            let first = match &stored_at[0] {
                Some(r) => &blob[r.clone()],
                None => &buffers[0][..header.streams[0].1 as usize],
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
                let buf = &mut buffers[i];
                resize_scratch(buf, raw as usize);
                zstd.decompress_into(&blob[body], &mut buf[..raw as usize])?;
            }
        }
    }
    Ok(buffers
        .iter()
        .zip(&header.streams)
        .zip(stored_at)
        .map(|((s, &(_, raw, _)), stored)| match stored {
            Some(r) => &blob[r],
            None => &s[..raw as usize],
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// F32 words covering ties, NaNs, infinities and runs that compress (so that some planes
    /// are stored and some are zstd streams).
    fn words(n: usize) -> Vec<u8> {
        let special = [
            0x3f80_8000u32, // a tie, rounds to even (down)
            0x3f81_8000,    // a tie, rounds up
            0x7f80_0000,    // infinity
            0x7fc0_0001,    // a NaN
            0xff80_0001,    // a signalling NaN, negative
            0x7f7f_ffff,    // rounds up to infinity
        ];
        let mut x = 0x2545_f491u32;
        (0..n)
            .map(|i| match i % 97 {
                k if k < special.len() => special[k],
                _ => {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    0x3c00_0000 | (x & 0x807f_ffff)
                }
            })
            .flat_map(u32::to_le_bytes)
            .collect()
    }

    #[test]
    fn f32_planes_decode_straight_to_their_bf16_cast() {
        let n = 64 * 5 + 13;
        let src = words(n);
        let planes = Method::new(Transform::None, Layout::Planes);
        let blob = encode(&src, None, 4, planes, 3).expect("encoded");
        let mut want = vec![0u8; 2 * n];
        crate::model::cast_f32_bytes_to_bf16(&src, &mut want);
        let mut dec = BlobDecoder::new().expect("a decoder");
        for elems in [0..n, 0..1, 1..64, 63..130, 200..n, 7..7] {
            let mut out = vec![0xAA; 2 * elems.len()];
            let cast = dec
                .decode_bf16_cast(&blob, src.len(), elems.clone(), &mut out)
                .expect("a planes blob decodes");
            assert!(cast, "{elems:?}");
            assert_eq!(out, want[2 * elems.start..2 * elems.end], "{elems:?}");
        }
        // Past the piece, or a length that is not the blob's: refused, nothing read outside.
        let mut out = vec![0u8; 4];
        assert!(dec
            .decode_bf16_cast(&blob, src.len(), n - 1..n + 1, &mut out)
            .is_err());
        assert!(dec
            .decode_bf16_cast(&blob, src.len() - 4, 0..2, &mut out)
            .is_err());
    }

    #[test]
    fn other_blobs_are_left_to_a_full_decode() {
        let src = words(100);
        let bytes = Method::new(Transform::None, Layout::Bytes);
        let bytes = encode(&src, None, 4, bytes, 3).expect("encoded");
        let base = words(101)[4..].to_vec();
        let xor = Method::new(Transform::Xor, Layout::Planes);
        let delta = encode(&src, Some(&base), 4, xor, 3).expect("encoded");
        let mut dec = BlobDecoder::new().expect("a decoder");
        for blob in [bytes, delta] {
            let mut out = vec![0x55; 200];
            let cast = dec.decode_bf16_cast(&blob, 400, 0..100, &mut out);
            assert!(!cast.expect("a blob of another kind is no error"));
            assert!(out.iter().all(|&b| b == 0x55));
        }
    }
}
