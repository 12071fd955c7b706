//! The store's objects and manifests: key names, the manifest schema and its checks. Sans-I/O.
//!
//! docs/STORE.md is the specification; this module is its one implementation. In short, under
//! the store's prefix:
//!
//! * `packs/<h2>/<blake3>.pack` — immutable, content-addressed (`<blake3>` is the BLAKE3 of the
//!   whole object), the concatenation of encoded *parts*; nothing else is in a pack.
//! * `repos/<org>/<name>/<revision>.json` — one manifest per repo revision, the commit point:
//!   written last, after every pack it references, and self-contained (it carries the record of
//!   every tensor its files need, bases and cast sources included).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: &str = "zipllm-store/1";

/// Raw bytes per part of a tensor (the last part of a tensor may be shorter). A range read
/// touches only the parts it overlaps; 8 MiB keeps compression within 0.2% of whole tensors.
pub const PART_LEN: u64 = 8 << 20;

/// A pack is sealed once it holds this many bytes (the last pack of an ingest is smaller).
pub const PACK_TARGET: u64 = 64 << 20;

/// Largest manifest a reader accepts (a 2 TB model with 8 MiB parts fits in a few tens of MB).
pub const MAX_MANIFEST_LEN: u64 = 256 << 20;

/// Deepest chain of records a tensor may need: a delta, against a cast, of a raw tensor; or a
/// cast of a delta against a raw tensor.
pub const MAX_DEPTH: usize = 3;

/// The key of a pack.
pub fn pack_key(hash: &str) -> String {
    format!("packs/{}/{hash}.pack", &hash[..2.min(hash.len())])
}

/// The key of a repo revision's manifest.
pub fn manifest_key(repo: &str, revision: &str) -> String {
    format!("repos/{repo}/{}.json", escape_revision(revision))
}

/// Percent-encodes every byte of a revision outside `[A-Za-z0-9._-]` (so `refs/pr/1` is one
/// path component: `refs%2Fpr%2F1`).
pub fn escape_revision(revision: &str) -> String {
    let mut out = String::with_capacity(revision.len());
    for b in revision.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`escape_revision`].
pub fn unescape_revision(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = escaped.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses a manifest key back into (repo, revision).
pub fn parse_manifest_key(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix("repos/")?.strip_suffix(".json")?;
    let (repo, rev) = rest.rsplit_once('/')?;
    check_repo_id(repo).ok()?;
    Some((repo.to_string(), unescape_revision(rev)?))
}

/// Checks a repo id: `org/name`, each part of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn check_repo_id(repo: &str) -> Result<()> {
    let ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.len() <= 96
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    match repo.split_once('/') {
        Some((org, name)) if ok(org) && ok(name) => Ok(()),
        _ => Err(Error::invalid(format!(
            "repo id `{repo}` is not of the form org/name (letters, digits, `.`, `_`, `-`)"
        ))),
    }
}

/// Checks a revision name: 1 to 255 bytes, no control characters.
pub fn check_revision(revision: &str) -> Result<()> {
    if revision.is_empty() || revision.len() > 255 || revision.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "revision `{revision}` is not a valid name"
        )));
    }
    Ok(())
}

/// Checks a file path inside a repo: relative, `/`-separated, no empty, `.` or `..` component.
pub fn check_file_path(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.len() > 1024
        || path.starts_with('/')
        || path.contains('\\')
        || path.chars().any(char::is_control)
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(Error::invalid(format!(
            "`{path}` is not a safe relative file path"
        )));
    }
    Ok(())
}

/// One encoded part in a pack: the bytes `offset..offset + len` of pack `pack`, a blob
/// (see docs/FORMAT.md, "blobs") that decodes to `raw_len` bytes whose BLAKE3 is `blake3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Part {
    /// The pack's hash (hex).
    pub pack: String,
    /// Offset of the blob in the pack.
    pub offset: u64,
    /// Stored length.
    pub len: u64,
    /// Decoded length.
    pub raw_len: u64,
    /// BLAKE3 of the decoded bytes (hex).
    pub blake3: String,
    /// Whether the blob applies to the base tensor's bytes at the same offsets (delta parts).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delta: bool,
}

/// How a tensor's bytes are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Encoding {
    /// Compressed on its own: every part is a standalone blob.
    Raw { parts: Vec<Part> },
    /// Against the tensor `base` (same length): part *i* is a blob applied to the base's bytes
    /// at the same offsets (a part may also be standalone, when that was smaller).
    Delta { base: String, parts: Vec<Part> },
    /// The round-to-nearest-even cast of tensor `source` (F32) to BF16: nothing stored.
    Cast {
        source: String,
        from: String,
        to: String,
    },
}

/// A tensor's record, keyed by the BLAKE3 of its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorRecord {
    /// Bytes.
    pub len: u64,
    /// Element type (safetensors name); `U8` for byte runs of other formats.
    pub dtype: String,
    /// How it is stored.
    #[serde(flatten)]
    pub encoding: Encoding,
    /// For F32 tensors (raw or delta): BLAKE3 of the BF16 cast, so a BF16 copy is found by one
    /// lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bf16_cast: Option<String>,
}

