//! Hashing files as they stream past: the whole file (sha256, the hub's LFS oid, and blake3)
//! and each tensor of a safetensors file.

use wasm_bindgen::prelude::*;

use super::io::{Role, Sequential};
use super::task::Task;
use super::{js_error, to_json};
use crate::hash::FileHasher;

/// Hashes a file as it streams past: sha256 (the hub's LFS oid) and blake3.
#[wasm_bindgen(js_name = hashFile)]
pub fn hash_file(source: JsValue) -> Task {
    Task::once(hash_stream(source, FileHasher::new()))
}

/// Hashes a safetensors file tensor by tensor (blake3 of each tensor's bytes, the key the
/// encoder deduplicates on) and as a whole, streaming.
#[wasm_bindgen(js_name = hashTensors)]
pub fn hash_tensors(source: JsValue) -> Task {
    Task::once(hash_stream(source, FileHasher::with_tensors()))
}

async fn hash_stream(source: JsValue, mut hasher: FileHasher) -> Result<JsValue, JsValue> {
    let mut input = Sequential::from_js(source, Role::Model)?;
    while let Some(bytes) = input.next().await? {
        hasher.update(&bytes).map_err(|e| js_error(&e))?;
    }
    to_json(&hasher.finish().map_err(|e| js_error(&e))?)
}
