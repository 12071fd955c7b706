//! Hashing files as they stream past: the whole file (sha256, the hub's LFS oid, and blake3)
//! and each tensor of a safetensors file.

use serde::Serialize;
use sha2::Digest as _;
use wasm_bindgen::prelude::*;

use super::io::{Role, Sequential};
use super::task::Task;
use super::{js_error, to_json};
use crate::error::Error;
use crate::model::{Model, PREFIX_LEN};
use crate::rebuild::hex;

#[derive(Serialize)]
struct FileHashes {
    size: u64,
    sha256: String,
    blake3: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tensors: Option<Vec<TensorHash>>,
}

#[derive(Serialize)]
struct TensorHash {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    bytes: u64,
    blake3: String,
}

/// Hashes a file as it streams past: sha256 (the hub's LFS oid) and blake3.
#[wasm_bindgen(js_name = hashFile)]
pub fn hash_file(source: JsValue) -> Task {
    Task::once(hash_file_async(source))
}

async fn hash_file_async(source: JsValue) -> Result<JsValue, JsValue> {
    let mut input = Sequential::from_js(source, Role::Model)?;
    let mut sha = sha2::Sha256::new();
    let mut blake = crate::hash::Hasher::new();
    let mut size = 0u64;
    while let Some(bytes) = input.next().await? {
        sha.update(&bytes);
        blake.update(&bytes);
        size += bytes.len() as u64;
    }
    to_json(&FileHashes {
        size,
        sha256: hex(&sha.finalize()),
        blake3: blake.finalize().to_hex().to_string(),
        tensors: None,
    })
}

/// Hashes a safetensors file tensor by tensor (blake3 of each tensor's bytes, the key the
/// encoder deduplicates on) and as a whole, streaming.
#[wasm_bindgen(js_name = hashTensors)]
pub fn hash_tensors(source: JsValue) -> Task {
    Task::once(hash_tensors_async(source))
}

async fn hash_tensors_async(source: JsValue) -> Result<JsValue, JsValue> {
    let mut input = Sequential::from_js(source, Role::Model)?;
    let mut sha = sha2::Sha256::new();
    let mut blake = crate::hash::Hasher::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut offset = 0u64;
    let mut model: Option<Model> = None;
    let mut tensors = Vec::new();
    let mut current = 0usize;
    let mut tensor_hasher = crate::hash::Hasher::new();
    loop {
        let next = input.next().await?;
        if let Some(bytes) = &next {
            sha.update(bytes);
            blake.update(bytes);
            pending.extend_from_slice(bytes);
        }
        if model.is_none() {
            if pending.len() < PREFIX_LEN as usize && next.is_some() {
                continue;
            }
            let region = Model::header_region_len(&pending, None).map_err(|e| js_error(&e))?;
            if (pending.len() as u64) < region {
                if next.is_none() {
                    return Err(js_error(&Error::BadSafetensors {
                        what: format!(
                            "header length {} runs past the end of the file",
                            region - PREFIX_LEN
                        ),
                    }));
                }
                continue;
            }
            model = Some(
                Model::parse_header(&pending[..region as usize], None).map_err(|e| js_error(&e))?,
            );
        }
        let Some(m) = &model else { continue };
        // Hash tensor bytes as they arrive; tensors are contiguous in file order.
        let mut at = 0usize;
        while at < pending.len() {
            let pos = offset + at as u64;
            if pos < m.header_len {
                at += ((m.header_len - pos) as usize).min(pending.len() - at);
                continue;
            }
            let Some(t) = m.tensors.get(current) else {
                return Err(js_error(&Error::BadSafetensors {
                    what: "bytes after the last tensor".into(),
                }));
            };
            let take = ((t.end - pos) as usize).min(pending.len() - at);
            tensor_hasher.update(&pending[at..at + take]);
            at += take;
            if pos + take as u64 == t.end {
                tensors.push(TensorHash {
                    name: t.name.clone(),
                    dtype: t.dtype.name().into(),
                    shape: t.shape.clone(),
                    bytes: t.len(),
                    blake3: std::mem::take(&mut tensor_hasher)
                        .finalize()
                        .to_hex()
                        .to_string(),
                });
                current += 1;
            }
        }
        while let Some(t) = m.tensors.get(current).filter(|t| t.is_empty()) {
            tensors.push(TensorHash {
                name: t.name.clone(),
                dtype: t.dtype.name().into(),
                shape: t.shape.clone(),
                bytes: 0,
                blake3: blake3::hash(&[]).to_hex().to_string(),
            });
            current += 1;
        }
        offset += pending.len() as u64;
        pending.clear();
        if next.is_none() {
            break;
        }
    }
    let m = model.ok_or_else(|| {
        js_error(&Error::BadSafetensors {
            what: "the file is empty".into(),
        })
    })?;
    if offset != m.file_len || current != m.tensors.len() {
        return Err(js_error(&Error::BadSafetensors {
            what: format!(
                "the header describes {} bytes but the file has {offset}",
                m.file_len
            ),
        }));
    }
    to_json(&FileHashes {
        size: offset,
        sha256: hex(&sha.finalize()),
        blake3: blake.finalize().to_hex().to_string(),
        tensors: Some(tensors),
    })
}
