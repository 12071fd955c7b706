//! One test per kind of bad input: each gives a typed error that names the problem.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::*;
use zipllm::codec::format::{BlobHeader, Manifest, PieceSource};
use zipllm::{DType, ErrorCode, Model};

fn raw(header: &str, data_len: usize) -> Vec<u8> {
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header.as_bytes());
    f.resize(f.len() + data_len, 0);
    f
}

fn bad(file: &[u8], needle: &str) {
    let err = Model::parse(file).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadSafetensors, "{err}");
    assert!(
        err.to_string().contains(needle),
        "`{err}` should mention `{needle}`"
    );
}

#[test]
fn file_shorter_than_the_length_prefix() {
    bad(b"\x05\x00\x00", "too short");
}

#[test]
fn header_length_past_end_of_file() {
    let mut f = 1000u64.to_le_bytes().to_vec();
    f.extend_from_slice(b"{}");
    bad(&f, "past the end of the file");
}

#[test]
fn header_larger_than_100_mb() {
    let mut f = 200_000_000u64.to_le_bytes().to_vec();
    f.extend_from_slice(b"{}");
    bad(&f, "exceeds the 100000000-byte limit");
}

#[test]
fn header_not_json() {
    bad(&raw("{\"a\": [1, 2", 0), "not valid JSON");
}

#[test]
fn header_not_utf8() {
    let mut f = 4u64.to_le_bytes().to_vec();
    f.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
    bad(&f, "not UTF-8");
}

#[test]
fn unknown_dtype() {
    bad(
        &raw(
            r#"{"w":{"dtype":"F17","shape":[1],"data_offsets":[0,2]}}"#,
            2,
        ),
        "tensor `w` has a bad entry",
    );
}

#[test]
fn offsets_out_of_bounds() {
    bad(
        &raw(
            r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            8,
        ),
        "the file has",
    );
}

#[test]
fn overlapping_offsets() {
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    bad(&raw(h, 12), "overlap");
}

#[test]
fn holey_offsets() {
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#;
    bad(&raw(h, 20), "hole of 4 bytes after `a`");
}

#[test]
fn shape_and_offsets_disagree() {
    bad(
        &raw(
            r#"{"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}}"#,
            8,
        ),
        "need 6 bytes but data_offsets give 8",
    );
}

#[test]
fn sub_byte_elements_that_do_not_fill_a_byte() {
    bad(
        &raw(
            r#"{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#,
            2,
        ),
        "do not fill whole bytes",
    );
}

#[test]
fn metadata_must_be_strings() {
    bad(&raw(r#"{"__metadata__":{"a":1}}"#, 0), "__metadata__");
}

#[test]
fn encode_names_which_input_is_malformed() {
    let good = build(
        &[Spec {
            name: "w".into(),
            dtype: DType::F32,
            shape: vec![2],
            data: vec![0; 8],
        }],
        None,
    );
    let err = zipllm::encode(&good, b"garbage", &Default::default(), &|_| {}).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadSafetensors);
    assert!(err.to_string().contains("target:"), "{err}");
    let err = zipllm::encode(b"garbage", &good, &Default::default(), &|_| {}).unwrap_err();
    assert!(err.to_string().contains("base:"), "{err}");
}

/// A small valid pair and its delta, for the container attacks below.
fn pair() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let base_w = noise(64 * 1024, 1);
    let mut tuned_w = base_w.clone();
    for i in (0..tuned_w.len()).step_by(7) {
        tuned_w[i] ^= 1;
    }
    let base = build(
        &[Spec {
            name: "w".into(),
            dtype: DType::BF16,
            shape: vec![32 * 1024],
            data: base_w,
        }],
        None,
    );
    let tuned = build(
        &[Spec {
            name: "w".into(),
            dtype: DType::BF16,
            shape: vec![32 * 1024],
            data: tuned_w,
        }],
        None,
    );
    let delta = zipllm::encode(&base, &tuned, &Default::default(), &|_| {})
        .unwrap()
        .to_bytes()
        .unwrap();
    (base, tuned, delta)
}

#[test]
fn a_blob_declaring_a_huge_stream_is_refused_before_allocating() {
    let (base, tuned, delta) = pair();
    assert_eq!(zipllm::rebuild_in_memory(&base, &delta).unwrap(), tuned);
    let plan = zipllm::Plan::from_delta_head(&delta).unwrap();
    let blob_at = plan.blob_range(0).start as usize;
    let mut bomb = delta.clone();
    // Stream 0's declared decoded length: 4 header bytes, then codec (1) and raw length (8).
    bomb[blob_at + 5..blob_at + 13].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let err = zipllm::rebuild_in_memory(&base, &bomb).unwrap_err();
    assert_eq!(err.code(), ErrorCode::CorruptDelta, "{err}");
    assert!(
        err.to_string().contains("declares 1099511627776 bytes"),
        "{err}"
    );
}

