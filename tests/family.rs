//! Family matching on real data: the real fine-tune ft-a (fp32 through its committed
//! fingerprint, bf16 rebuilt from the committed delta) against the PyPI base, a fresh random
//! initialization of the same BERT config, a second fine-tune and a bf16/fp32 mix.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use zipllm::family::{self, Fingerprint, SamplePlan};
use zipllm::native::{self, RebuildOptions};
use zipllm::{DType, Model};

/// A fresh random initialization of the same config, as `BertModel(config)` would make it:
/// weights ~ N(0, 0.02), biases 0, LayerNorm weights 1; other dtypes copied.
fn random_init(base: &[u8], seed: u64) -> Vec<u8> {
    let m = Model::parse(base).unwrap();
    let mut out = base.to_vec();
    let mut state = seed | 1;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    for t in &m.tensors {
        let bytes = &mut out[t.start as usize..t.end as usize];
        let value = |u1: f64, u2: f64| -> f32 {
            if t.name.contains("LayerNorm.weight") {
                1.0
            } else if t.name.ends_with("bias") {
                0.0
            } else {
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * 0.02) as f32
            }
        };
        match t.dtype {
            DType::F32 => {
                for w in bytes.chunks_exact_mut(4) {
                    w.copy_from_slice(&value(uniform(), uniform()).to_le_bytes());
                }
            }
            DType::BF16 => {
                for w in bytes.chunks_exact_mut(2) {
                    let bits =
                        zipllm::model::f32_to_bf16_bits(value(uniform(), uniform()).to_bits());
                    w.copy_from_slice(&bits.to_le_bytes());
                }
            }
            _ => {}
        }
    }
    out
}

/// A second, synthetic fine-tune: a third of the weights moved by one unit in the last place.
fn nudge(model: &[u8], seed: u64) -> Vec<u8> {
    let m = Model::parse(model).unwrap();
    let mut out = model.to_vec();
    let noise = noise(model.len(), seed);
    for t in m.tensors.iter().filter(|t| t.dtype == DType::BF16) {
        for (k, w) in out[t.start as usize..t.end as usize]
            .chunks_exact_mut(2)
            .enumerate()
        {
            let r = noise[t.start as usize + 2 * k];
            if r < 85 {
                let u = u16::from_le_bytes([w[0], w[1]]).wrapping_add(if r & 1 == 0 {
                    1
                } else {
                    u16::MAX
                });
                w.copy_from_slice(&u.to_le_bytes());
            }
        }
    }
    out
}

