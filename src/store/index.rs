//! The dedup and family index: what ingest looks new files and tensors up in. Rebuilt from the
//! committed manifests (the object store stays the only source of truth), then grown by the
//! ingest that uses it.

use std::collections::{HashMap, HashSet};

use crate::store::layout::{BaseRef, Encoding, FileEntry, Manifest, Segment, TensorRecord};
use crate::store::plan::Records;

/// A file that can serve as a base.
#[derive(Debug, Clone)]
pub struct BaseFile {
    /// Where it is.
    pub at: BaseRef,
    /// Its entry.
    pub entry: FileEntry,
}

/// A candidate base: base files of one revision, most shared signatures first (the first one
/// names the base).
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The files.
    pub files: Vec<&'a BaseFile>,
    /// Distinct signatures of the new file they hold.
    pub shared: usize,
}

/// Lookups over every committed revision.
#[derive(Default)]
pub struct Index {
    /// Tensor records by BLAKE3.
    pub tensors: Records,
    /// F32 tensors by the BLAKE3 of their BF16 cast.
    pub casts: HashMap<String, String>,
    /// Files by sha256: the entry (its segments and how it is stored).
    pub files: HashMap<String, FileEntry>,
    /// Files that can be bases.
    pub bases: Vec<BaseFile>,
    /// Bases by tensor signature (see [`crate::store::layout::BaseInfo::sigs`]).
    pub by_sig: HashMap<String, Vec<usize>>,
    seen_bases: HashSet<String>,
}

impl Index {
    /// Builds the index from manifests.
    pub fn from_manifests(manifests: &[Manifest]) -> Index {
        // Oldest first, so a base is named after the revision that stored it, not a later
        // re-upload of the same file.
        let mut order: Vec<&Manifest> = manifests.iter().collect();
        order.sort_by(|a, b| {
            (a.created, &a.repo, &a.revision).cmp(&(b.created, &b.repo, &b.revision))
        });
        let mut index = Index::default();
        for m in order {
            index.add_manifest(m);
        }
        index
    }

    /// Adds a manifest's files and records.
    pub fn add_manifest(&mut self, m: &Manifest) {
        for (hash, rec) in &m.tensors {
            self.add_record(hash, rec);
        }
        for f in &m.files {
            self.add_file(&m.repo, &m.revision, f);
        }
    }

    /// Adds one tensor record (the first one seen for a hash is kept). An F32 record stored
    /// whole or as a delta becomes the source of its BF16 cast; a whole one is preferred (its
    /// cast reads one record, not a delta and its base).
    pub fn add_record(&mut self, hash: &str, rec: &TensorRecord) {
        if let Some(c) = &rec.bf16_cast {
            let whole = matches!(rec.encoding, Encoding::Raw { .. });
            if whole || matches!(rec.encoding, Encoding::Delta { .. }) {
                let now = self.casts.get(c).and_then(|s| self.tensors.get(s));
                if now.is_none_or(|r| whole && !matches!(r.encoding, Encoding::Raw { .. })) {
                    self.casts.insert(c.clone(), hash.to_string());
                }
            }
        }
        self.tensors
            .entry(hash.to_string())
            .or_insert_with(|| rec.clone());
    }

    /// Adds one file (and, if it can be a base, indexes it by its tensor signatures).
    pub fn add_file(&mut self, repo: &str, revision: &str, f: &FileEntry) {
        self.files
            .entry(f.sha256.clone())
            .or_insert_with(|| f.clone());
        let Some(info) = &f.base_info else {
            return;
        };
        if !self.seen_bases.insert(f.sha256.clone()) {
            // Prefer the copy that stored the bytes over a duplicate committed the same second.
            if f.stored_bytes > 0 {
                if let Some(b) = self
                    .bases
                    .iter_mut()
                    .find(|b| b.at.sha256 == f.sha256 && b.entry.stored_bytes == 0)
                {
                    b.at.repo = repo.to_string();
                    b.at.revision = revision.to_string();
                    b.at.path = f.path.clone();
                    b.entry = f.clone();
                }
            }
            return;
        }
        let i = self.bases.len();
        self.bases.push(BaseFile {
            at: BaseRef {
                repo: repo.to_string(),
                revision: revision.to_string(),
                path: f.path.clone(),
                sha256: f.sha256.clone(),
                bit_distance: 0.0,
            },
            entry: f.clone(),
        });
        let mut sigs: Vec<&String> = info.sigs.iter().collect();
        sigs.sort();
        sigs.dedup();
        for s in sigs {
            self.by_sig.entry(s.clone()).or_default().push(i);
        }
    }