#[test]
fn a_zstd_frame_that_expands_past_its_declared_size_is_refused() {
    let (base, _, delta) = pair();
    let plan = zipllm::Plan::from_delta_head(&delta).unwrap();
    let r = plan.blob_range(0);
    let blob = &delta[r.start as usize..r.end as usize];
    let (header, _) = BlobHeader::parse(blob).unwrap();
    // Rebuild the blob with a mask stream that is a zstd frame of 1 MiB of 0xFF: the header
    // still declares the true mask length.
    let frame = zipllm::codec::entropy::compress(&vec![0xFFu8; 1 << 20], 3).unwrap();
    let mut evil = header.clone();
    evil.streams[0] = (
        zipllm::codec::entropy::Codec::Zstd,
        header.streams[0].1,
        frame.len() as u64,
    );
    let mut bytes = Vec::new();
    evil.write(&mut bytes);
    bytes.extend_from_slice(&frame);
    let mut rest_at = header.encoded_len() + header.streams[0].2 as usize;
    bytes.extend_from_slice(&blob[rest_at..]);
    rest_at = bytes.len();
    assert!(rest_at > 0);
    // Splice it into a new delta with a consistent manifest.
    let mut m: Manifest = plan.manifest.clone();
    let grow = bytes.len() as u64 - m.blobs[0].len;
    m.blobs[0].len = bytes.len() as u64;
    for b in m.blobs.iter_mut().skip(1) {
        b.offset += grow;
    }
    m.payload_len += grow;
    let mut out = m.to_bytes().unwrap();
    out.extend_from_slice(&bytes);
    out.extend_from_slice(&delta[r.end as usize..]);
    let err = zipllm::rebuild_in_memory(&base, &out).unwrap_err();
    assert_eq!(err.code(), ErrorCode::CorruptDelta, "{err}");
}

#[test]
fn a_manifest_whose_tables_lie_is_refused() {
    let (base, _, delta) = pair();
    let plan = zipllm::Plan::from_delta_head(&delta).unwrap();
    let payload = &delta[plan.payload_offset as usize..];
    type Mutation = Box<dyn Fn(&mut Manifest)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "piece past the target",
            Box::new(|m: &mut Manifest| m.pieces[0].len += 2),
        ),
        (
            "base read past the base",
            Box::new(|m: &mut Manifest| {
                m.pieces[0].source = PieceSource::BaseAndBlob {
                    base_start: 1 << 40,
                    blob: 0,
                }
            }),
        ),
        (
            "blob that does not exist",
            Box::new(|m: &mut Manifest| m.pieces[0].source = PieceSource::Blob { blob: 99 }),
        ),
        (
            "target size",
            Box::new(|m: &mut Manifest| m.target_size += 8),
        ),
        (
            "chunk length",
            Box::new(|m: &mut Manifest| m.chunks[0].out_len -= 2),
        ),
        (
            "tensor name",
            Box::new(|m: &mut Manifest| m.tensors[0].name = "v".into()),
        ),
    ];
    for (what, mutate) in mutations {
        let mut m = plan.manifest.clone();
        mutate(&mut m);
        let mut bytes = m.to_bytes().unwrap();
        bytes.extend_from_slice(payload);
        let err = zipllm::rebuild_in_memory(&base, &bytes).unwrap_err();
        assert_eq!(err.code(), ErrorCode::CorruptDelta, "{what}: {err}");
    }
}

/// A folder holding `base.safetensors`, `tuned.safetensors` and `delta.zld` (the pair), the
/// tuned file's bytes, and a runner of the CLI in that folder.
fn cli_folder() -> (
    tempfile::TempDir,
    Vec<u8>,
    impl Fn(&[&str]) -> std::process::Output,
) {
    let dir = tempfile::tempdir().unwrap();
    let (base, tuned, delta) = pair();
    for (name, bytes) in [
        ("base.safetensors", &base),
        ("tuned.safetensors", &tuned),
        ("delta.zld", &delta),
    ] {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let at = dir.path().to_path_buf();
    let run = move |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_zipllm"))
            .args(args)
            .current_dir(&at)
            .output()
            .unwrap()
    };
    (dir, tuned, run)
}