impl TensorRecord {
    /// The parts this record stores (none for a cast).
    pub fn parts(&self) -> &[Part] {
        match &self.encoding {
            Encoding::Raw { parts } | Encoding::Delta { parts, .. } => parts,
            Encoding::Cast { .. } => &[],
        }
    }

    /// The record this one needs bytes of (a delta's base, a cast's source).
    pub fn dependency(&self) -> Option<&str> {
        match &self.encoding {
            Encoding::Raw { .. } => None,
            Encoding::Delta { base, .. } => Some(base),
            Encoding::Cast { source, .. } => Some(source),
        }
    }

    /// Bytes stored in packs for this record.
    pub fn stored_len(&self) -> u64 {
        self.parts().iter().map(|p| p.len).sum()
    }
}

/// A stretch of a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Segment {
    /// Literal bytes (a header, a config file, zip structure), compressed in parts.
    Bytes { len: u64, parts: Vec<Part> },
    /// The bytes of tensor `blake3` (record in the manifest's `tensors`), named `name` in the
    /// file (a safetensors key, or a zip member's name).
    Tensor {
        name: String,
        blake3: String,
        len: u64,
    },
}

impl Segment {
    /// Length in the file.
    pub fn len(&self) -> u64 {
        match self {
            Segment::Bytes { len, .. } | Segment::Tensor { len, .. } => *len,
        }
    }

    /// Whether the segment is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The file a file is stored against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseRef {
    /// Repo id.
    pub repo: String,
    /// Revision.
    pub revision: String,
    /// Path in the repo.
    pub path: String,
    /// The base file's sha256.
    pub sha256: String,
    /// Mean differing bits per element, from the sampled comparison that chose it.
    pub bit_distance: f64,
}

/// What a file may serve as: a base for later fine-tunes (safetensors stored without deltas).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseInfo {
    /// For each tensor, the first 16 hex digits of the BLAKE3 of `canonical name, dtype,
    /// shape`: what the family index looks candidates up by.
    pub sigs: Vec<String>,
    /// Its sampled fingerprint (family::Fingerprint bytes), stored as one part.
    pub fingerprint: Part,
}

/// One file of a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path in the repo.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 (the hub's LFS oid), hex.
    pub sha256: String,
    /// `safetensors`, `zip` or `bytes`: how the file was cut into segments.
    pub format: String,
    /// The file, in order.
    pub segments: Vec<Segment>,
    /// The file its tensors are deltas against, if any.
    pub base: Option<BaseRef>,
    /// Present when this file can be a base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_info: Option<BaseInfo>,
    /// Pack bytes this file added when it was ingested (0 for a duplicate).
    pub stored_bytes: u64,
}

/// A repo revision: the commit point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// Repo id.
    pub repo: String,
    /// Revision.
    pub revision: String,
    /// Unix seconds when it was written.
    pub created: u64,
    /// Files, sorted by path.
    pub files: Vec<FileEntry>,
    /// Every tensor record the files need, bases and cast sources included.
    pub tensors: BTreeMap<String, TensorRecord>,
}

