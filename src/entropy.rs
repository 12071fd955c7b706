//! Stage 4: zstd, behind one API whatever the backend.
//!
//! With the `zstd-c` feature (native default) C zstd compresses at any level and decodes; without
//! it (the wasm build) ruzstd does both, its encoder offering only its fastest level. Every frame
//! either writes is a plain zstd frame, so the backends read each other's output: a delta made
//! natively at level 19 decodes in the browser. Decoding always writes into a buffer of the exact
//! size the delta declares and fails if a frame holds more or less, which is what makes a
//! zip-bomb delta harmless.

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

    /// Decodes one frame into `out`, which must be exactly filled.
    pub fn decompress_into(&mut self, frame: &[u8], out: &mut [u8]) -> Result<()> {
        match &mut self.backend {
            #[cfg(feature = "zstd-c")]
            Backend::C(c) => {
                let n = c
                    .decompress_to_buffer(frame, out)
                    .map_err(|e| Error::corrupt(format!("zstd stream does not decode: {e}")))?;
                check_len(n, out.len())
            }
            Backend::Rust(d) => decompress_rust(d, frame, out),
        }
    }
}

/// Decodes one frame into `out` with ruzstd, whatever the build's backend (the wasm decoder).
pub fn decompress_rust(
    decoder: &mut ruzstd::decoding::FrameDecoder,
    frame: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let n = decoder
        .decode_all(frame, out)
        .map_err(|e| Error::corrupt(format!("zstd stream does not decode: {e}")))?;
    check_len(n, out.len())
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