#[test]
fn cli_exit_codes_and_no_partial_output() {
    let (dir, tuned, run) = cli_folder();
    let p = |n: &str| dir.path().join(n);
    let delta = std::fs::read(p("delta.zld")).unwrap();

    let ok = run(&[
        "decode",
        "--base",
        "base.safetensors",
        "delta.zld",
        "-o",
        "out.safetensors",
        "--json",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["sha256"], sha256_hex(&tuned));
    assert_eq!(std::fs::read(p("out.safetensors")).unwrap(), tuned);

    let wrong = run(&[
        "decode",
        "--base",
        "tuned.safetensors",
        "delta.zld",
        "-o",
        "x.safetensors",
    ]);
    assert_eq!(wrong.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong base"));
    let mut corrupt = delta.clone();
    let n = corrupt.len();
    corrupt[n - 10] ^= 0xff;
    std::fs::write(p("corrupt.zld"), &corrupt).unwrap();
    let c = run(&[
        "decode",
        "--base",
        "base.safetensors",
        "corrupt.zld",
        "-o",
        "x.safetensors",
        "--json",
    ]);
    assert_eq!(c.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
    assert_eq!(v["error"]["code"], "CORRUPT_DELTA");
    std::fs::write(p("bad.safetensors"), b"\x02\x00\x00\x00\x00\x00\x00\x00{]").unwrap();
    let b = run(&[
        "encode",
        "--base",
        "base.safetensors",
        "--target",
        "bad.safetensors",
        "-o",
        "y.zld",
    ]);
    assert_eq!(b.status.code(), Some(3));
    let v = run(&["verify", "--base", "base.safetensors", "corrupt.zld"]);
    assert_eq!(v.status.code(), Some(4));
    for leftover in ["x.safetensors", "y.zld"] {
        assert!(!p(leftover).exists(), "{leftover} left behind");
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".part")),
        "temporary files left: {names:?}"
    );

    let i = run(&["inspect", "delta.zld", "--json"]);
    assert!(i.status.success());
    let v: serde_json::Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(v["target_bytes"], tuned.len());
    assert_eq!(v["tensors"], 1);
}

#[test]
fn cli_expect_sha256_pins_the_output() {
    let (dir, tuned, run) = cli_folder();
    let p = |n: &str| dir.path().join(n);
    let sha = sha256_hex(&tuned);
    let decode = |expect: &str, out: &str, extra: &[&str]| {
        let mut args = vec![
            "decode",
            "--base",
            "base.safetensors",
            "delta.zld",
            "-o",
            out,
            "--json",
            "--expect-sha256",
            expect,
        ];
        args.extend_from_slice(extra);
        run(&args)
    };

    let ok = decode(&sha, "ok.safetensors", &[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["sha256"], sha);
    assert_eq!(v["full_hash_checked"], true);
    assert_eq!(std::fs::read(p("ok.safetensors")).unwrap(), tuned);

    let mut other = sha.clone().into_bytes();
    other[0] = if other[0] == b'0' { b'1' } else { b'0' };
    let other = String::from_utf8(other).unwrap();
    let wrong = decode(&other, "wrong.safetensors", &[]);
    assert_eq!(wrong.status.code(), Some(7));
    let v: serde_json::Value = serde_json::from_slice(&wrong.stdout).unwrap();
    assert_eq!(v["error"]["code"], "UNEXPECTED_TARGET");
    assert!(!p("wrong.safetensors").exists());

    let not_hex = decode("xyz", "bad.safetensors", &[]);
    assert_eq!(not_hex.status.code(), Some(2));
    let both = decode(&sha, "both.safetensors", &["--no-full-hash"]);
    assert_eq!(both.status.code(), Some(2));

    // Without the whole-file hash, the report says the sha256 is the delta's record.
    let quick = run(&[
        "verify",
        "--base",
        "base.safetensors",
        "delta.zld",
        "--no-full-hash",
        "--json",
    ]);
    assert!(quick.status.success());
    let v: serde_json::Value = serde_json::from_slice(&quick.stdout).unwrap();
    assert_eq!(v["full_hash_checked"], false);
}

/// The zstd decoder round-trips every shape of stream the planes make, and corrupt frames are
/// errors or bytes (the chunk checksums judge those), never a crash.
#[test]
fn corrupt_zstd_frames_are_errors_not_crashes() {
    zstd_stress::check(&[1, 3, 19], 300);
}
