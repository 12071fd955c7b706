//! Tests on the real all-MiniLM-L6-v2 base (fetched from PyPI by scripts/setup.sh) and the
//! committed delta of its real fine-tune ft-a (bf16), whose sha256 is the one listed in
//! ../shared/data/MANIFEST.json.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use zipllm::codec::blob::BlobDecoder;
use zipllm::codec::entropy::Decompressor;
use zipllm::native::{self, DeltaFile, Mapped, RebuildOptions};
use zipllm::{ErrorCode, Rebuilder, Step};

fn bf16_base() -> Vec<u8> {
    std::fs::read(real_model("model.bf16.safetensors")).unwrap()
}

#[test]
fn our_bf16_cast_of_the_pypi_base_is_pytorchs_file() {
    let fp32 = std::fs::read(real_model("model.safetensors")).unwrap();
    assert_eq!(sha256_hex(&fp32), BASE_FP32_SHA256);
    let mut cast = Vec::new();
    zipllm::model::cast_f32_to_bf16(&fp32, &mut cast).unwrap();
    assert_eq!(sha256_hex(&cast), BASE_BF16_SHA256);
}

#[test]
fn committed_bf16_delta_rebuilds_ft_a_to_the_manifest_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.bf16.safetensors");
    let summary = native::rebuild_to_file(
        &real_model("model.bf16.safetensors"),
        &fixture("ft-a.bf16.zld"),
        &out,
        RebuildOptions::default(),
        &|_| {},
    )
    .unwrap();
    assert_eq!(summary.sha256, FT_A_BF16_SHA256);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(sha256_hex(&bytes), FT_A_BF16_SHA256);
    // The delta is a fraction of the file it rebuilds.
    let delta_len = std::fs::metadata(fixture("ft-a.bf16.zld")).unwrap().len();
    assert!(
        delta_len * 7 < bytes.len() as u64,
        "delta {delta_len} vs {}",
        bytes.len()
    );
}

