//! A stress check of the zstd decoder the build uses: frames of every shape the planes produce
//! round-trip, and corrupt frames are errors, never a crash. Run natively and, with C zstd
//! patched for wasm32 (vendor/README.md), in the browser by tests/wasm.rs.

use zipllm::codec::entropy::{compress, decompress_rust, Decompressor};

use super::Rng;

/// Streams like those of the planes: Huffman-coded literals of skewed bytes (mantissa planes),
/// near-random bytes, long runs with sparse changes (exponent planes), and repeats at many
/// offsets (many sequences).
fn streams() -> Vec<(&'static str, Vec<u8>)> {
    let mut r = Rng::new(7);
    let skewed = |r: &mut Rng, n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| (r.next().trailing_zeros() * 3 + r.below(3) as u32) as u8)
            .collect()
    };
    let random: Vec<u8> = (0..200_000).map(|_| r.next() as u8).collect();
    let sparse: Vec<u8> = (0..600_000)
        .map(|_| if r.below(50) == 0 { r.next() as u8 } else { 0 })
        .collect();
    let mut repeats = Vec::new();
    while repeats.len() < 400_000 {
        if repeats.len() > 64 && r.below(3) > 0 {
            let back = 1 + r.below(repeats.len().min(70_000) as u64) as usize;
            let len = 3 + r.below(40) as usize;
            for _ in 0..len {
                repeats.push(repeats[repeats.len() - back]);
            }
        } else {
            repeats.push(r.below(40) as u8);
        }
    }
    vec![
        ("skewed", skewed(&mut r, 300_000)),
        ("skewed-large", skewed(&mut r, 2_500_000)),
        ("random", random),
        ("sparse", sparse),
        ("repeats", repeats),
    ]
}

/// Round trips at several levels (checked against ruzstd too), then `trials` corruptions of
/// each frame, which the decoder must answer with `Ok` or `Err` without crashing. (A corrupt
/// frame may still decode: the chunk checksums catch that. C zstd and ruzstd do not always
/// agree on which do.)
pub fn check(levels: &[i32], trials: usize) {
    let mut c = Decompressor::new().unwrap();
    let mut rust = ruzstd::decoding::FrameDecoder::new();
    let mut r = Rng::new(11);
    for (name, data) in streams() {
        for &level in levels {
            // The slow levels on the small streams only: they pick other encodings, not sizes.
            if level > 9 && data.len() > 500_000 {
                continue;
            }
            let frame = compress(&data, level).unwrap();
            let mut out = vec![0u8; data.len()];
            c.decompress_into(&frame, &mut out).unwrap();
            assert!(out == data, "{name} at level {level} does not round-trip");
            out.fill(0);
            decompress_rust(&mut rust, &frame, &mut out).unwrap();
            assert!(
                out == data,
                "{name} at level {level}: ruzstd reads it otherwise"
            );
            let mut bad_frame = frame.clone();
            for t in 0..trials {
                bad_frame.copy_from_slice(&frame);
                for _ in 0..1 + t % 3 {
                    let at = r.below(bad_frame.len() as u64) as usize;
                    bad_frame[at] ^= 1 << r.below(8);
                }
                let _ = c.decompress_into(&bad_frame, &mut out);
            }
        }
    }
}
