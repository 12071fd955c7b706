//! The hub store: many model repos on object storage, each file restorable byte for byte, with
//! ZipLLM's pipeline applied across all of them — file dedup by sha256, tensor dedup by BLAKE3,
//! automatic family matching and BitX-style deltas against the chosen base — plus casts kept
//! as recipes.
//!
//! * [`layout`] — object keys, manifests and their checks (sans-I/O; docs/STORE.md).
//! * [`plan`] — which parts a tensor range needs and how they decode (sans-I/O).
//! * [`zip`] — stored members of PyTorch zip checkpoints (sans-I/O).
//! * [`index`] — the dedup and family index, rebuilt from the manifests.
//! * [`objects`] — the `object_store` backend (local folder or S3) with request counters.
//! * [`decoded`] — parts kept decoded between reads (bases shared by a family's files).
//! * [`ingest`], [`restore`], [`maintain`] (ls, show, stats, verify, gc, rm), [`bench`],
//!   [`simulate`] (the store at hub scale, on metadata).

pub mod bench;
pub mod decoded;
pub mod index;
pub mod ingest;
pub mod layout;
pub mod maintain;
pub mod objects;
pub mod plan;
pub mod restore;
pub mod simulate;
pub mod zip;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use layout::{manifest_key, pack_key, Manifest, Part, MAX_MANIFEST_LEN};
use objects::{Listed, Objects};

pub use ingest::{IngestOptions, IngestReport};
pub use maintain::{Stats, VerifyReport};
pub use restore::RestoreReport;

/// Ranges of one pack closer than this are read with one request.
const COALESCE_GAP: u64 = 1 << 20;

/// Largest single read (several parts merged).
const MAX_READ: u64 = 64 << 20;

/// A store: a local folder or an `s3://bucket/prefix`.
pub struct Store {
    objects: Objects,
    decoded: Arc<decoded::Decoded>,
    /// Keep every part decoded (a session reading many related files), not only those a read
    /// knows it will meet again.
    keep_all: bool,
}

/// A committed revision, as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RevisionInfo {
    /// Repo id.
    pub repo: String,
    /// Revision.
    pub revision: String,
    /// Files.
    pub files: usize,
    /// Sum of the files' sizes.
    pub bytes: u64,
    /// Unix seconds of the commit.
    pub created: u64,
}

/// Parts at hand for one read: blobs fetched from packs, and parts found decoded in the
/// store's [`decoded::Decoded`] when the read was planned (held here, so that they cannot be
/// dropped from it before they are used), by (pack, offset).
#[derive(Default)]
pub struct PartCache {
    blobs: HashMap<(String, u64), Bytes>,
    pinned: HashMap<(String, u64), Bytes>,
    keep: Option<Arc<decoded::Decoded>>,
}

impl plan::Fetched for PartCache {
    fn blob(&self, part: &Part) -> Option<&[u8]> {
        self.blobs
            .get(&(part.pack.clone(), part.offset))
            .filter(|b| b.len() as u64 == part.len)
            .map(|b| b.as_ref())
    }

    fn decoded(&self, part: &Part, check: bool) -> Option<Bytes> {
        if let Some(b) = self.pinned.get(&(part.pack.clone(), part.offset)) {
            return Some(b.clone());
        }
        self.keep.as_ref()?.get(part, check)
    }

    fn keep(&self, part: &Part, bytes: &Bytes, checked: bool) {
        if let Some(k) = &self.keep {
            k.put(part, bytes, checked);
        }
    }
}

impl Store {
    /// Opens a store (see [`Objects::open`]).
    pub fn open(location: &str) -> Result<Store> {
        Ok(Store {
            objects: Objects::open(location)?,
            decoded: Arc::new(decoded::Decoded::from_env()),
            keep_all: false,
        })
    }

    /// Makes this handle a session over related files: every part decoded is kept (up to
    /// `budget` bytes, least recently used out) for later reads — the next fine-tune of a family
    /// skips its base's decode. Without it, a read keeps parts only when it knows it will meet
    /// them again (a restore whose files share tensors), since keeping costs fresh memory.
    pub fn keep_decoded(&mut self, budget: u64) {
        self.decoded = Arc::new(decoded::Decoded::new(budget));
        self.keep_all = true;
    }

