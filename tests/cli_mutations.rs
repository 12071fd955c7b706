//! Thousands of mutated real deltas through the `zipllm` command line: every one must end as a
//! coded error (exit 4, 5 or 6) with no output file left, or as a verified file with the
//! original's sha256 — never a panic (exit 101), an internal error (70), a signal or a hang —
//! under a virtual-memory cap.
//!
//! The delta is real: tensors cut from the fine-tune ft-a (rebuilt from the committed delta and
//! the PyPI base) encoded against the same tensors of the base, in small pieces and chunks so
//! every table has many rows. Mutations: bit flips and byte sets anywhere, truncations,
//! insertions, deletions, and manifest fields set to edge values with the manifest checksum
//! recomputed (so they reach validation, as a hostile server's would).
#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use zipllm::codec::format::{Manifest, Preamble, PREAMBLE_LEN};
use zipllm::{EncodeOptions, Model};

/// Mutations run through the CLI.
const CASES: u64 = 3000;
/// The CLI may use this much virtual memory (`ulimit -v`), mappings and thread stacks included.
const MEMORY_CAP_KIB: u64 = 1 << 20;
/// A case that takes longer has hung.
const DEADLINE: Duration = Duration::from_secs(20);

/// A small safetensors file of the named tensors of `file`, in that order.
fn cut(file: &[u8], names: &[&str]) -> Vec<u8> {
    let model = Model::parse(file).unwrap();
    let specs: Vec<Spec> = names
        .iter()
        .map(|n| {
            let t = model.tensor(n).unwrap_or_else(|| panic!("no tensor {n}"));
            Spec {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                data: file[t.start as usize..t.end as usize].to_vec(),
            }
        })
        .collect();
    build(&specs, None)
}

/// The base and ft-a cut to a few real tensors, and their delta.
fn real_pair() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let base = std::fs::read(real_model("model.bf16.safetensors")).unwrap();
    let delta = std::fs::read(fixture("ft-a.bf16.zld")).unwrap();
    let tuned = zipllm::rebuild_in_memory(&base, &delta).unwrap();
    let names = [
        "encoder.layer.0.attention.output.LayerNorm.weight",
        "encoder.layer.0.attention.output.LayerNorm.bias",
        "encoder.layer.0.attention.self.query.bias",
        "encoder.layer.0.intermediate.dense.bias",
        "encoder.layer.0.output.dense.bias",
        "pooler.dense.bias",
        "embeddings.token_type_embeddings.weight",
        "encoder.layer.0.attention.self.key.weight",
    ];
    let (base, tuned) = (cut(&base, &names), cut(&tuned, &names));
    let options = EncodeOptions {
        piece_len: 8 << 10,
        chunk_len: 32 << 10,
        ..Default::default()
    };
    let delta = zipllm::encode(&base, &tuned, &options, &|_| {})
        .unwrap()
        .to_bytes()
        .unwrap();
    (base, tuned, delta)
}

/// An edge value for a field of `bits` bits.
fn edge(rng: &mut Rng, bits: u32, near: u64) -> u64 {
    let max = if bits == 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    };
    match rng.below(8) {
        0 => 0,
        1 => 1,
        2 => max,
        3 => max - rng.below(64),
        4 => max / 2 + 1,
        5 => near.wrapping_add(1 + rng.below(8)) & max,
        6 => near.wrapping_sub(1 + rng.below(8)) & max,
        _ => rng.next() & max,
    }
}

/// The delta with one manifest field set to an edge value, the manifest checksum recomputed.
fn field_edit(delta: &[u8], rng: &mut Rng) -> Vec<u8> {
    let end = Preamble::parse(delta).unwrap().payload_offset() as usize;
    let mut m = Manifest::parse(&delta[PREAMBLE_LEN as usize..end]).unwrap();
    let pick = |rng: &mut Rng, n: usize| rng.below(n as u64) as usize;
    match rng.below(12) {
        0 => m.target_size = edge(rng, 64, m.target_size),
        1 => m.base_size = edge(rng, 64, m.base_size),
        2 => m.base_header_len = edge(rng, 64, m.base_header_len),
        3 => m.payload_len = edge(rng, 64, m.payload_len),
        4 => {
            let i = pick(rng, m.blobs.len());
            m.blobs[i].len = edge(rng, 64, m.blobs[i].len);
        }
        5 => {
            let i = pick(rng, m.blobs.len());
            m.blobs[i].offset = edge(rng, 64, m.blobs[i].offset);
        }
        6 => {
            let i = pick(rng, m.pieces.len());
            m.pieces[i].len = edge(rng, 64, m.pieces[i].len);
        }
        7 => {
            let i = pick(rng, m.pieces.len());
            m.pieces[i].out_start = edge(rng, 64, m.pieces[i].out_start);
        }
        8 => {
            use zipllm::codec::format::PieceSource;
            let i = pick(rng, m.pieces.len());
            m.pieces[i].source = match m.pieces[i].source {
                PieceSource::Base { base_start } => PieceSource::Base {
                    base_start: edge(rng, 64, base_start),
                },
                PieceSource::BaseAndBlob { base_start, blob } => PieceSource::BaseAndBlob {
                    base_start: edge(rng, 64, base_start),
                    blob: edge(rng, 32, blob as u64) as u32,
                },
                PieceSource::Blob { blob } => PieceSource::Blob {
                    blob: edge(rng, 32, blob as u64) as u32,
                },
            };
        }
        9 => {
            let i = pick(rng, m.chunks.len());
            m.chunks[i].piece_count = edge(rng, 32, m.chunks[i].piece_count as u64) as u32;
        }
        10 => {
            let i = pick(rng, m.chunks.len());
            m.chunks[i].first_piece = edge(rng, 32, m.chunks[i].first_piece as u64) as u32;
        }
        _ => {
            let i = pick(rng, m.chunks.len());
            m.chunks[i].out_len = edge(rng, 64, m.chunks[i].out_len);
        }
    }
    let mut out = m.to_bytes().unwrap();
    out.extend_from_slice(&delta[end..]);
    out
}