struct World {
    dir: tempfile::TempDir,
    ft_a_bf16: PathBuf,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let ft_a_bf16 = dir.path().join("ft-a.bf16.safetensors");
        native::rebuild_to_file(
            &real_model("model.bf16.safetensors"),
            &fixture("ft-a.bf16.zld"),
            &ft_a_bf16,
            RebuildOptions::default(),
            &|_| {},
        )
        .unwrap();
        World { dir, ft_a_bf16 }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

fn verdict(target: &Path, candidate: &Path) -> family::Verdict {
    let fp = native::fingerprint_file(target, 2 << 20, 0.01, false).unwrap();
    native::compare_file(&candidate.display().to_string(), &fp, candidate).unwrap()
}

#[test]
fn ft_a_bf16_matches_its_base_and_not_a_random_init() {
    let w = World::new();
    let base = real_model("model.bf16.safetensors");
    let v = verdict(&w.ft_a_bf16, &base);
    assert_eq!(v.verdict, "related", "{v:?}");
    let d = v.normalized_distance.unwrap();
    assert!(d < 0.1 && d + v.error_bound < family::THRESHOLD, "{v:?}");
    assert!(v.confidence > 0.999);

    let random = w.write(
        "random.bf16.safetensors",
        &random_init(&std::fs::read(&base).unwrap(), 7),
    );
    let v = verdict(&w.ft_a_bf16, &random);
    assert_eq!(v.verdict, "unrelated", "{v:?}");
    assert!(v.normalized_distance.unwrap() > 0.33, "{v:?}");
    assert_eq!(v.overlap, 1.0);
}

#[test]
fn ft_a_fp32_fingerprint_matches_the_pypi_base() {
    let bytes = std::fs::read(fixture("ft-a.fp32.fingerprint")).unwrap();
    let fp = Fingerprint::from_bytes(&bytes).unwrap();
    assert!(fp.bytes_read <= fp.file_len / 100 + 1 && fp.bytes_read <= 2 << 20);
    let base = real_model("model.safetensors");
    let v = native::compare_file("base", &fp, &base).unwrap();
    assert_eq!(v.verdict, "related", "{v:?}");
    assert!(
        // F32 is compared on its upper 16 bits: ft-a moves about 1.3 of them per element.
        (0.03..0.15).contains(&v.normalized_distance.unwrap()),
        "{v:?}"
    );
    // Against a random initialization of the same config: unrelated.
    let w = tempfile::tempdir().unwrap();
    let random = w.path().join("random.safetensors");
    std::fs::write(&random, random_init(&std::fs::read(&base).unwrap(), 11)).unwrap();
    let v = native::compare_file("random", &fp, &random).unwrap();
    assert_eq!(v.verdict, "unrelated", "{v:?}");
    assert!(v.normalized_distance.unwrap() > 0.33, "{v:?}");
    // And the bf16 base is reported as a dtype mismatch, not as unrelated.
    let v = native::compare_file("bf16", &fp, &real_model("model.bf16.safetensors")).unwrap();
    assert_eq!(v.verdict, "incompatible");
    assert!(v.reason.contains("dtype mismatch"), "{}", v.reason);
}

#[test]
fn two_fine_tunes_of_one_base_are_close_and_dtypes_must_agree() {
    let w = World::new();
    let base = std::fs::read(real_model("model.bf16.safetensors")).unwrap();
    let ft_b = w.write("ft-b.bf16.safetensors", &nudge(&base, 3));
    let ab = verdict(&w.ft_a_bf16, &ft_b);
    assert_eq!(ab.verdict, "related", "{ab:?}");
    assert!(ab.normalized_distance.unwrap() < 0.15, "{ab:?}");
    // bf16 fine-tune against the fp32 base: a dtype mismatch, not "unrelated".
    let v = verdict(&w.ft_a_bf16, &real_model("model.safetensors"));
    assert_eq!(v.verdict, "incompatible");
    assert!(
        v.reason
            .contains("dtype mismatch: the target stores BF16 where the candidate stores F32"),
        "{}",
        v.reason
    );
    assert_eq!(v.bit_distance, None);
}

#[test]
fn renamed_prefixes_still_line_up_and_other_architectures_do_not() {
    let w = World::new();
    let base = std::fs::read(real_model("model.bf16.safetensors")).unwrap();
    let m = Model::parse(&base).unwrap();
    // The same weights saved by a BertForSequenceClassification: every name under `bert.`.
    let specs: Vec<Spec> = m
        .tensors
        .iter()
        .map(|t| Spec {
            name: format!("bert.{}", t.name),
            dtype: t.dtype,
            shape: t.shape.clone(),
            data: base[t.start as usize..t.end as usize].to_vec(),
        })
        .collect();
    let renamed = w.write("renamed.safetensors", &build(&specs, None));
    let v = verdict(&w.ft_a_bf16, &renamed);
    assert_eq!(v.verdict, "related", "{v:?}");
    assert_eq!(v.overlap, 1.0);
    // Half the layers missing: a different architecture.
    let half: Vec<Spec> = specs
        .into_iter()
        .filter(|s| {
            !s.name.contains("layer.3")
                && !s.name.contains("layer.4")
                && !s.name.contains("layer.5")
        })
        .collect();
    let small = w.write("small.safetensors", &build(&half, None));
    let v = verdict(&w.ft_a_bf16, &small);
    assert_eq!(v.verdict, "incompatible");
    assert!(v.reason.contains("different architecture"), "{}", v.reason);
}

#[test]
fn sampled_estimate_agrees_with_exact_mode() {
    let w = World::new();
    let base = real_model("model.bf16.safetensors");
    let sampled = verdict(&w.ft_a_bf16, &base);
    let fp = native::fingerprint_file(&w.ft_a_bf16, 0, 0.0, true).unwrap();
    let exact = native::compare_file("base", &fp, &base).unwrap();
    assert_eq!(exact.error_bound, 0.0);
    let (s, e) = (
        sampled.normalized_distance.unwrap(),
        exact.normalized_distance.unwrap(),
    );
    assert!(
        (s - e).abs() <= sampled.error_bound.max(0.005),
        "sampled {s} ± {} vs exact {e}",
        sampled.error_bound
    );
}

#[test]
fn sample_positions_depend_only_on_the_tensor_table() {
    let base = std::fs::read(real_model("model.bf16.safetensors")).unwrap();
    let tuned = nudge(&base, 5);
    let a = SamplePlan::with_budget(&Model::parse(&base).unwrap(), 2 << 20, 0.01);
    let b = SamplePlan::with_budget(&Model::parse(&tuned).unwrap(), 2 << 20, 0.01);
    assert_eq!(a.blocks, b.blocks);
    assert_eq!(a.ranges, b.ranges);
    // With room for the small tensors, adjacent ones are read in one range.
    let wide = SamplePlan::new(&Model::parse(&base).unwrap(), 0.05);
    assert!(
        wide.ranges.len() < wide.blocks.len(),
        "adjacent blocks are coalesced"
    );
}

#[test]
fn fingerprinting_a_1_gb_file_reads_at_most_2_mib() {
    // A 1 GiB model (sparse file on disk: only the header is written).
    let dir = tempfile::tempdir().unwrap();
    let mut specs = Vec::new();
    for i in 0..64 {
        specs.push((format!("layers.{i}.weight"), 8192u64, 1024u64));
    }
    let mut json = String::from("{");
    let mut offset = 0u64;
    for (k, (name, a, b)) in specs.iter().enumerate() {
        if k > 0 {
            json.push(',');
        }
        let len = a * b * 2;
        json.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"BF16\",\"shape\":[{a},{b}],\"data_offsets\":[{offset},{}]}}",
            offset + len
        ));
        offset += len;
    }
    json.push('}');
    let path = dir.path().join("big.safetensors");
    let f = std::fs::File::create(&path).unwrap();
    use std::io::Write;
    (&f).write_all(&(json.len() as u64).to_le_bytes()).unwrap();
    (&f).write_all(json.as_bytes()).unwrap();
    f.set_len(8 + json.len() as u64 + offset).unwrap();
    assert!(offset >= 1 << 30);
    let fp = native::fingerprint_file(&path, 2 << 20, 0.01, false).unwrap();
    assert!(fp.bytes_read <= 2 << 20, "read {}", fp.bytes_read);
    assert!(fp.samples.len() >= 64, "every tensor sampled");
}