#[test]
fn one_thread_and_many_threads_agree() {
    for threads in [1, 2, 4] {
        let mut hasher = blake3::Hasher::new();
        let summary = native::rebuild(
            &real_model("model.bf16.safetensors"),
            &fixture("ft-a.bf16.zld"),
            RebuildOptions {
                threads: Some(threads),
                full_hash: false,
                ..Default::default()
            },
            &|_| {},
            &mut |b| {
                hasher.update(b);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(hasher.finalize().to_hex().as_str(), summary.blake3);
    }
}

#[test]
fn ruzstd_decodes_every_frame_c_zstd_wrote() {
    let base = bf16_base();
    let delta = DeltaFile::open(&fixture("ft-a.bf16.zld")).unwrap();
    let mut c = BlobDecoder::new().unwrap();
    let mut rust = BlobDecoder::with_decompressor(Decompressor::pure_rust());
    let mut all = blake3::Hasher::new();
    all.update(&delta.plan.manifest.header);
    for i in 0..delta.plan.manifest.chunks.len() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        delta.decode_chunk_into(i, &base, &mut c, &mut a).unwrap();
        delta
            .decode_chunk_into(i, &base, &mut rust, &mut b)
            .unwrap();
        assert_eq!(a, b, "chunk {i}");
        all.update(&b);
    }
    assert_eq!(
        all.finalize().as_bytes(),
        &delta.plan.manifest.target_blake3
    );
}

#[test]
fn streaming_rebuild_with_small_feeds_matches() {
    let base = bf16_base();
    let delta = std::fs::read(fixture("ft-a.bf16.zld")).unwrap();
    let mut machine = Rebuilder::new(Some(base.len() as u64), true).unwrap();
    let mut fed = 0usize;
    let mut sha = blake3::Hasher::new();
    let mut peak_buffered = 0u64;
    let summary = loop {
        match machine.poll().unwrap() {
            Step::NeedDelta => {
                let n = (delta.len() - fed).min(64 * 1024 + 17);
                machine.push_delta(&delta[fed..fed + n]);
                fed += n;
                if fed == delta.len() {
                    machine.end_delta();
                }
            }
            Step::NeedBase(r) => machine
                .provide_base(&base[r.start as usize..r.end as usize])
                .unwrap(),
            Step::Output { bytes, .. } => {
                sha.update(bytes);
            }
            Step::Done(s) => break s,
        }
        peak_buffered = peak_buffered.max(fed as u64 - machine.delta_consumed());
    };
    assert_eq!(summary.sha256, FT_A_BF16_SHA256);
    // The machine holds about one chunk's blobs, not the whole delta.
    assert!(
        peak_buffered < 3 << 20,
        "buffered {peak_buffered} delta bytes"
    );
}

#[test]
fn machines_rebuilding_parts_make_the_whole_file_together() {
    let base = bf16_base();
    let delta = std::fs::read(fixture("ft-a.bf16.zld")).unwrap();
    for parts in [2usize, 3] {
        let mut out = vec![0u8; 45_442_040];
        let mut filled = vec![false; out.len()];
        let mut base_read = 0u64;
        for part in 0..parts {
            let mut m = Rebuilder::new(Some(base.len() as u64), false).unwrap();
            m.set_part(part, parts).unwrap();
            m.push_delta(&delta);
            m.end_delta();
            loop {
                match m.poll().unwrap() {
                    Step::NeedDelta => unreachable!("the whole delta was given"),
                    Step::NeedBase(r) => {
                        base_read += r.end - r.start;
                        m.provide_base(&base[r.start as usize..r.end as usize])
                            .unwrap()
                    }
                    Step::Output { at, bytes } => {
                        let at = at as usize;
                        out[at..at + bytes.len()].copy_from_slice(bytes);
                        assert!(
                            filled[at..at + bytes.len()].iter().all(|f| !f),
                            "bytes at {at} came twice"
                        );
                        filled[at..at + bytes.len()]
                            .iter_mut()
                            .for_each(|f| *f = true);
                    }
                    Step::Done(_) => break,
                }
            }
        }
        assert!(filled.iter().all(|f| *f), "{parts} parts left bytes out");
        assert_eq!(sha256_hex(&out), FT_A_BF16_SHA256);
        // Each part reads only the base bytes its chunks need: the base once in all
        // (plus each part's header check).
        assert!(
            base_read < base.len() as u64 + parts as u64 * 20_000,
            "{base_read} base bytes read"
        );
    }
    // Parts and the whole-file hashes exclude each other; a part is set before the start.
    let mut m = Rebuilder::new(None, true).unwrap();
    assert_eq!(
        m.set_part(1, 2).unwrap_err().code(),
        ErrorCode::InvalidInput
    );
    let mut m = Rebuilder::new(None, false).unwrap();
    assert_eq!(
        m.set_part(2, 2).unwrap_err().code(),
        ErrorCode::InvalidInput
    );
    m.push_delta(&delta[..100]);
    let _ = m.poll();
    assert_eq!(
        m.set_part(0, 2).unwrap_err().code(),
        ErrorCode::InvalidInput
    );
}

#[test]
fn any_range_rebuilds_alone() {
    let base_path = real_model("model.bf16.safetensors");
    let delta_path = fixture("ft-a.bf16.zld");
    let mut full = Vec::new();
    native::rebuild(
        &base_path,
        &delta_path,
        RebuildOptions::default(),
        &|_| {},
        &mut |b| {
            full.extend_from_slice(b);
            Ok(())
        },
    )
    .unwrap();
    let n = full.len() as u64;
    let ranges = [
        (0, 8),
        (0, 11_512),
        (11_000, 12_000),
        (n / 3, n / 3 + 5_000_000),
        (n - 1, n),
        (n, n),
        (4_194_000, 8_388_700),
    ];
    for (a, b) in ranges {
        let got = native::rebuild_range(&base_path, &delta_path, a..b).unwrap();
        assert_eq!(got, &full[a as usize..b as usize], "range {a}..{b}");
    }
    let err = native::rebuild_range(&base_path, &delta_path, 0..n + 1).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput);
}

#[test]
fn fp32_round_trip_on_real_weights() {
    // A synthetic fine-tune of the real fp32 base: every weight nudged by a few ulps in a
    // deterministic pattern, some tensors untouched, one duplicated by name swap.
    let base = std::fs::read(real_model("model.safetensors")).unwrap();
    let model = zipllm::Model::parse(&base).unwrap();
    let mut tuned = base.clone();
    for (i, t) in model.tensors.iter().enumerate() {
        if i % 5 == 0 || t.dtype != zipllm::DType::F32 {
            continue;
        }
        for (k, w) in tuned[t.start as usize..t.end as usize]
            .chunks_exact_mut(4)
            .enumerate()
        {
            let u = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            let step = (k as u32 * 2_654_435_761) >> 29; // 0..7
            w.copy_from_slice(&u.wrapping_add(step).wrapping_sub(3).to_le_bytes());
        }
    }
    let delta = zipllm::encode(&base, &tuned, &Default::default(), &|_| {}).unwrap();
    let bytes = delta.to_bytes().unwrap();
    assert!(
        bytes.len() < tuned.len() / 2,
        "{} of {}",
        bytes.len(),
        tuned.len()
    );
    assert_eq!(zipllm::rebuild_in_memory(&base, &bytes).unwrap(), tuned);
}