    /// Whether every decoded part is kept ([`Store::keep_decoded`]).
    pub fn keeps_all(&self) -> bool {
        self.keep_all
    }

    /// The decoded parts kept.
    pub fn decoded(&self) -> &decoded::Decoded {
        &self.decoded
    }

    /// Plans and fetches a read: `want` lists the parts it needs, told by its argument which
    /// ones are at hand decoded (checked ones only, with `check`) so it can leave them out;
    /// those are pinned in the returned cache, the rest fetched. With `keep`, the parts the
    /// read decodes are offered for keeping.
    pub fn fetch_needed(
        &self,
        check: bool,
        keep: bool,
        want: impl FnOnce(&mut dyn FnMut(&Part) -> bool) -> Result<Vec<Part>>,
    ) -> Result<PartCache> {
        let mut pinned = HashMap::new();
        let needs = want(&mut |p: &Part| match self.decoded.get(p, check) {
            Some(b) => {
                pinned.insert((p.pack.clone(), p.offset), b);
                true
            }
            None => false,
        })?;
        let mut cache = self.fetch(&needs)?;
        cache.pinned = pinned;
        if keep {
            cache.keep = Some(self.decoded.clone());
        }
        Ok(cache)
    }

    /// The backend, with its request counters.
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// Reads one revision's manifest.
    pub fn manifest(&self, repo: &str, revision: &str) -> Result<Manifest> {
        layout::check_repo_id(repo)?;
        layout::check_revision(revision)?;
        let key = manifest_key(repo, revision);
        match self.objects.get(&key, MAX_MANIFEST_LEN)? {
            Some(b) => Manifest::parse(&key, &b),
            None => Err(Error::not_found(format!(
                "{repo}@{revision} is not in the store"
            ))),
        }
    }

    /// The manifest keys in the store, with their listing entries.
    pub fn manifest_keys(&self) -> Result<Vec<Listed>> {
        let mut v: Vec<Listed> = self
            .objects
            .list("repos/")?
            .into_iter()
            .filter(|l| layout::parse_manifest_key(&l.key).is_some())
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(v)
    }

    /// Every committed manifest, or the first one that fails to read or parse.
    pub fn manifests(&self) -> Result<Vec<Manifest>> {
        self.manifests_lenient()?
            .into_iter()
            .map(|(_, m)| m)
            .collect()
    }

    /// Every committed manifest, each read or failed on its own (key and result). Manifests
    /// already read are taken from the local cache when the listing shows the same version
    /// (size, time and ETag), so an ingest into a store of thousands of revisions reads only the
    /// new ones; the cache is a copy, always checked like a download.
    pub fn manifests_lenient(&self) -> Result<Vec<(String, Result<Manifest>)>> {
        let listed = self.manifest_keys()?;
        let cache = ManifestCache::for_store(self.objects.url());
        let mut bytes: Vec<Option<Bytes>> = listed
            .iter()
            .map(|l| cache.as_ref().and_then(|c| c.get(l)))
            .collect();
        let missing: Vec<usize> = (0..listed.len()).filter(|&i| bytes[i].is_none()).collect();
        let keys: Vec<String> = missing.iter().map(|&i| listed[i].key.clone()).collect();
        let got = self.objects.get_many(&keys, MAX_MANIFEST_LEN)?;
        for (&i, b) in missing.iter().zip(got) {
            if let (Some(c), Some(b)) = (&cache, &b) {
                c.put(&listed[i], b);
            }
            bytes[i] = b;
        }
        Ok(listed
            .into_iter()
            .zip(bytes)
            .filter_map(|(l, b)| {
                // A manifest removed between the listing and the read is simply gone.
                let b = b?;
                let parsed = Manifest::parse(&l.key, &b);
                Some((l.key, parsed))
            })
            .collect())
    }

    /// Repos and revisions.
    pub fn ls(&self) -> Result<Vec<RevisionInfo>> {
        Ok(self
            .manifests()?
            .into_iter()
            .map(|m| RevisionInfo {
                files: m.files.len(),
                bytes: m.files.iter().map(|f| f.size).sum(),
                repo: m.repo,
                revision: m.revision,
                created: m.created,
            })
            .collect())
    }