/// One mutation of `delta` and its name.
fn mutate(delta: &[u8], rng: &mut Rng) -> (Vec<u8>, &'static str) {
    let mut d = delta.to_vec();
    let at = |rng: &mut Rng, len: usize| rng.below(len as u64) as usize;
    let kind = match rng.below(7) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = at(rng, d.len());
                d[i] ^= 1 << rng.below(8);
            }
            "bit flips"
        }
        1 => {
            let i = at(rng, d.len());
            d[i] = rng.next() as u8;
            "byte set"
        }
        2 => {
            d.truncate(at(rng, d.len()));
            "truncation"
        }
        3 => {
            let i = at(rng, d.len());
            let n = 1 + rng.below(64) as usize;
            d.splice(i..i, noise(n, rng.next()));
            "insertion"
        }
        4 => {
            let i = at(rng, d.len());
            let n = (1 + rng.below(64) as usize).min(d.len() - i);
            d.drain(i..i + n);
            "deletion"
        }
        _ => return (field_edit(delta, rng), "manifest field"),
    };
    (d, kind)
}

/// Runs the CLI under the memory cap; its exit code, or the reason it has none.
fn run_cli(dir: &Path, args: &[&str]) -> Result<i32, String> {
    let exe = env!("CARGO_BIN_EXE_zipllm");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {MEMORY_CAP_KIB} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().ok_or_else(|| format!("killed: {status}"));
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            return Err(format!("no answer in {DEADLINE:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn mutated_real_deltas_through_the_cli_are_coded_errors_or_verified_files() {
    let (base, tuned, delta) = real_pair();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("base.safetensors"), &base).unwrap();
    let want = sha256_hex(&tuned);
    let end = Preamble::parse(&delta).unwrap().payload_offset() as usize;
    let m = Manifest::parse(&delta[PREAMBLE_LEN as usize..end]).unwrap();
    assert!(
        m.chunks.len() >= 5 && m.blobs.len() >= 5,
        "a delta with many rows"
    );

    let mut rng = Rng::new(20261202);
    let mut outcomes = std::collections::BTreeMap::<(i32, &str), u32>::new();
    for case in 0..CASES {
        let (bad, kind) = mutate(&delta, &mut rng);
        std::fs::write(p("d.zld"), &bad).unwrap();
        // Mostly `decode`; every fifth case `verify`, which writes nothing.
        let verify = case % 5 == 4;
        let args: &[&str] = if verify {
            &["verify", "--base", "base.safetensors", "d.zld"]
        } else {
            &["decode", "--base", "base.safetensors", "d.zld", "-o", "out"]
        };
        let code = run_cli(dir.path(), args).unwrap_or_else(|e| {
            panic!("case {case} ({kind}): {e}; input kept at {:?}", keep(&bad))
        });
        match code {
            0 if !verify => {
                let out = std::fs::read(p("out")).unwrap();
                assert_eq!(sha256_hex(&out), want, "case {case} ({kind}): wrong bytes");
                std::fs::remove_file(p("out")).unwrap();
            }
            0 => {}
            4..=6 => assert!(!p("out").exists(), "case {case} ({kind}): output left"),
            other => panic!(
                "case {case} ({kind}): exit {other}; input kept at {:?}",
                keep(&bad)
            ),
        }
        *outcomes.entry((code, kind)).or_default() += 1;
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    println!("{CASES} mutated deltas, by (exit status, mutation): {outcomes:?}");
    let clean = outcomes
        .iter()
        .filter(|((c, _), _)| *c == 0)
        .map(|(_, n)| n)
        .sum::<u32>();
    assert!(clean < CASES as u32 / 2, "most mutations must be caught");
}

/// Saves a failing input for replay.
fn keep(bytes: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("zipllm-mutation-{}.zld", std::process::id()));
    let _ = std::fs::write(&path, bytes);
    path
}