fn is_hex32(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Manifest {
    /// Parses and checks a manifest read from `key`.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::store_corrupt(key, format!("not a manifest: {e}")))?;
        if m.format != MANIFEST_FORMAT {
            return Err(Error::store_corrupt(
                key,
                format!("of format `{}`, which this build does not read", m.format),
            ));
        }
        m.validate()
            .map_err(|e| Error::store_corrupt(key, e.to_string()))?;
        Ok(m)
    }

    /// Serializes a manifest (pretty JSON: small next to the data and readable by hand).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::internal(e.to_string()))
    }

    /// Checks every invariant a reader relies on: ids and paths, hashes, segment lengths that
    /// add up to each file's size, part lengths that add up to each record's, every referenced
    /// record present, chains no deeper than [`MAX_DEPTH`] (so no cycles), and casts and deltas
    /// between tensors of the lengths they need.
    pub fn validate(&self) -> Result<()> {
        check_repo_id(&self.repo)?;
        check_revision(&self.revision)?;
        let bad = |what: String| Err(Error::invalid(what));
        for (hash, rec) in &self.tensors {
            if !is_hex32(hash) {
                return bad(format!("tensor key `{hash}` is not a BLAKE3 hex digest"));
            }
            match &rec.encoding {
                Encoding::Raw { parts } => {
                    if parts.iter().any(|p| p.delta) {
                        return bad(format!(
                            "tensor {hash}: a standalone tensor with a delta part"
                        ));
                    }
                    check_parts(parts, rec.len, hash)?;
                }
                Encoding::Delta { parts, .. } => check_parts(parts, rec.len, hash)?,
                Encoding::Cast { .. } => {}
            }
            let mut depth = 1;
            let mut cur = rec;
            while let Some(dep) = cur.dependency() {
                let Some(next) = self.tensors.get(dep) else {
                    return bad(format!("tensor {hash} needs {dep}, which has no record"));
                };
                let want = match &cur.encoding {
                    Encoding::Cast { from, to, .. } => {
                        if from != "F32" || to != "BF16" || next.dtype != "F32" {
                            return bad(format!("tensor {hash}: unsupported cast {from} to {to}"));
                        }
                        cur.len.checked_mul(2)
                    }
                    _ => Some(cur.len),
                };
                if want != Some(next.len) {
                    return bad(format!("tensor {hash}: its {dep} has the wrong length"));
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return bad(format!("tensor {hash}: chain deeper than {MAX_DEPTH}"));
                }
                cur = next;
            }
        }
        let mut last: Option<&str> = None;
        for f in &self.files {
            check_file_path(&f.path)?;
            if last.is_some_and(|l| l >= f.path.as_str()) {
                return bad(format!("files not sorted or repeated at `{}`", f.path));
            }
            last = Some(&f.path);
            if !is_hex32(&f.sha256) {
                return bad(format!("{}: sha256 is not a hex digest", f.path));
            }
            let mut total = 0u64;
            for s in &f.segments {
                match s {
                    Segment::Bytes { len, parts } => check_parts(parts, *len, &f.path)?,
                    Segment::Tensor { blake3, len, .. } => match self.tensors.get(blake3) {
                        Some(r) if r.len == *len => {}
                        _ => {
                            return bad(format!(
                                "{}: tensor {blake3} has no record of its length",
                                f.path
                            ))
                        }
                    },
                }
                total = total
                    .checked_add(s.len())
                    .ok_or_else(|| Error::invalid("segment lengths overflow"))?;
            }
            if total != f.size {
                return bad(format!(
                    "{}: segments add up to {total} bytes, not {}",
                    f.path, f.size
                ));
            }
            if let Some(b) = &f.base_info {
                check_parts(
                    std::slice::from_ref(&b.fingerprint),
                    b.fingerprint.raw_len,
                    &f.path,
                )?;
            }
        }
        Ok(())
    }

    /// Every part the manifest references: its files' literal parts, its records' parts and its
    /// bases' fingerprints.
    pub fn parts(&self) -> impl Iterator<Item = &Part> {
        let files = self.files.iter().flat_map(|f| {
            f.segments
                .iter()
                .flat_map(|s| match s {
                    Segment::Bytes { parts, .. } => parts.as_slice(),
                    Segment::Tensor { .. } => &[],
                })
                .chain(f.base_info.iter().map(|b| &b.fingerprint))
        });
        files.chain(self.tensors.values().flat_map(|r| r.parts()))
    }

    /// The manifest's file at `path`.
    pub fn file(&self, path: &str) -> Result<&FileEntry> {
        self.files.iter().find(|f| f.path == path).ok_or_else(|| {
            Error::not_found(format!(
                "{}@{} has no file `{path}`",
                self.repo, self.revision
            ))
        })
    }
}

fn check_parts(parts: &[Part], total: u64, owner: &str) -> Result<()> {
    let mut sum = 0u64;
    for p in parts {
        if !is_hex32(&p.pack) || !is_hex32(&p.blake3) {
            return Err(Error::invalid(format!(
                "{owner}: a part's hash is not a hex digest"
            )));
        }
        if p.raw_len == 0 || p.raw_len > PART_LEN {
            return Err(Error::invalid(format!(
                "{owner}: a part of {} bytes",
                p.raw_len
            )));
        }
        if p.len > crate::codec::format::max_blob_len(p.raw_len)
            || p.offset.checked_add(p.len).is_none()
        {
            return Err(Error::invalid(format!(
                "{owner}: a part's stored length is out of bounds"
            )));
        }
        sum = sum
            .checked_add(p.raw_len)
            .ok_or_else(|| Error::invalid("part lengths overflow"))?;
    }
    if sum != total {
        return Err(Error::invalid(format!(
            "{owner}: parts add up to {sum} bytes, not {total}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_escape_to_one_component() {
        for rev in ["main", "refs/pr/1", "v1.0", "ünï cödé", "%41"] {
            let e = escape_revision(rev);
            assert!(!e.contains('/'));
            assert_eq!(unescape_revision(&e).as_deref(), Some(rev));
            let key = manifest_key("org/name", rev);
            assert_eq!(
                parse_manifest_key(&key),
                Some(("org/name".into(), rev.into()))
            );
        }
    }

    #[test]
    fn ids_and_paths_are_checked() {
        assert!(check_repo_id("sentence-transformers/all-MiniLM-L6-v2").is_ok());
        for bad in ["", "a", "a/b/c", "../b", "a/..", "a b/c", "/a"] {
            assert!(check_repo_id(bad).is_err(), "{bad}");
        }
        assert!(check_file_path("onnx/model.onnx").is_ok());
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "./a", "a\\b"] {
            assert!(check_file_path(bad).is_err(), "{bad}");
        }
    }
}
