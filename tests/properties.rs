//! Property tests: random models of every dtype and shape round-trip byte for byte, through the
//! in-memory path, the streaming machine fed in random slices, and every encoding strategy.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use proptest::prelude::*;
use zipllm::{DType, EncodeOptions, Rebuilder, Step, Strategy as Method};

/// Elements per shape such that the byte length is whole for sub-byte dtypes.
fn shape_for(dtype: DType, dims: &[u64]) -> Vec<u64> {
    let mut shape = dims.to_vec();
    let bits = dtype.bits();
    let n: u64 = shape.iter().product();
    if (n * bits) % 8 != 0 {
        // Round the last dimension up so the tensor fills whole bytes.
        let step = 8 / gcd(bits, 8);
        match shape.last_mut() {
            Some(last) => *last = (*last).div_ceil(step) * step,
            None => shape.push(step),
        }
    }
    shape
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[derive(Debug, Clone)]
struct TensorCase {
    dtype: DType,
    dims: Vec<u64>,
    seed: u64,
    /// 0: identical to base, 1: sparse changes, 2: dense changes, 3: no base tensor,
    /// 4: duplicate of the previous tensor, 5: base has another dtype.
    change: u8,
    density: u8,
}

fn tensor_case() -> impl Strategy<Value = TensorCase> {
    (
        proptest::sample::select(DType::all().to_vec()),
        proptest::collection::vec(0u64..40, 0..4),
        any::<u64>(),
        0u8..6,
        1u8..=255,
    )
        .prop_map(|(dtype, dims, seed, change, density)| TensorCase {
            dtype,
            dims,
            seed,
            change,
            density,
        })
}

fn make_pair(cases: &[TensorCase], shuffle_base: bool) -> (Vec<u8>, Vec<u8>) {
    let mut base = Vec::new();
    let mut target: Vec<Spec> = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let shape = shape_for(c.dtype, &c.dims);
        let len = (shape.iter().product::<u64>() * c.dtype.bits() / 8) as usize;
        let name = format!("layer.{i}.weight");
        let base_data = noise(len, c.seed);
        let mut data = base_data.clone();
        match c.change {
            1 | 2 => {
                let flips = noise(len, c.seed ^ 0xABCD);
                for (k, b) in data.iter_mut().enumerate() {
                    let hit = if c.change == 1 {
                        flips[k] < c.density / 8
                    } else {
                        flips[k] <= c.density
                    };
                    if hit {
                        *b = b.wrapping_add(flips[k] | 1);
                    }
                }
            }
            4 if i > 0 => data = target[i - 1].data.clone(),
            _ => {}
        }
        let (dtype, shape) = if c.change == 4 && i > 0 {
            (target[i - 1].dtype, target[i - 1].shape.clone())
        } else {
            (c.dtype, shape)
        };
        if c.change != 3 {
            let base_dtype = if c.change == 5 {
                if dtype == DType::U8 {
                    DType::I8
                } else {
                    DType::U8
                }
            } else {
                dtype
            };
            let base_shape = if base_dtype == dtype {
                shape.clone()
            } else {
                vec![base_data.len() as u64]
            };
            let base_bytes = if c.change == 4 {
                noise(data.len(), c.seed)
            } else {
                base_data
            };
            base.push(Spec {
                name: name.clone(),
                dtype: base_dtype,
                shape: base_shape,
                data: base_bytes,
            });
        }
        target.push(Spec {
            name,
            dtype,
            shape,
            data,
        });
    }
    if shuffle_base {
        base.reverse();
    }
    (
        build(&base, Some(r#"{"format":"pt"}"#)),
        build(&target, None),
    )
}

fn stream_rebuild(base: &[u8], delta: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut m = Rebuilder::new(Some(base.len() as u64), true).unwrap();
    let mut out = Vec::new();
    let mut fed = 0usize;
    let mut cut = cuts.iter().cycle();
    loop {
        match m.poll().unwrap() {
            Step::NeedDelta => {
                let n = (*cut.next().unwrap_or(&1)).max(1).min(delta.len() - fed);
                m.push_delta(&delta[fed..fed + n]);
                fed += n;
                if fed == delta.len() {
                    m.end_delta();
                }
            }
            Step::NeedBase(r) => m
                .provide_base(&base[r.start as usize..r.end as usize])
                .unwrap(),
            Step::Output { bytes, .. } => out.extend_from_slice(bytes),
            Step::Done(s) => {
                assert_eq!(s.sha256, sha256_hex(&out));
                return out;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_models_round_trip(
        cases in proptest::collection::vec(tensor_case(), 0..7),
        shuffle in any::<bool>(),
        strategy in proptest::sample::select(vec![Method::Auto, Method::Bitx, Method::BitxFields, Method::Best]),
        piece_words in 1u64..64,
        chunk in 1u64..4096,
        cuts in proptest::collection::vec(1usize..5000, 1..5),
    ) {
        let (base, target) = make_pair(&cases, shuffle);
        let options = EncodeOptions { level: 1, strategy, piece_len: piece_words * 8, chunk_len: chunk };
        let delta = zipllm::encode(&base, &target, &options, &|_| {}).unwrap().to_bytes().unwrap();
        prop_assert_eq!(zipllm::rebuild_in_memory(&base, &delta).unwrap(), target.clone());
        prop_assert_eq!(stream_rebuild(&base, &delta, &cuts), target.clone());
        let plan = zipllm::Plan::from_delta_head(&delta).unwrap();
        prop_assert_eq!(plan.delta_len(), delta.len() as u64);
    }

    #[test]
    fn every_strategy_round_trips_a_float_tensor(
        dtype in proptest::sample::select(vec![DType::BF16, DType::F16, DType::F32, DType::F64, DType::F8_E4M3, DType::C64]),
        n in 0u64..3000,
        seed in any::<u64>(),
    ) {
        let cases = [TensorCase { dtype, dims: vec![n], seed, change: 1, density: 200 }];
        let (base, target) = make_pair(&cases, false);
        for strategy in [Method::Auto, Method::Bitx, Method::BitxFields, Method::Best] {
            let options = EncodeOptions { strategy, piece_len: 1024, ..Default::default() };
            let delta = zipllm::encode(&base, &target, &options, &|_| {}).unwrap().to_bytes().unwrap();
            prop_assert_eq!(zipllm::rebuild_in_memory(&base, &delta).unwrap(), target.clone());
        }
    }
}

#[test]
fn identical_and_duplicate_tensors_cost_no_payload() {
    let w = noise(4096, 7);
    let base = build(
        &[Spec {
            name: "a".into(),
            dtype: DType::F32,
            shape: vec![1024],
            data: w.clone(),
        }],
        None,
    );
    let other = noise(4096, 8);
    let target = build(
        &[
            Spec {
                name: "a".into(),
                dtype: DType::F32,
                shape: vec![1024],
                data: w.clone(),
            },
            Spec {
                name: "b".into(),
                dtype: DType::F32,
                shape: vec![1024],
                data: other.clone(),
            },
            Spec {
                name: "c".into(),
                dtype: DType::F32,
                shape: vec![1024],
                data: other,
            },
        ],
        None,
    );
    let delta = zipllm::encode(&base, &target, &Default::default(), &|_| {}).unwrap();
    let kinds: Vec<_> = delta.manifest.tensors.iter().map(|t| t.kind).collect();
    use zipllm::codec::format::TensorKind::*;
    assert_eq!(kinds, vec![SameAsBase, Standalone, Duplicate]);
    assert_eq!(
        delta.blobs.len(),
        1,
        "the duplicate reuses the original's blob"
    );
    let bytes = delta.to_bytes().unwrap();
    assert_eq!(zipllm::rebuild_in_memory(&base, &bytes).unwrap(), target);
}

#[test]
fn incompressible_streams_are_stored_raw() {
    let base = build(
        &[Spec {
            name: "a".into(),
            dtype: DType::U8,
            shape: vec![65536],
            data: noise(65536, 1),
        }],
        None,
    );
    let target = build(
        &[Spec {
            name: "a".into(),
            dtype: DType::U8,
            shape: vec![65536],
            data: noise(65536, 2),
        }],
        None,
    );
    let delta = zipllm::encode(&base, &target, &Default::default(), &|_| {}).unwrap();
    let (header, _) = zipllm::codec::format::BlobHeader::parse(&delta.blobs[0]).unwrap();
    assert!(header
        .streams
        .iter()
        .any(|s| s.0 == zipllm::codec::entropy::Codec::Stored));
    // Random data costs its own size plus a small, bounded overhead.
    assert!(delta.manifest.payload_len < 65536 + 65536 / 8 + 128);
}