    /// Candidate bases for a new file with tensor signatures `sigs`: per revision, its base
    /// files sharing any of them (a base may be stored in shards cut elsewhere than the new
    /// file's), kept when together they hold at least `min_share` of `sigs`; most shared first,
    /// at most `limit`. Hash lookups per tensor, not a scan of every base.
    pub fn candidates(&self, sigs: &[String], min_share: f64, limit: usize) -> Vec<Candidate<'_>> {
        let mut file_votes: HashMap<usize, usize> = HashMap::new();
        let mut rev_votes: HashMap<(&str, &str), usize> = HashMap::new();
        let mut uniq: Vec<&String> = sigs.iter().collect();
        uniq.sort();
        uniq.dedup();
        for s in &uniq {
            let mut revs: Vec<(&str, &str)> = Vec::new();
            for &b in self.by_sig.get(*s).map_or(&[][..], |v| v.as_slice()) {
                *file_votes.entry(b).or_default() += 1;
                let at = &self.bases[b].at;
                let rev = (at.repo.as_str(), at.revision.as_str());
                if !revs.contains(&rev) {
                    revs.push(rev);
                    *rev_votes.entry(rev).or_default() += 1;
                }
            }
        }
        let need = ((uniq.len() as f64 * min_share).ceil() as usize).max(1);
        let mut groups: HashMap<(&str, &str), Vec<(usize, usize)>> = HashMap::new();
        for (&b, &n) in &file_votes {
            let at = &self.bases[b].at;
            let rev = (at.repo.as_str(), at.revision.as_str());
            if rev_votes.get(&rev).is_some_and(|&v| v >= need) {
                groups.entry(rev).or_default().push((b, n));
            }
        }
        let mut ranked: Vec<(usize, Vec<(usize, usize)>)> = groups
            .into_iter()
            .map(|(rev, mut files)| {
                files.sort_by_key(|&(b, n)| (std::cmp::Reverse(n), b));
                (rev_votes[&rev], files)
            })
            .collect();
        ranked.sort_by_key(|(n, files)| (std::cmp::Reverse(*n), files[0].0));
        ranked
            .into_iter()
            .take(limit)
            .map(|(shared, files)| Candidate {
                files: files.into_iter().map(|(b, _)| &self.bases[b]).collect(),
                shared,
            })
            .collect()
    }

    /// Whether reading `rec` goes through a delta (it is one, or a cast of one): a file with
    /// such a tensor is never a base, so restore chains stay at most [`MAX_DEPTH`] deep.
    ///
    /// [`MAX_DEPTH`]: crate::store::layout::MAX_DEPTH
    pub fn through_delta(&self, rec: &TensorRecord) -> bool {
        match &rec.encoding {
            Encoding::Delta { .. } => true,
            Encoding::Cast { source, .. } => self
                .tensors
                .get(source)
                .is_some_and(|s| matches!(s.encoding, Encoding::Delta { .. })),
            Encoding::Raw { .. } => false,
        }
    }

    /// Every record `hash` needs (itself, its base or source, and theirs), into `out`.
    pub fn closure(&self, hash: &str, out: &mut Records) {
        let mut cur = Some(hash.to_string());
        let mut depth = 0;
        while let Some(h) = cur.take() {
            let Some(rec) = self.tensors.get(&h) else {
                return;
            };
            cur = rec.dependency().map(str::to_string);
            out.insert(h, rec.clone());
            depth += 1;
            if depth > crate::store::layout::MAX_DEPTH {
                return;
            }
        }
    }

    /// The records a file entry needs.
    pub fn file_records(&self, f: &FileEntry, out: &mut Records) {
        for s in &f.segments {
            if let Segment::Tensor { blake3, .. } = s {
                self.closure(blake3, out);
            }
        }
    }
}
