//! What is inside a delta: sizes before and after, by tensor kind, dtype and method.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::codec::blob::Method;
use crate::codec::format::{TensorKind, VERSION};
use crate::codec::rebuild::{hex, Plan};
use crate::codec::transform::{Layout, Transform};
use crate::error::{Error, Result};

/// Bytes before (in the target) and after (in the delta's payload).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Sizes {
    /// How many tensors (or blobs, for methods).
    pub count: u64,
    /// Bytes in the target.
    pub before: u64,
    /// Payload bytes in the delta.
    pub after: u64,
    /// `after / before` (0 when `before` is 0).
    pub ratio: f64,
}

impl Sizes {
    fn add(&mut self, before: u64, after: u64) {
        self.count += 1;
        self.before += before;
        self.after += after;
        self.ratio = if self.before == 0 {
            0.0
        } else {
            self.after as f64 / self.before as f64
        };
    }
}

/// A delta's contents.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Format version.
    pub format_version: u32,
    /// Length of the delta file.
    pub delta_bytes: u64,
    /// Length of the rebuilt file.
    pub target_bytes: u64,
    /// `delta_bytes / target_bytes`.
    pub ratio: f64,
    /// sha256 of the rebuilt file (the hub's LFS oid).
    pub target_sha256: String,
    /// blake3 of the rebuilt file.
    pub target_blake3: String,
    /// Length of the base the delta needs.
    pub base_bytes: u64,
    /// blake3 of that base's header region.
    pub base_header_blake3: String,
    /// Header bytes stored verbatim.
    pub header_bytes: u64,
    /// Tensors, pieces, blobs and chunks.
    pub tensors: usize,
    /// Number of pieces.
    pub pieces: usize,
    /// Number of blobs.
    pub blobs: usize,
    /// Number of independently decodable chunks.
    pub chunks: usize,
    /// Sizes by tensor kind (`same-as-base`, `delta`, `standalone`, `duplicate`).
    pub by_kind: BTreeMap<String, Sizes>,
    /// Sizes by dtype.
    pub by_dtype: BTreeMap<String, Sizes>,
    /// Blob bytes by method (`transform+layout`): `before` is the pieces' bytes.
    pub by_method: BTreeMap<String, Sizes>,
}

/// The method of a blob from its first two bytes.
fn method_name(blob: &[u8]) -> Result<String> {
    let (Some(&t), Some(&l)) = (blob.first(), blob.get(1)) else {
        return Err(Error::corrupt("a blob is shorter than its header"));
    };
    let transform = Transform::from_code(t).ok_or_else(|| Error::corrupt("unknown transform"))?;
    let layout = Layout::from_code(l).ok_or_else(|| Error::corrupt("unknown layout"))?;
    Ok(Method::new(transform, layout).name())
}

/// Builds the report; `blob(i)` gives blob `i`'s bytes (only its first two bytes are read).
pub fn report<'a>(plan: &Plan, blob: impl Fn(u32) -> Option<&'a [u8]>) -> Result<Report> {
    let m = &plan.manifest;
    let mut by_kind: BTreeMap<String, Sizes> = BTreeMap::new();
    let mut by_dtype: BTreeMap<String, Sizes> = BTreeMap::new();
    let mut by_method: BTreeMap<String, Sizes> = BTreeMap::new();
    let mut seen = vec![false; m.blobs.len()];
    let mut p = 0usize;
    for t in &m.tensors {
        let mut after = 0u64;
        while p < m.pieces.len() && m.pieces[p].out_start < t.out.end {
            let piece = m.pieces[p];
            if let Some(b) = piece.source.blob() {
                if !std::mem::replace(&mut seen[b as usize], true) {
                    let len = m.blobs[b as usize].len;
                    after += len;
                    if let Some(bytes) = blob(b) {
                        by_method
                            .entry(method_name(bytes)?)
                            .or_default()
                            .add(piece.len, len);
                    }
                }
            }
            p += 1;
        }
        let before = t.out.end - t.out.start;
        by_kind
            .entry(t.kind.name().to_string())
            .or_default()
            .add(before, after);
        by_dtype
            .entry(t.dtype.name().to_string())
            .or_default()
            .add(before, after);
    }
    for kind in [
        TensorKind::SameAsBase,
        TensorKind::Delta,
        TensorKind::Standalone,
        TensorKind::Duplicate,
    ] {
        by_kind.entry(kind.name().to_string()).or_default();
    }
    let delta_bytes = plan.delta_len();
    Ok(Report {
        format_version: VERSION,
        delta_bytes,
        target_bytes: m.target_size,
        ratio: if m.target_size == 0 {
            0.0
        } else {
            delta_bytes as f64 / m.target_size as f64
        },
        target_sha256: hex(&m.target_sha256),
        target_blake3: hex(&m.target_blake3),
        base_bytes: m.base_size,
        base_header_blake3: hex(&m.base_header_blake3),
        header_bytes: m.header.len() as u64,
        tensors: m.tensors.len(),
        pieces: m.pieces.len(),
        blobs: m.blobs.len(),
        chunks: m.chunks.len(),
        by_kind,
        by_dtype,
        by_method,
    })
}
