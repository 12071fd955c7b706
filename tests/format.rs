//! The delta format cannot drift by accident: a committed sample (base, target, delta) must keep
//! decoding, and today's encoder must still write the very same bytes for it. A deliberate
//! format change regenerates the sample (`cargo test --test format -- --ignored
//! regenerate_sample`) and, if old deltas no longer decode, bumps `format::VERSION`.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use zipllm::codec::format::{MAGIC, PREAMBLE_LEN, VERSION};
use zipllm::DType;

fn sample_dir() -> std::path::PathBuf {
    fixture("sample-v1")
}

/// A small pair that exercises every tensor kind and the main dtypes.
fn sample_pair() -> (Vec<u8>, Vec<u8>) {
    let f32w = noise(3000 * 4, 1);
    let mut f32t = f32w.clone();
    for w in f32t.chunks_exact_mut(4).step_by(3) {
        let u = u32::from_le_bytes([w[0], w[1], w[2], w[3]]).wrapping_add(2);
        w.copy_from_slice(&u.to_le_bytes());
    }
    let bf = noise(2048 * 2, 2);
    let mut bft = bf.clone();
    for w in bft.chunks_exact_mut(2).step_by(5) {
        w[0] ^= 1;
    }
    let ids: Vec<u8> = (0..64u64).flat_map(|i| i.to_le_bytes()).collect();
    let base = build(
        &[
            Spec {
                name: "ids".into(),
                dtype: DType::I64,
                shape: vec![64],
                data: ids.clone(),
            },
            Spec {
                name: "dense.weight".into(),
                dtype: DType::F32,
                shape: vec![30, 100],
                data: f32w,
            },
            Spec {
                name: "norm.weight".into(),
                dtype: DType::BF16,
                shape: vec![2048],
                data: bf,
            },
        ],
        Some(r#"{"format":"pt"}"#),
    );
    let head = noise(500, 3);
    let target = build(
        &[
            Spec {
                name: "ids".into(),
                dtype: DType::I64,
                shape: vec![64],
                data: ids,
            },
            Spec {
                name: "dense.weight".into(),
                dtype: DType::F32,
                shape: vec![30, 100],
                data: f32t,
            },
            Spec {
                name: "norm.weight".into(),
                dtype: DType::BF16,
                shape: vec![2048],
                data: bft,
            },
            Spec {
                name: "head.bias".into(),
                dtype: DType::U8,
                shape: vec![500],
                data: head.clone(),
            },
            Spec {
                name: "head.bias.copy".into(),
                dtype: DType::U8,
                shape: vec![500],
                data: head,
            },
            Spec {
                name: "empty".into(),
                dtype: DType::F16,
                shape: vec![0, 3],
                data: vec![],
            },
        ],
        Some(r#"{"format":"pt","note":"sample"}"#),
    );
    (base, target)
}

fn small_options() -> zipllm::EncodeOptions {
    // Small pieces and chunks so the sample holds several of each.
    zipllm::EncodeOptions {
        piece_len: 4096,
        chunk_len: 6000,
        ..Default::default()
    }
}

#[test]
fn committed_sample_still_decodes() {
    let dir = sample_dir();
    let base = std::fs::read(dir.join("base.safetensors")).unwrap();
    let target = std::fs::read(dir.join("target.safetensors")).unwrap();
    let delta = std::fs::read(dir.join("delta.zld")).unwrap();
    assert_eq!(&delta[..8], &MAGIC);
    assert_eq!(
        u32::from_le_bytes(delta[8..12].try_into().unwrap()),
        VERSION
    );
    assert!(delta.len() as u64 > PREAMBLE_LEN);
    assert_eq!(zipllm::rebuild_in_memory(&base, &delta).unwrap(), target);
    let plan = zipllm::Plan::from_delta_head(&delta).unwrap();
    assert!(plan.manifest.chunks.len() >= 3 && plan.manifest.pieces.len() >= 5);
}

#[test]
fn todays_encoder_writes_the_committed_bytes() {
    let dir = sample_dir();
    let (base, target) = sample_pair();
    assert_eq!(
        base,
        std::fs::read(dir.join("base.safetensors")).unwrap(),
        "sample generator changed"
    );
    assert_eq!(
        target,
        std::fs::read(dir.join("target.safetensors")).unwrap(),
        "sample generator changed"
    );
    let delta = zipllm::encode(&base, &target, &small_options(), &|_| {})
        .unwrap()
        .to_bytes()
        .unwrap();
    assert!(
        delta == std::fs::read(dir.join("delta.zld")).unwrap(),
        "the encoder's output changed: if deliberate, regenerate the sample and update docs/FORMAT.md"
    );
}

#[test]
#[ignore = "writes tests/fixtures/sample-v1; run deliberately"]
fn regenerate_sample() {
    let dir = sample_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let (base, target) = sample_pair();
    let delta = zipllm::encode(&base, &target, &small_options(), &|_| {})
        .unwrap()
        .to_bytes()
        .unwrap();
    std::fs::write(dir.join("base.safetensors"), base).unwrap();
    std::fs::write(dir.join("target.safetensors"), target).unwrap();
    std::fs::write(dir.join("delta.zld"), delta).unwrap();
}
