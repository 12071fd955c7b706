//! The core compiled to wasm32 and run in headless Chromium (`wasm-pack test --headless
//! --chrome`): the committed sample decodes, encoding round-trips with the pure-Rust zstd, and
//! bad input is an error, never a panic (a panic would kill the wasm instance).
#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[path = "common/mod.rs"]
mod common;

const BASE: &[u8] = include_bytes!("fixtures/sample-v1/base.safetensors");
const TARGET: &[u8] = include_bytes!("fixtures/sample-v1/target.safetensors");
const DELTA: &[u8] = include_bytes!("fixtures/sample-v1/delta.zld");

#[wasm_bindgen_test]
fn committed_sample_decodes_in_the_browser() {
    assert_eq!(zipllm::rebuild_in_memory(BASE, DELTA).unwrap(), TARGET);
}

#[wasm_bindgen_test]
fn encoding_in_the_browser_round_trips() {
    let delta = zipllm::encode(BASE, TARGET, &Default::default(), &|_| {})
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(zipllm::rebuild_in_memory(BASE, &delta).unwrap(), TARGET);
}

#[wasm_bindgen_test]
fn bad_inputs_are_errors_not_panics() {
    let mut corrupt = DELTA.to_vec();
    let n = corrupt.len();
    corrupt[n - 20] ^= 0xff;
    assert!(zipllm::rebuild_in_memory(BASE, &corrupt).is_err());
    assert!(zipllm::rebuild_in_memory(BASE, &DELTA[..DELTA.len() / 2]).is_err());
    assert!(zipllm::rebuild_in_memory(TARGET, DELTA).is_err());
    assert!(zipllm::Model::parse(&[1, 2, 3]).is_err());
    for cut in [0, 7, 8, 100, 500] {
        assert!(zipllm::Model::parse(&BASE[..cut]).is_err());
    }
}

#[wasm_bindgen_test]
fn streaming_machine_byte_by_byte() {
    let mut m = zipllm::Rebuilder::new(Some(BASE.len() as u64), true).unwrap();
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        match m.poll().unwrap() {
            zipllm::Step::NeedDelta => {
                m.push_delta(&DELTA[fed..fed + 1]);
                fed += 1;
                if fed == DELTA.len() {
                    m.end_delta();
                }
            }
            zipllm::Step::NeedBase(r) => m
                .provide_base(&BASE[r.start as usize..r.end as usize])
                .unwrap(),
            zipllm::Step::Output { bytes, .. } => out.extend_from_slice(bytes),
            zipllm::Step::Done(_) => break,
        }
    }
    assert_eq!(out, TARGET);
}

/// The wasm build hashes chunks with its own SIMD128 kernel under blake3's tree: it must give
/// BLAKE3 exactly, at every boundary of a chunk, of four chunks, and of the tree.
#[wasm_bindgen_test]
fn chunk_checksum_hasher_is_blake3() {
    let data: Vec<u8> = (0..(4 << 20) + 12345)
        .map(|i: usize| (i * 31 + i / 251) as u8)
        .collect();
    let mut lengths = vec![0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 3071, 3072, 3073];
    // The boundaries of src/hash.rs's own test, which checks the portable lanes natively.
    for chunks in [
        4usize, 5, 7, 8, 9, 12, 15, 16, 17, 20, 31, 32, 33, 48, 64, 100, 259,
    ] {
        lengths.extend([chunks * 1024 - 1, chunks * 1024, chunks * 1024 + 1]);
    }
    lengths.extend([4 << 20, data.len()]);
    for len in lengths {
        let want = blake3::hash(&data[..len]);
        for step in [
            1000,
            1024,
            3 * 1024,
            4096,
            5000,
            17 * 1024,
            70_001,
            200_000,
            usize::MAX,
        ] {
            let mut h = zipllm::hash::Hasher::new();
            for piece in data[..len].chunks(step.min(len.max(1))) {
                h.update(piece);
            }
            assert_eq!(h.finalize(), want, "{len} bytes in pieces of {step}");
        }
    }
}

/// The npm package's C zstd is patched for wasm32 (64-bit bit containers, so the Huffman fast
/// loop runs; vendor/README.md): it must round-trip every shape of stream, read as ruzstd
/// reads it, and answer corrupt frames with an error or bytes, never a trap.
#[cfg(feature = "zstd-c")]
#[wasm_bindgen_test]
fn patched_c_zstd_round_trips_and_survives_corruption() {
    common::zstd_stress::check(&[1, 3, 19], 300);
}

/// Tensors whose element count is not a multiple of 8 end in a partial mask group, which the
/// SIMD128 kernels leave to the scalar tail: f32 and bf16 of many odd sizes must round-trip.
#[wasm_bindgen_test]
fn odd_sized_tensors_round_trip() {
    use common::{build, noise, Spec};
    let (mut base, mut tuned) = (Vec::new(), Vec::new());
    for (i, n) in [1usize, 2, 7, 8, 9, 15, 17, 4097, 65539]
        .into_iter()
        .enumerate()
    {
        for (dtype, size) in [(zipllm::DType::F32, 4), (zipllm::DType::BF16, 2)] {
            let data = noise(n * size, i as u64 * 2 + size as u64);
            let mut changed = data.clone();
            // A fine-tune's kind of change: the low mantissa byte of some elements.
            for w in (0..n).step_by(3) {
                changed[w * size] ^= 0x5a;
            }
            let name = format!("t{i}.{}", dtype.name());
            for (list, bytes) in [(&mut base, data), (&mut tuned, changed)] {
                list.push(Spec {
                    name: name.clone(),
                    dtype,
                    shape: vec![n as u64],
                    data: bytes,
                });
            }
        }
    }
    let (base, target) = (build(&base, None), build(&tuned, None));
    let delta = zipllm::encode(&base, &target, &Default::default(), &|_| {})
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(zipllm::rebuild_in_memory(&base, &delta).unwrap(), target);
}