#[test]
fn the_wrong_base_is_named_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    // The fp32 base instead of the bf16 one.
    let err = native::rebuild_to_file(
        &real_model("model.safetensors"),
        &fixture("ft-a.bf16.zld"),
        &out,
        RebuildOptions::default(),
        &|_| {},
    )
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::WrongBase);
    assert!(
        err.to_string()
            .contains("delta was made against a base of 45442040 bytes"),
        "{err}"
    );
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temporary file left behind"
    );

    // Same header and size, one weight changed: caught by the chunk that reads it.
    let mut base = bf16_base();
    let m = zipllm::Model::parse(&base).unwrap();
    let t = m
        .tensors
        .iter()
        .find(|t| t.name.contains("layer.3.attention.self.query.weight"))
        .unwrap();
    base[t.start as usize + 100] ^= 0x40;
    let wrong = dir.path().join("wrong-base.safetensors");
    std::fs::write(&wrong, &base).unwrap();
    let err = native::rebuild_to_file(
        &wrong,
        &fixture("ft-a.bf16.zld"),
        &out,
        RebuildOptions::default(),
        &|_| {},
    )
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::WrongBase, "{err}");
    assert!(
        err.to_string().contains("reads base bytes that differ"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn a_corrupt_or_truncated_delta_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let good = std::fs::read(fixture("ft-a.bf16.zld")).unwrap();
    let delta = DeltaFile::from_bytes(good.clone()).unwrap();
    let payload = delta.plan.payload_offset as usize;
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "payload bit flip",
            {
                let mut d = good.clone();
                let i = payload + (d.len() - payload) / 2;
                d[i] ^= 0x10;
                d
            },
            ErrorCode::CorruptDelta,
        ),
        (
            "manifest bit flip",
            {
                let mut d = good.clone();
                d[200] ^= 1;
                d
            },
            ErrorCode::CorruptDelta,
        ),
        (
            "truncated",
            good[..good.len() - 1000].to_vec(),
            ErrorCode::TruncatedDelta,
        ),
        (
            "truncated in the manifest",
            good[..payload / 2].to_vec(),
            ErrorCode::TruncatedDelta,
        ),
        (
            "trailing bytes",
            [good.as_slice(), b"extra"].concat(),
            ErrorCode::CorruptDelta,
        ),
        (
            "not a delta",
            b"PK\x03\x04 this is a zip file".to_vec(),
            ErrorCode::CorruptDelta,
        ),
        (
            "newer version",
            {
                let mut d = good.clone();
                d[8] = 9;
                d
            },
            ErrorCode::UnsupportedVersion,
        ),
    ];
    let base = real_model("model.bf16.safetensors");
    for (what, bytes, code) in cases {
        let path = dir.path().join("bad.zld");
        std::fs::write(&path, &bytes).unwrap();
        let err = native::rebuild_to_file(&base, &path, &out, RebuildOptions::default(), &|_| {})
            .unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err}");
        assert!(!out.exists(), "{what}: output left behind");
        std::fs::remove_file(&path).unwrap();
        // The streaming machine agrees and never hands out a bad chunk.
        let base_bytes = bf16_base();
        let mut m = Rebuilder::new(Some(base_bytes.len() as u64), true).unwrap();
        m.push_delta(&bytes);
        m.end_delta();
        let err = loop {
            match m.poll() {
                Ok(Step::NeedBase(r)) => m
                    .provide_base(&base_bytes[r.start as usize..r.end as usize])
                    .unwrap(),
                Ok(Step::Output { .. }) => {}
                Ok(other) => panic!("{what}: unexpected {other:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.code(), code, "{what} (streaming): {err}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temporary files left behind"
    );
}

#[test]
fn inspect_reports_what_is_inside() {
    let delta = DeltaFile::open(&fixture("ft-a.bf16.zld")).unwrap();
    let r = zipllm::codec::inspect::report(&delta.plan, |b| delta.blob(b)).unwrap();
    assert_eq!(r.target_sha256, FT_A_BF16_SHA256);
    assert_eq!(r.tensors, 104);
    assert_eq!(
        r.by_kind["same-as-base"].count + r.by_kind["delta"].count,
        104
    );
    let payload: u64 = r.by_kind.values().map(|s| s.after).sum();
    assert_eq!(payload, delta.plan.manifest.payload_len);
    assert!(r.by_method.contains_key("diff+sparse-planes"));
    let _ = Mapped::open(&fixture("ft-a.bf16.zld")).unwrap();
}