#[test]
fn cli_match_json_and_encode_picks_the_base() {
    let w = World::new();
    let exe = env!("CARGO_BIN_EXE_zipllm");
    let bases = w.dir.path().join("bases");
    std::fs::create_dir(&bases).unwrap();
    let base = std::fs::read(real_model("model.bf16.safetensors")).unwrap();
    std::fs::write(bases.join("a-random.safetensors"), random_init(&base, 1)).unwrap();
    std::fs::write(bases.join("b-minilm.bf16.safetensors"), &base).unwrap();
    std::fs::copy(
        real_model("model.safetensors"),
        bases.join("c-minilm.fp32.safetensors"),
    )
    .unwrap();
    let out = std::process::Command::new(exe)
        .args(["match", "--json", "--target"])
        .arg(&w.ft_a_bf16)
        .arg(&bases)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list[0]["candidate"]
        .as_str()
        .unwrap()
        .ends_with("b-minilm.bf16.safetensors"));
    assert_eq!(list[0]["verdict"], "related");
    assert!(list[0]["bit_distance"].as_f64().unwrap() < 2.0);
    let verdicts: Vec<&str> = list
        .iter()
        .map(|v| v["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["related", "unrelated", "incompatible"]);

    let delta = w.dir.path().join("ft-a.zld");
    let out = std::process::Command::new(exe)
        .args(["encode", "--base"])
        .arg(&bases)
        .arg("--target")
        .arg(&w.ft_a_bf16)
        .arg("-o")
        .arg(&delta)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("picked base") && said.contains("b-minilm.bf16.safetensors"),
        "{said}"
    );
    let rebuilt = zipllm::rebuild_in_memory(&base, &std::fs::read(&delta).unwrap()).unwrap();
    assert_eq!(sha256_hex(&rebuilt), FT_A_BF16_SHA256);
}