    /// Fetches the stored bytes of `parts` (deduplicated; nearby ranges of one pack merged into
    /// one request; packs read in parallel).
    pub fn fetch(&self, parts: &[Part]) -> Result<PartCache> {
        let mut by_pack: BTreeMap<&str, Vec<Range<u64>>> = BTreeMap::new();
        for p in parts {
            by_pack
                .entry(&p.pack)
                .or_default()
                .push(p.offset..p.offset + p.len);
        }
        let mut reads: Vec<(String, Range<u64>)> = Vec::new();
        for (pack, mut ranges) in by_pack {
            ranges.sort_by_key(|r| (r.start, r.end));
            let mut cur: Option<Range<u64>> = None;
            for r in ranges {
                cur = match cur {
                    Some(c)
                        if r.start <= c.end + COALESCE_GAP
                            && r.end.max(c.end) - c.start <= MAX_READ =>
                    {
                        Some(c.start..c.end.max(r.end))
                    }
                    Some(c) => {
                        reads.push((pack.to_string(), c));
                        Some(r)
                    }
                    None => Some(r),
                };
            }
            if let Some(c) = cur {
                reads.push((pack.to_string(), c));
            }
        }
        let keyed: Vec<(String, Range<u64>)> = reads
            .iter()
            .map(|(pack, r)| (pack_key(pack), r.clone()))
            .collect();
        let got = self.objects.get_range_many(&keyed)?;
        let mut cache = PartCache::default();
        for p in parts {
            let i = reads.partition_point(|(pk, r)| {
                (pk.as_str(), r.start) < (p.pack.as_str(), p.offset + 1)
            });
            let hit = reads[..i].iter().enumerate().rev().find(|(_, (pk, r))| {
                *pk == p.pack && r.start <= p.offset && p.offset + p.len <= r.end
            });
            let Some((j, (_, r))) = hit else {
                return Err(Error::internal("a fetched part is not in any read"));
            };
            let at = (p.offset - r.start) as usize;
            cache.blobs.insert(
                (p.pack.clone(), p.offset),
                got[j].slice(at..at + p.len as usize),
            );
        }
        Ok(cache)
    }
}

/// Manifests read before, under `$ZIPLLM_CACHE` (else `$XDG_CACHE_HOME/zipllm` or
/// `~/.cache/zipllm`) in `manifests/<blake3 of the store's location>/`; `ZIPLLM_CACHE=off`
/// turns it off. Every failure to use it only means a download.
struct ManifestCache {
    dir: std::path::PathBuf,
}

impl ManifestCache {
    fn for_store(url: &str) -> Option<ManifestCache> {
        let root = match std::env::var_os("ZIPLLM_CACHE") {
            Some(v) if v == "off" => return None,
            Some(v) => std::path::PathBuf::from(v),
            None => match std::env::var_os("XDG_CACHE_HOME") {
                Some(x) => std::path::PathBuf::from(x).join("zipllm"),
                None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".cache/zipllm"),
            },
        };
        let dir = root
            .join("manifests")
            .join(&blake3::hash(url.as_bytes()).to_hex()[..32]);
        std::fs::create_dir_all(&dir).ok()?;
        Some(ManifestCache { dir })
    }

    /// The cache file for one version of one manifest.
    fn path(&self, l: &Listed) -> std::path::PathBuf {
        let name = blake3::hash(format!("{}\n{}", l.key, l.version).as_bytes()).to_hex();
        self.dir.join(format!("{}.json", &name[..32]))
    }

    fn get(&self, l: &Listed) -> Option<Bytes> {
        let b = std::fs::read(self.path(l)).ok()?;
        (b.len() as u64 == l.size).then(|| Bytes::from(b))
    }

    fn put(&self, l: &Listed, b: &Bytes) {
        let _ = crate::native::write_atomically(&self.path(l), |w| {
            w.write_all(b)
                .map_err(|e| Error::io("writing the manifest cache", e))
        });
    }
}

/// Unix seconds now.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
