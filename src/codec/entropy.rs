//! Stage 4: zstd, behind one API whatever the backend.
//!
//! With the `zstd-c` feature (native default) C zstd compresses at any level and decodes; without
//! it (the wasm build) ruzstd does both, its encoder offering only its fastest level. Every frame
//! either writes is a plain zstd frame, so the backends read each other's output: a delta made
//! natively at level 19 decodes in the browser. Decoding always writes into a buffer of the exact
//! size the delta declares and fails if a frame holds more or less, which is what makes a
//! zip-bomb delta harmless.

use crate::codec::format::Reader;
use crate::error::{Error, Result};

/// How one stream of a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// The bytes as they are (used when zstd would not shrink them).
    Stored = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Codec {
    /// The codec with format code `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Codec::Stored),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// The zstd level used when none is given: the best ratio that still encodes at a few hundred
/// MB/s per thread on XOR/diff streams (see the benchmark in the README).
pub const DEFAULT_LEVEL: i32 = 1;

/// The levels this build can compress at.
pub fn supported_levels() -> std::ops::RangeInclusive<i32> {
    if cfg!(feature = "zstd-c") {
        1..=22
    } else {
        1..=1
    }
}

/// Compresses `data` into one zstd frame at `level`, without a content checksum (blobs are
/// covered by the chunk checksums).
pub fn compress(data: &[u8], level: i32) -> Result<Vec<u8>> {
    #[cfg(feature = "zstd-c")]
    {
        let mut c = zstd::bulk::Compressor::new(level)
            .map_err(|e| Error::invalid(format!("zstd level {level}: {e}")))?;
        c.include_checksum(false)
            .and_then(|_| c.include_contentsize(true))
            .map_err(|e| Error::invalid(format!("zstd parameters: {e}")))?;
        c.compress(data)
            .map_err(|e| Error::invalid(format!("zstd compression failed: {e}")))
    }
    #[cfg(not(feature = "zstd-c"))]
    {
        if !supported_levels().contains(&level) {
            return Err(Error::invalid(format!(
                "zstd level {level} needs the C zstd backend; this build offers level 1 only"
            )));
        }
        Ok(ruzstd::encoding::compress_to_vec(
            data,
            ruzstd::encoding::CompressionLevel::Fastest,
        ))
    }
}

/// A reusable zstd decoder: keep one per thread.
pub struct Decompressor {
    backend: Backend,
}

enum Backend {
    #[cfg(feature = "zstd-c")]
    C(Box<zstd::bulk::Decompressor<'static>>),
    Rust(Box<ruzstd::decoding::FrameDecoder>),
}

impl Decompressor {
    /// A decoder with the build's preferred backend (C zstd when built with `zstd-c`).
    pub fn new() -> Result<Self> {
        #[cfg(feature = "zstd-c")]
        {
            let c = zstd::bulk::Decompressor::new()
                .map_err(|e| Error::io("starting the zstd decoder", e))?;
            Ok(Decompressor {
                backend: Backend::C(Box::new(c)),
            })
        }
        #[cfg(not(feature = "zstd-c"))]
        {
            Ok(Self::pure_rust())
        }
    }

    /// A decoder using ruzstd whatever the build: the wasm build's decoder, available natively
    /// so tests can check it reads every frame C zstd writes.
    pub fn pure_rust() -> Self {
        Decompressor {
            backend: Backend::Rust(Box::new(ruzstd::decoding::FrameDecoder::new())),
        }
    }

    /// Decodes one frame into `out`, which must be exactly filled. The frame's structure is
    /// checked first ([`check_frame`]), so neither backend sees more than one bounded frame.
    pub fn decompress_into(&mut self, frame: &[u8], out: &mut [u8]) -> Result<()> {
        check_frame(frame, out.len())?;
        match &mut self.backend {
            #[cfg(feature = "zstd-c")]
            Backend::C(c) => {
                let n = c
                    .decompress_to_buffer(frame, out)
                    .map_err(|e| Error::corrupt(format!("zstd stream does not decode: {e}")))?;
                check_len(n, out.len())
            }
            Backend::Rust(d) => decode_rust(d, frame, out),
        }
    }
}

/// The zstd frame magic number.
const FRAME_MAGIC: u32 = 0xFD2F_B528;
/// The largest block a frame may hold (RFC 8878, Block_Maximum_Size).
const MAX_BLOCK: u64 = 128 << 10;

/// The largest window a frame decoding to `raw_len` bytes may declare: what C zstd writes for
/// a known content size (at most the next power of two), or the 128 KiB of ruzstd's encoder.
/// Decoders reserve the declared window, so this ties their memory to the piece length.
fn window_limit(raw_len: usize) -> u64 {
    (raw_len as u64).next_power_of_two().max(MAX_BLOCK)
}

/// Checks that `frame` is exactly one zstd frame (RFC 8878) with no dictionary, a window within
/// [`window_limit`] and, if it records its content size, that size `raw_len`: walking its
/// block headers, without decoding. A stream is one frame (docs/FORMAT.md); refusing anything
/// else up front means a declared window cannot make a decoder reserve memory the piece does
/// not warrant, and skippable or concatenated frames never reach either backend.
pub fn check_frame(frame: &[u8], raw_len: usize) -> Result<()> {
    let bad = |what: String| Error::corrupt(format!("zstd stream: {what}"));
    let mut r = Reader::new(frame, "zstd frame");
    if r.u32()? != FRAME_MAGIC {
        return Err(bad("not a zstd frame".into()));
    }
    let descriptor = r.u8()?;
    let single_segment = descriptor & 0x20 != 0;
    if descriptor & 0x08 != 0 {
        return Err(bad("the frame header's reserved bit is set".into()));
    }
    if descriptor & 0x03 != 0 {
        return Err(bad("the frame names a dictionary".into()));
    }
    let window = if single_segment {
        None
    } else {
        let w = r.u8()?;
        let base = 1u64 << (10 + (w >> 3));
        Some(base + base / 8 * u64::from(w & 7))
    };
    let content_size = match (descriptor >> 6, single_segment) {
        (0, false) => None,
        (0, true) => Some(u64::from(r.u8()?)),
        (1, _) => Some(u64::from(u16::from_le_bytes([r.u8()?, r.u8()?])) + 256),
        (2, _) => Some(u64::from(r.u32()?)),
        _ => Some(r.u64()?),
    };
    if let Some(n) = content_size.filter(|&n| n != raw_len as u64) {
        return Err(bad(format!(
            "the frame holds {n} bytes, the blob declares {raw_len}"
        )));
    }
    let window = window.or(content_size).unwrap_or(0);
    if window > window_limit(raw_len) {
        return Err(bad(format!("a {window}-byte window for {raw_len} bytes")));
    }
    loop {
        let header = r.take(3)?;
        let header = u32::from_le_bytes([header[0], header[1], header[2], 0]);
        let size = u64::from(header >> 3);
        if size > MAX_BLOCK {
            return Err(bad(format!("a block of {size} bytes")));
        }
        match (header >> 1) & 3 {
            // Raw and compressed blocks carry `size` bytes; an RLE block one byte, repeated.
            0 | 2 => r.take(size)?,
            1 => r.take(1)?,
            _ => return Err(bad("a block of the reserved type".into())),
        };
        if header & 1 != 0 {
            break;
        }
    }
    if descriptor & 0x04 != 0 {
        r.take(4)?;
    }
    if !r.is_empty() {
        return Err(bad("bytes after the frame".into()));
    }
    Ok(())
}

/// Decodes one frame into `out` with ruzstd, whatever the build's backend (the wasm decoder),
/// after [`check_frame`].
pub fn decompress_rust(
    decoder: &mut ruzstd::decoding::FrameDecoder,
    frame: &[u8],
    out: &mut [u8],
) -> Result<()> {
    check_frame(frame, out.len())?;
    decode_rust(decoder, frame, out)
}

fn decode_rust(
    decoder: &mut ruzstd::decoding::FrameDecoder,
    frame: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let n = decoder
        .decode_all(frame, out)
        .map_err(|e| Error::corrupt(format!("zstd stream does not decode: {e}")))?;
    check_len(n, out.len())?;
    // ruzstd reads a frame's content checksum but leaves comparing it to the caller; C zstd
    // compares it, so both backends refuse the same frames.
    if let Some(recorded) = decoder.get_checksum_from_data() {
        if decoder.get_calculated_checksum() != Some(recorded) {
            return Err(Error::corrupt("zstd frame checksum mismatch"));
        }
    }
    Ok(())
}

fn check_len(got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::corrupt(format!(
            "zstd stream decodes to {got} bytes, the blob declares {want}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_read_the_same_frames() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 9) as u8)
            .collect();
        let frame = compress(&data, DEFAULT_LEVEL).unwrap();
        assert!(frame.len() < data.len());
        let mut out = vec![0; data.len()];
        Decompressor::new()
            .unwrap()
            .decompress_into(&frame, &mut out)
            .unwrap();
        assert_eq!(out, data);
        let mut out2 = vec![0; data.len()];
        decompress_rust(
            &mut ruzstd::decoding::FrameDecoder::new(),
            &frame,
            &mut out2,
        )
        .unwrap();
        assert_eq!(out2, data);
    }

    #[test]
    fn a_frame_larger_than_declared_is_refused() {
        let data = vec![0u8; 1 << 20];
        let frame = compress(&data, DEFAULT_LEVEL).unwrap();
        let mut small = vec![0; 1000];
        let err = Decompressor::new()
            .unwrap()
            .decompress_into(&frame, &mut small)
            .unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::CorruptDelta);
        let err = decompress_rust(
            &mut ruzstd::decoding::FrameDecoder::new(),
            &frame,
            &mut small,
        )
        .unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::CorruptDelta);
    }
}
