//! The hub store through its CLI, on a local folder and on a real S3 API (moto): the pipeline's
//! choices, byte-exact restores, ranges, damaged objects, gc, and ingests killed at random.
#![cfg(all(not(target_arch = "wasm32"), feature = "cli-core"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{build, sha256_hex, Rng, Spec};
use serde_json::Value;
use zipllm::DType;

fn zipllm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zipllm"));
    c.env(
        "ZIPLLM_CACHE",
        concat!(env!("CARGO_TARGET_TMPDIR"), "/zipllm-cache"),
    );
    c
}

fn run(args: &[&str], envs: &[(String, String)]) -> Output {
    let mut c = zipllm();
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok_json(args: &[&str], envs: &[(String, String)]) -> Value {
    let out = run(args, envs);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Gaussian-ish weights (sum of uniforms), scale 0.02, as f32 bits.
fn weights(n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let s: f64 = (0..4)
                .map(|_| rng.below(1 << 20) as f64 / (1 << 20) as f64)
                .sum::<f64>()
                - 2.0;
            (s * 0.035) as f32
        })
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A small BERT-like model: `layers` blocks of (1024x256 weight, 256 bias, 256 norm) plus a
/// 4096x256 embedding. `seed` draws the weights.
fn model(layers: usize, seed: u64) -> Vec<(String, Vec<u64>, Vec<f32>)> {
    let mut rng = Rng::new(seed);
    let mut t = vec![(
        "embeddings.word_embeddings.weight".to_string(),
        vec![4096, 256],
        weights(4096 * 256, &mut rng),
    )];
    for l in 0..layers {
        t.push((
            format!("encoder.layer.{l}.dense.weight"),
            vec![1024, 256],
            weights(1024 * 256, &mut rng),
        ));
        t.push((
            format!("encoder.layer.{l}.dense.bias"),
            vec![256],
            vec![0.0; 256],
        ));
        t.push((
            format!("encoder.layer.{l}.norm.weight"),
            vec![256],
            vec![1.0; 256],
        ));
    }
    t
}

/// A fine-tune as real ones look: every weight moved by a relative 1e-2-ish step (several
/// bf16 units in the last place), biases and norms nudged too.
fn fine_tune(
    base: &[(String, Vec<u64>, Vec<f32>)],
    seed: u64,
) -> Vec<(String, Vec<u64>, Vec<f32>)> {
    let mut rng = Rng::new(seed);
    base.iter()
        .map(|(n, s, v)| {
            let moved = v
                .iter()
                .map(|x| {
                    let r = (rng.below(2001) as f32 - 1000.0) / 1000.0;
                    if *x == 0.0 {
                        r * 1e-3
                    } else {
                        x * (1.0 + 0.03 * r)
                    }
                })
                .collect();
            (n.clone(), s.clone(), moved)
        })
        .collect()
}

fn write_model(path: &Path, t: &[(String, Vec<u64>, Vec<f32>)], bf16: bool) -> Vec<u8> {
    let specs: Vec<Spec> = t
        .iter()
        .map(|(n, s, v)| Spec {
            name: n.clone(),
            dtype: DType::F32,
            shape: s.clone(),
            data: f32_bytes(v),
        })
        .collect();
    let mut bytes = build(&specs, Some(r#"{"format":"pt"}"#));
    if bf16 {
        let mut out = Vec::new();
        zipllm::model::cast_f32_to_bf16(&bytes, &mut out).unwrap();
        bytes = out;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

fn write_config(dir: &Path, note: &str) {
    std::fs::write(
        dir.join("config.json"),
        format!("{{\"model_type\": \"bert\", \"hidden_size\": 256, \"note\": \"{note}\"}}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("README.md"), "# a model\n".repeat(50)).unwrap();
}

/// A zip with every member stored, as torch.save writes.
fn stored_zip(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = Vec::new();
    let mut central = Vec::new();
    for (name, data) in members {
        let off = z.len() as u32;
        let n = name.len() as u16;
        let crc = 0u32;
        z.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        z.extend_from_slice(&crc.to_le_bytes());
        z.extend_from_slice(&(data.len() as u32).to_le_bytes());
        z.extend_from_slice(&(data.len() as u32).to_le_bytes());
        z.extend_from_slice(&n.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(name.as_bytes());
        z.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&(data.len() as u32).to_le_bytes());
        central.extend_from_slice(&n.to_le_bytes());
        central.extend_from_slice(&[0u8; 12]);
        central.extend_from_slice(&off.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd = z.len() as u32;
    z.extend_from_slice(&central);
    z.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00");
    z.extend_from_slice(&(members.len() as u16).to_le_bytes());
    z.extend_from_slice(&(members.len() as u16).to_le_bytes());
    z.extend_from_slice(&(central.len() as u32).to_le_bytes());
    z.extend_from_slice(&cd.to_le_bytes());
    z.extend_from_slice(&[0, 0]);
    z
}

/// The corpus: repo id → folder, in ingest order.
struct Corpus {
    _root: tempfile::TempDir,
    repos: Vec<(String, PathBuf)>,
}

fn corpus() -> Corpus {
    corpus_of(4)
}

fn corpus_of(layers: usize) -> Corpus {
    let root = tempfile::tempdir().unwrap();
    let mut repos = Vec::new();
    let mut add = |id: &str| {
        let d = root.path().join(id);
        std::fs::create_dir_all(&d).unwrap();
        repos.push((id.to_string(), d.clone()));
        d
    };
    let base = model(layers, 1);
    let ft = fine_tune(&base, 2);
    for (id, weights, bf16, note) in [
        ("acme/base", &base, false, "base"),
        ("acme/base-bf16", &base, true, "base"),
        ("acme/ft", &ft, false, "ft"),
        ("acme/ft-bf16", &ft, true, "ft"),
        ("mirror/base", &base, false, "base"),
    ] {
        let d = add(id);
        write_model(&d.join("model.safetensors"), weights, bf16);
        write_config(&d, note);
    }
    let d = add("other/unrelated");
    let unrelated = write_model(&d.join("model.safetensors"), &model(layers, 99), false);
    write_config(&d, "unrelated");
    // The unrelated model again as a torch-style zip: its storages are the same tensors.
    let m = zipllm::Model::parse(&unrelated).unwrap();
    let storages: Vec<(String, Vec<u8>)> = m
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                format!("archive/data/{i}"),
                unrelated[t.start as usize..t.end as usize].to_vec(),
            )
        })
        .collect();
    let mut members: Vec<(&str, &[u8])> = vec![("archive/data.pkl", b"\x80\x02}q\x00.")];
    members.extend(storages.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    std::fs::write(d.join("pytorch_model.bin"), stored_zip(&members)).unwrap();
    Corpus { _root: root, repos }
}

fn ingest_all(store: &str, c: &Corpus, envs: &[(String, String)]) -> Vec<Value> {
    c.repos
        .iter()
        .map(|(id, dir)| {
            ok_json(
                &[
                    "store",
                    "ingest",
                    store,
                    id,
                    dir.to_str().unwrap(),
                    "--json",
                ],
                envs,
            )
        })
        .collect()
}

fn file_sha(dir: &Path, name: &str) -> String {
    sha256_hex(&std::fs::read(dir.join(name)).unwrap())
}

fn check_pipeline(store: &str, envs: &[(String, String)]) {
    let c = corpus();
    let reports = ingest_all(store, &c, envs);
    // Manifests read once come from the local cache: one more ingest GETs only the manifest it
    // has not seen (the last one written), where without the cache it reads them all.
    let dir0 = c.repos[0].1.to_str().unwrap();
    let again = ok_json(
        &[
            "store",
            "ingest",
            store,
            "acme/base",
            dir0,
            "--revision",
            "again",
            "--json",
        ],
        envs,
    );
    assert!(
        again["requests"]["gets"].as_u64().unwrap() <= 2,
        "{}",
        again["requests"]
    );
    let mut off = envs.to_vec();
    off.push(("ZIPLLM_CACHE".into(), "off".into()));
    let uncached = ok_json(
        &[
            "store",
            "ingest",
            store,
            "acme/base",
            dir0,
            "--revision",
            "again",
            "--json",
        ],
        &off,
    );
    assert!(
        uncached["requests"]["gets"].as_u64().unwrap() > c.repos.len() as u64,
        "{}",
        uncached["requests"]
    );
    ok_json(
        &[
            "store",
            "rm",
            store,
            "acme/base",
            "--revision",
            "again",
            "--json",
        ],
        envs,
    );
    let file = |r: &Value, p: &str| -> Value {
        r["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == p)
            .unwrap()
            .clone()
    };
    // The bf16 copy of the base costs nothing: every tensor is a cast recipe.
    let bf = file(&reports[1], "model.safetensors");
    assert_eq!(bf["tensors"]["standalone"], 0, "{bf}");
    assert_eq!(bf["tensors"]["delta"], 0, "{bf}");
    assert!(bf["tensors"]["cast"].as_u64().unwrap() >= 5, "{bf}");
    // Fine-tunes go against the right base in their own dtype; the re-upload is a duplicate.
    let show = |repo: &str| ok_json(&["store", "show", store, repo, "--json"], envs);
    let ft = show("acme/ft");
    assert_eq!(ft["repo"], "acme/ft");
    assert_eq!(ft["revision"], "main");
    let f = ft["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "model.safetensors")
        .unwrap();
    assert_eq!(f["base"]["repo"], "acme/base", "{f}");
    assert_eq!(f["base"]["path"], "model.safetensors");
    assert!(f["base"]["bit_distance"].as_f64().unwrap() > 0.0);
    for k in ["path", "size", "sha256", "stored_bytes", "base"] {
        assert!(f.get(k).is_some(), "show lacks {k}");
    }
    let ftb = show("acme/ft-bf16");
    let f = ftb["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "model.safetensors")
        .unwrap();
    assert_eq!(f["base"]["repo"], "acme/base-bf16", "{f}");
    // The bf16 copy of the fine-tune costs nothing either: casts of the fine-tune's deltas.
    let ftb = file(&reports[3], "model.safetensors");
    assert_eq!(ftb["tensors"]["standalone"], 0, "{ftb}");
    assert_eq!(ftb["tensors"]["delta"], 0, "{ftb}");
    assert!(ftb["tensors"]["cast"].as_u64().unwrap() >= 5, "{ftb}");
    assert!(ftb["stored_bytes"].as_u64().unwrap() < 4096, "{ftb}");
    let mirror = &reports[4];
    assert_eq!(file(mirror, "model.safetensors")["outcome"], "duplicate");
    // The unrelated model is stored on its own; its zip twin's storages all dedup.
    let un = show("other/unrelated");
    for f in un["files"].as_array().unwrap() {
        assert!(f["base"].is_null(), "{f}");
    }
    let zipped = file(&reports[5], "pytorch_model.bin");
    assert_eq!(zipped["format"], "zip");
    // Storages of 4 KiB and more (the embedding and the 4 dense weights) are tensors.
    assert_eq!(zipped["tensors"]["deduplicated"], 5, "{zipped}");
    assert_eq!(zipped["tensors"]["standalone"], 0, "{zipped}");
    assert!(zipped["stored_bytes"].as_u64().unwrap() < 4096, "{zipped}");
    // Every file of every repo restores byte for byte.
    let out = tempfile::tempdir().unwrap();
    for (id, dir) in &c.repos {
        let dest = out.path().join(id);
        let r = ok_json(
            &[
                "store",
                "restore",
                store,
                id,
                dest.to_str().unwrap(),
                "--json",
            ],
            envs,
        );
        for f in r["files"].as_array().unwrap() {
            let p = f["path"].as_str().unwrap();
            assert_eq!(file_sha(&dest, p), file_sha(dir, p), "{id}/{p}");
        }
        let n = std::fs::read_dir(dir).unwrap().count();
        assert_eq!(r["files"].as_array().unwrap().len(), n);
    }
    // A byte range of the fine-tune reads only some of the store.
    let whole = std::fs::read(c.repos[2].1.join("model.safetensors")).unwrap();
    let dest = out.path().join("range.bin");
    let r = ok_json(
        &[
            "store",
            "cat",
            store,
            "acme/ft",
            "model.safetensors",
            "--range",
            "5000000-5000100",
            "-o",
            dest.to_str().unwrap(),
            "--json",
        ],
        envs,
    );
    assert_eq!(std::fs::read(&dest).unwrap(), &whole[5_000_000..5_000_100]);
    let got = r["requests"]["bytes_got"].as_u64().unwrap();
    assert!(got < whole.len() as u64 / 4, "{r}");
    // The stages shrink in order, and the store holds far less than the files.
    let st = ok_json(&["store", "stats", store, "--json"], envs);
    let (raw, fd, td, comp) = (
        st["raw"].as_u64().unwrap(),
        st["file_dedup"].as_u64().unwrap(),
        st["tensor_dedup"].as_u64().unwrap(),
        st["compressed"].as_u64().unwrap(),
    );
    assert!(raw > fd && fd > td && td > comp, "{st}");
    assert!(st["stored"].as_u64().unwrap() < raw / 2, "{st}");
    assert!(!st["families"].as_array().unwrap().is_empty());
    let v = ok_json(&["store", "verify", store, "--json"], envs);
    assert_eq!(v["ok"], true, "{v}");
    let ls = ok_json(&["store", "ls", store, "--json"], envs);
    assert_eq!(ls.as_array().unwrap().len(), c.repos.len());
    // A file holding casts of deltas is never a base (a chain through it would be four deep):
    // a bf16 fine-tune of the fine-tune, nearest to its bf16 copy, goes against the bf16 base.
    let dir = tempfile::tempdir().unwrap();
    let ft2 = fine_tune(&fine_tune(&model(4, 1), 2), 3);
    write_model(&dir.path().join("model.safetensors"), &ft2, true);
    let path = dir.path().to_str().unwrap();
    ok_json(
        &["store", "ingest", store, "acme/ft2-bf16", path, "--json"],
        envs,
    );
    let f = file(&show("acme/ft2-bf16"), "model.safetensors");
    assert_eq!(f["base"]["repo"], "acme/base-bf16", "{f}");
    let dest = out.path().join("ft2");
    let to = dest.to_str().unwrap();
    ok_json(
        &["store", "restore", store, "acme/ft2-bf16", to, "--json"],
        envs,
    );
    let got = file_sha(&dest, "model.safetensors");
    assert_eq!(got, file_sha(dir.path(), "model.safetensors"));
}

#[test]
fn pipeline_on_a_local_folder() {
    let s = tempfile::tempdir().unwrap();
    check_pipeline(s.path().to_str().unwrap(), &[]);
}

/// Shards of a model: `cuts` tensor counts per shard, written as `model-0000k-of-0000n` with
/// their index.
fn write_shards(dir: &Path, t: &[(String, Vec<u64>, Vec<f32>)], cuts: &[usize]) {
    let n = cuts.len();
    let mut at = 0;
    let mut map = serde_json::Map::new();
    for (k, &c) in cuts.iter().enumerate() {
        let name = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
        write_model(&dir.join(&name), &t[at..at + c], false);
        for (tn, _, _) in &t[at..at + c] {
            map.insert(tn.clone(), Value::String(name.clone()));
        }
        at += c;
    }
    assert_eq!(at, t.len());
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    write_config(dir, "sharded");
}

#[test]
fn shards_find_their_base_however_they_are_cut() {
    // A base stored in two shards; fine-tunes as one file and as three shards cut elsewhere:
    // every tensor of every file must be a delta against the base's same-named tensor.
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let store = store.to_str().unwrap();
    let base = model(4, 1);
    let dir = |id: &str| {
        let d = root.path().join(id);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let b = dir("acme/base");
    write_shards(&b, &base, &[7, 6]);
    let one = dir("acme/ft-one-file");
    write_model(&one.join("model.safetensors"), &fine_tune(&base, 2), false);
    write_config(&one, "one");
    let three = dir("acme/ft-three-shards");
    write_shards(&three, &fine_tune(&base, 3), &[1, 5, 7]);
    for (id, d) in [
        ("acme/base", &b),
        ("acme/ft-one-file", &one),
        ("acme/ft-three-shards", &three),
    ] {
        let r = ok_json(
            &["store", "ingest", store, id, d.to_str().unwrap(), "--json"],
            &[],
        );
        for f in r["files"].as_array().unwrap() {
            if f["format"] != "safetensors" {
                continue;
            }
            let t = &f["tensors"];
            if id == "acme/base" {
                assert!(f["base"].is_null(), "{f}");
                continue;
            }
            assert_eq!(f["base"]["repo"], "acme/base", "{id} {f}");
            assert_eq!(t["standalone"], 0, "{id} {f}");
            assert!(t["delta"].as_u64().unwrap() > 0, "{id} {f}");
        }
        let out = root.path().join("out").join(id);
        ok_json(
            &[
                "store",
                "restore",
                store,
                id,
                out.to_str().unwrap(),
                "--json",
            ],
            &[],
        );
        for e in std::fs::read_dir(d).unwrap() {
            let name = e.unwrap().file_name();
            let name = name.to_str().unwrap();
            assert_eq!(file_sha(&out, name), file_sha(d, name), "{id}/{name}");
        }
    }
    // What `show` says agrees: the base of every shard, and its distance.
    let shown = ok_json(
        &["store", "show", store, "acme/ft-three-shards", "--json"],
        &[],
    );
    let shards: Vec<&Value> = shown["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["path"].as_str().unwrap().ends_with(".safetensors"))
        .collect();
    assert_eq!(shards.len(), 3);
    for f in shards {
        assert_eq!(f["base"]["repo"], "acme/base", "{f}");
        assert!(f["base"]["bit_distance"].as_f64().unwrap() > 0.0, "{f}");
    }
}

#[test]
fn parts_are_kept_decoded_only_where_they_are_met_again() {
    use zipllm::store::{restore::restore, Store};
    let c = corpus();
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("store");
    let at = at.to_str().unwrap();
    ingest_all(at, &c, &[]);
    let out = dir.path().join("out");
    let pack_bytes = |s: &Store, repo: &str| {
        let before = s.objects().requests();
        let r = restore(s, repo, "main", &out.join(repo), None).unwrap();
        assert!(!r.files.is_empty());
        s.objects().requests().since(&before).bytes_got
    };
    // A one-shot restore of a fine-tune keeps nothing; one of a model beside its torch-zip twin
    // (the same tensors twice) keeps what the second file needs again.
    let one_shot = Store::open(at).unwrap();
    pack_bytes(&one_shot, "acme/ft");
    assert_eq!(one_shot.decoded().kept(), 0);
    let twin = Store::open(at).unwrap();
    pack_bytes(&twin, "other/unrelated");
    assert!(twin.decoded().kept() > 0);
    // A session keeps everything: the fine-tune again reads only its manifest, and its bf16
    // copy finds the base's parts (its cast source) decoded.
    let mut session = Store::open(at).unwrap();
    session.keep_decoded(256 << 20);
    let first = pack_bytes(&session, "acme/ft");
    let again = pack_bytes(&session, "acme/ft");
    let manifest = std::fs::metadata(Path::new(at).join("repos/acme/ft/main.json"))
        .unwrap()
        .len();
    assert!(first > 1 << 20, "{first}");
    assert!(again <= manifest, "{again} > {manifest}");
    let fresh = Store::open(at).unwrap();
    let cold_bf16 = pack_bytes(&fresh, "acme/ft-bf16");
    let warm_bf16 = pack_bytes(&session, "acme/ft-bf16");
    assert!(warm_bf16 * 2 < cold_bf16, "{warm_bf16} vs {cold_bf16}");
    // Every restored file is the original, byte for byte.
    for (id, d) in &c.repos {
        if !out.join(id).exists() {
            continue;
        }
        for e in std::fs::read_dir(d).unwrap() {
            let name = e.unwrap().file_name();
            let name = name.to_str().unwrap();
            assert_eq!(
                file_sha(&out.join(id), name),
                file_sha(d, name),
                "{id}/{name}"
            );
        }
    }
}

fn packs_of(store: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir(store.join("packs")) else {
        return v;
    };
    for d in rd {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "pack") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

#[test]
fn damaged_objects_are_named_with_the_repos_needing_them() {
    let s = tempfile::tempdir().unwrap();
    let store = s.path().to_str().unwrap();
    let c = corpus();
    ingest_all(store, &c, &[]);
    // Flip one byte in the middle of a pack holding the base's tensors.
    let m: Value =
        serde_json::from_slice(&std::fs::read(s.path().join("repos/acme/base/main.json")).unwrap())
            .unwrap();
    let pack = m["tensors"]
        .as_object()
        .unwrap()
        .values()
        .find_map(|r| r["parts"][0]["pack"].as_str())
        .unwrap()
        .to_string();
    let victim = packs_of(s.path())
        .into_iter()
        .find(|p| p.to_str().unwrap().contains(&pack))
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    let out = run(&["store", "verify", store, "--json"], &[]);
    assert_eq!(out.status.code(), Some(8));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = v["problems"].as_array().unwrap();
    let name = victim.file_name().unwrap().to_str().unwrap();
    let p = problems
        .iter()
        .find(|p| p["object"].as_str().unwrap().ends_with(name))
        .unwrap();
    assert!(p["problem"].as_str().unwrap().starts_with("corrupt"), "{p}");
    let needers: Vec<&str> = p["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(needers.contains(&"acme/base@main"), "{needers:?}");
    // Restoring a repo that needs it fails with the object named, and writes nothing.
    let dest = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "store",
            "restore",
            store,
            "acme/ft",
            dest.path().to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["error"]["code"], "STORE_CORRUPT");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("acme/ft@main"),
        "{e}"
    );
    assert!(!dest.path().join("model.safetensors").exists());
    // A missing pack is "missing"; a truncated one "truncated".
    std::fs::write(&victim, &bytes[..mid]).unwrap();
    let v: Value =
        serde_json::from_slice(&run(&["store", "verify", store, "--json"], &[]).stdout).unwrap();
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["problem"].as_str().unwrap().starts_with("truncated")),
        "{v}"
    );
    std::fs::remove_file(&victim).unwrap();
    let v: Value =
        serde_json::from_slice(&run(&["store", "verify", store, "--json"], &[]).stdout).unwrap();
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["problem"] == "missing"),
        "{v}"
    );
    // A manifest that is not JSON is reported, and gc refuses to guess.
    std::fs::write(s.path().join("repos/acme/ft/main.json"), b"{not json").unwrap();
    let v: Value =
        serde_json::from_slice(&run(&["store", "verify", store, "--json"], &[]).stdout).unwrap();
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["object"] == "repos/acme/ft/main.json"),
        "{v}"
    );
    let out = run(&["store", "gc", store, "--grace", "0s"], &[]);
    assert!(!out.status.success());
}

#[test]
fn malformed_models_are_refused_and_nothing_is_committed() {
    let s = tempfile::tempdir().unwrap();
    let store = s.path().to_str().unwrap();
    let d = tempfile::tempdir().unwrap();
    write_config(d.path(), "x");
    let mut bytes = write_model(&d.path().join("model.safetensors"), &model(1, 5), false);
    bytes.truncate(bytes.len() - 10);
    std::fs::write(d.path().join("model.safetensors"), &bytes).unwrap();
    let out = run(
        &[
            "store",
            "ingest",
            store,
            "acme/bad",
            d.path().to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(3));
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("model.safetensors"),
        "{e}"
    );
    let ls = ok_json(&["store", "ls", store, "--json"], &[]);
    assert!(ls.as_array().unwrap().is_empty());
    let out = run(&["store", "show", store, "acme/bad", "--json"], &[]);
    assert_eq!(out.status.code(), Some(9));
    for bad in [
        ["store", "ingest", store, "no-slash", "."],
        ["store", "ingest", store, "a/../b", "."],
    ] {
        assert_eq!(run(&bad, &[]).status.code(), Some(2));
    }
}

#[test]
fn rm_then_gc_reclaims_exactly_the_unreferenced_packs() {
    let s = tempfile::tempdir().unwrap();
    let store = s.path().to_str().unwrap();
    let c = corpus();
    ingest_all(store, &c, &[]);
    let before = packs_of(s.path()).len();
    // A young orphan survives the grace period.
    let g = ok_json(&["store", "gc", store, "--json"], &[]);
    assert_eq!(g["deleted"], 0);
    ok_json(&["store", "rm", store, "other/unrelated", "--json"], &[]);
    let g = ok_json(&["store", "gc", store, "--json"], &[]);
    assert_eq!(
        g["deleted"], 0,
        "the grace period protects fresh packs: {g}"
    );
    assert!(g["kept_young"].as_u64().unwrap() > 0, "{g}");
    let g = ok_json(&["store", "gc", store, "--grace", "0s", "--json"], &[]);
    assert!(g["deleted"].as_u64().unwrap() > 0, "{g}");
    assert!(packs_of(s.path()).len() < before);
    let v = ok_json(&["store", "verify", store, "--json"], &[]);
    assert_eq!(v["ok"], true, "{v}");
    // rm of the fine-tune keeps its base; rm of a revision that is not there is NOT_FOUND.
    ok_json(
        &[
            "store",
            "rm",
            store,
            "acme/ft",
            "--revision",
            "main",
            "--json",
        ],
        &[],
    );
    ok_json(&["store", "gc", store, "--grace", "0s", "--json"], &[]);
    let out = tempfile::tempdir().unwrap();
    ok_json(
        &[
            "store",
            "restore",
            store,
            "acme/ft-bf16",
            out.path().to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(
        file_sha(out.path(), "model.safetensors"),
        file_sha(&c.repos[3].1, "model.safetensors")
    );
    assert_eq!(
        run(&["store", "rm", store, "acme/ft", "--json"], &[])
            .status
            .code(),
        Some(9)
    );
}

/// Kills ingests at random moments; after each kill the store verifies, every committed
/// revision restores byte-exact, and a rerun completes. Then gc reclaims the orphans.
#[test]
fn ingests_killed_at_random_leave_a_sound_store() {
    let s = tempfile::tempdir().unwrap();
    let store = s.path().to_str().unwrap();
    let c = corpus_of(24);
    // Commit the bases first so the kills land in delta encoding too.
    for (id, dir) in &c.repos[..2] {
        ok_json(
            &[
                "store",
                "ingest",
                store,
                id,
                dir.to_str().unwrap(),
                "--json",
            ],
            &[],
        );
    }
    let mut rng = Rng::new(7);
    let mut kills = 0;
    for round in 0..12 {
        let (id, dir) = &c.repos[2 + round % 4];
        let mut child = zipllm()
            .args([
                "store",
                "ingest",
                store,
                id,
                dir.to_str().unwrap(),
                "--revision",
                &format!("r{round}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5 + rng.below(150)));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill(); // SIGKILL on unix
        let _ = child.wait();
        let v = ok_json(&["store", "verify", store, "--json"], &[]);
        assert_eq!(v["ok"], true, "round {round}: {v}");
    }
    assert!(kills >= 6, "only {kills} ingests were killed mid-way");
    // Reruns complete and every revision restores.
    for (id, dir) in &c.repos[2..] {
        ok_json(
            &[
                "store",
                "ingest",
                store,
                id,
                dir.to_str().unwrap(),
                "--json",
            ],
            &[],
        );
    }
    let out = tempfile::tempdir().unwrap();
    for r in ok_json(&["store", "ls", store, "--json"], &[])
        .as_array()
        .unwrap()
    {
        let (id, rev) = (r["repo"].as_str().unwrap(), r["revision"].as_str().unwrap());
        let dest = out.path().join(id).join(rev);
        ok_json(
            &[
                "store",
                "restore",
                store,
                id,
                dest.to_str().unwrap(),
                "--revision",
                rev,
                "--json",
            ],
            &[],
        );
        let dir = &c.repos.iter().find(|(i, _)| i == id).unwrap().1;
        assert_eq!(
            file_sha(&dest, "model.safetensors"),
            file_sha(dir, "model.safetensors"),
            "{id}@{rev}"
        );
    }
    let g = ok_json(&["store", "gc", store, "--grace", "0s", "--json"], &[]);
    let v = ok_json(&["store", "verify", store, "--json"], &[]);
    assert_eq!(v["ok"], true, "after gc {g}: {v}");
    // Only the staged leftovers of killed writes can remain besides reachable packs.
    assert_eq!(
        packs_of(s.path()).len() as u64,
        g["reachable"].as_u64().unwrap(),
        "{g}"
    );
}

/// A moto S3 server for the duration of a test (scripts/setup-moto.sh installs moto).
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Moto {
    let python = std::env::var("ZIPLLM_MOTO_PYTHON").unwrap_or_else(|_| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/venv/bin/python");
        if venv.exists() {
            venv.to_string_lossy().into_owned()
        } else {
            "python3".into()
        }
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/moto_server.py");
    let mut child = Command::new(&python)
        .arg(script)
        .arg("zipllm-test")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting moto with {python}: {e} (run scripts/setup-moto.sh)"));
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("moto did not start: `{line}` (run scripts/setup-moto.sh)"));
    Moto { child, port }
}

fn s3_env(port: u16) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[test]
fn pipeline_on_s3_with_concurrent_ingests() {
    let m = moto();
    let env = s3_env(m.port);
    check_pipeline("s3://zipllm-test/hub", &env);
    // Two ingests at once into one bucket, sharing the base: both commit, the store verifies.
    let c = corpus();
    let store = "s3://zipllm-test/concurrent";
    ok_json(
        &[
            "store",
            "ingest",
            store,
            "acme/base",
            c.repos[0].1.to_str().unwrap(),
            "--json",
        ],
        &env,
    );
    let spawn = |id: &str, dir: &Path| {
        let mut cmd = zipllm();
        cmd.args([
            "store",
            "ingest",
            store,
            id,
            dir.to_str().unwrap(),
            "--json",
        ]);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.stdout(std::process::Stdio::piped()).spawn().unwrap()
    };
    let a = spawn("acme/ft", &c.repos[2].1);
    let b = spawn("acme/ft-again", &c.repos[2].1);
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
    }
    let v = ok_json(&["store", "verify", store, "--json"], &env);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["manifests"], 3);
    let out = tempfile::tempdir().unwrap();
    ok_json(
        &[
            "store",
            "restore",
            store,
            "acme/ft-again",
            out.path().to_str().unwrap(),
            "--json",
        ],
        &env,
    );
    assert_eq!(
        file_sha(out.path(), "model.safetensors"),
        file_sha(&c.repos[2].1, "model.safetensors")
    );
}
