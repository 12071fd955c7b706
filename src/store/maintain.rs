//! Looking after a store: `show`, `stats` (the paper's table), `verify` (deep), `gc`
//! (mark from manifests, sweep unreachable packs older than a grace period) and `rm`.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::layout::{self, manifest_key, pack_key, BaseRef, Encoding, Manifest, Segment};
use crate::store::Store;

/// One file as `show` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ShownFile {
    /// Path.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// sha256.
    pub sha256: String,
    /// Pack bytes it added when ingested.
    pub stored_bytes: u64,
    /// The file it is a delta against.
    pub base: Option<ShownBase>,
}

/// A base as `show` names it.
#[derive(Debug, Clone, Serialize)]
pub struct ShownBase {
    /// Repo id.
    pub repo: String,
    /// Path in that repo.
    pub path: String,
    /// Mean differing bits per element.
    pub bit_distance: f64,
}

/// `show`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    /// Repo id.
    pub repo: String,
    /// Revision.
    pub revision: String,
    /// Files.
    pub files: Vec<ShownFile>,
}

/// One revision's files.
pub fn show(store: &Store, repo: &str, revision: &str) -> Result<Shown> {
    let m = store.manifest(repo, revision)?;
    Ok(Shown {
        repo: m.repo.clone(),
        revision: m.revision.clone(),
        files: m
            .files
            .iter()
            .map(|f| ShownFile {
                path: f.path.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
                stored_bytes: f.stored_bytes,
                base: f.base.as_ref().map(|b: &BaseRef| ShownBase {
                    repo: b.repo.clone(),
                    path: b.path.clone(),
                    bit_distance: b.bit_distance,
                }),
            })
            .collect(),
    })
}

/// Bytes after each stage of the pipeline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stages {
    /// Every file of every revision.
    pub raw: u64,
    /// Distinct files (by sha256).
    pub file_dedup: u64,
    /// Distinct tensors plus the other bytes of distinct files.
    pub tensor_dedup: u64,
    /// Encoded parts (deltas, standalone compression, literal bytes; casts cost nothing).
    pub compressed: u64,
}

/// One family: a base and the files stored against it (or a file on its own).
#[derive(Debug, Clone, Serialize)]
pub struct FamilyStats {
    /// `repo/path` of the base (or of the lone file).
    pub base: String,
    /// Distinct files in it.
    pub files: u64,
    /// Files stored as deltas against the base.
    pub deltas: u64,
    /// Bytes per stage.
    #[serde(flatten)]
    pub stages: Stages,
}

/// Tensors by how they are stored (distinct tensors only).
#[derive(Debug, Clone, Default, Serialize)]
pub struct EncodingStats {
    /// Count and raw/stored bytes of standalone tensors.
    pub standalone: (u64, u64, u64),
    /// Of delta tensors.
    pub delta: (u64, u64, u64),
    /// Of cast recipes.
    pub cast: (u64, u64, u64),
    /// Literal (non-tensor) bytes of distinct files.
    pub literal: (u64, u64, u64),
}

/// `stats`' answer: the paper's table for the whole store, per family, and object counts.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Revisions.
    pub revisions: u64,
    /// File entries over all revisions.
    pub files: u64,
    /// Bytes per stage.
    #[serde(flatten)]
    pub stages: Stages,
    /// Bytes of objects in the store (packs, garbage included, plus manifests).
    pub stored: u64,
    /// 1 − stored/raw.
    pub reduction: f64,
    /// Pack objects and their bytes.
    pub packs: u64,
    /// Bytes in packs.
    pub pack_bytes: u64,
    /// Manifest bytes.
    pub manifest_bytes: u64,
    /// Distinct tensors by encoding: (count, raw bytes, stored bytes).
    pub encodings: EncodingStats,
    /// Per family, largest first.
    pub families: Vec<FamilyStats>,
}

/// The paper's table for the store.
pub fn stats(store: &Store) -> Result<Stats> {
    let manifests = store.manifests()?;
    let mut st = Stages::default();
    let mut files_seen: HashSet<&str> = HashSet::new();
    let mut tensors_seen: HashSet<&str> = HashSet::new();
    let mut parts_seen: HashSet<(&str, u64)> = HashSet::new();
    let mut enc = EncodingStats::default();
    let mut fams: BTreeMap<String, (FamilyStats, HashSet<String>)> = BTreeMap::new();
    let mut file_count = 0;
    // Families: a delta file joins its base's; any other file heads its own.
    let family_of = |m: &Manifest, f: &layout::FileEntry| match &f.base {
        Some(b) => format!("{}/{}", b.repo, b.path),
        None => format!("{}/{}", m.repo, f.path),
    };
    // A file with no base heads a family, unless it is a cast copy of another file: then it
    // joins its source's (found through any of its cast records).
    let mut by_sha: HashMap<&str, String> = HashMap::new();
    let mut home: HashMap<&str, String> = HashMap::new();
    let cast_source = |m: &'_ Manifest, f: &layout::FileEntry| -> Option<String> {
        f.segments.iter().find_map(|s| match s {
            Segment::Tensor { blake3, .. } => match &m.tensors.get(blake3)?.encoding {
                Encoding::Cast { source, .. } => Some(source.clone()),
                _ => None,
            },
            Segment::Bytes { .. } => None,
        })
    };
    for m in &manifests {
        for f in &m.files {
            if f.base.is_none() && cast_source(m, f).is_none() {
                let name = by_sha
                    .entry(&f.sha256)
                    .or_insert_with(|| family_of(m, f))
                    .clone();
                for s in &f.segments {
                    if let Segment::Tensor { blake3, .. } = s {
                        home.entry(blake3).or_insert_with(|| name.clone());
                    }
                }
            }
        }
    }
    for m in &manifests {
        for f in &m.files {
            if f.base.is_none() {
                if let Some(src) = cast_source(m, f) {
                    let name = home
                        .get(src.as_str())
                        .cloned()
                        .unwrap_or_else(|| family_of(m, f));
                    by_sha.entry(&f.sha256).or_insert(name);
                }
            }
        }
    }
    for m in &manifests {
        for f in &m.files {
            file_count += 1;
            st.raw += f.size;
            let fam_name = match &f.base {
                Some(b) => by_sha
                    .get(b.sha256.as_str())
                    .cloned()
                    .unwrap_or_else(|| family_of(m, f)),
                None => by_sha
                    .get(f.sha256.as_str())
                    .cloned()
                    .unwrap_or_else(|| family_of(m, f)),
            };
            let (fam, fam_tensors) = fams.entry(fam_name.clone()).or_insert_with(|| {
                (
                    FamilyStats {
                        base: fam_name.clone(),
                        files: 0,
                        deltas: 0,
                        stages: Stages::default(),
                    },
                    HashSet::new(),
                )
            });
            fam.stages.raw += f.size;
            if !files_seen.insert(&f.sha256) {
                continue;
            }
            fam.files += 1;
            fam.deltas += u64::from(f.base.is_some());
            st.file_dedup += f.size;
            fam.stages.file_dedup += f.size;
            for s in &f.segments {
                match s {
                    Segment::Bytes { len, parts } => {
                        st.tensor_dedup += len;
                        fam.stages.tensor_dedup += len;
                        let stored: u64 = parts.iter().map(|p| p.len).sum();
                        st.compressed += stored;
                        fam.stages.compressed += stored;
                        enc.literal.0 += 1;
                        enc.literal.1 += len;
                        enc.literal.2 += stored;
                    }
                    Segment::Tensor { blake3, len, .. } => {
                        if fam_tensors.insert(blake3.clone()) {
                            fam.stages.tensor_dedup += len;
                            if let Some(r) = m.tensors.get(blake3) {
                                fam.stages.compressed += r.stored_len();
                            }
                        }
                        if !tensors_seen.insert(blake3) {
                            continue;
                        }
                        st.tensor_dedup += len;
                        let Some(r) = m.tensors.get(blake3) else {
                            continue;
                        };
                        let mut stored = 0;
                        for p in r.parts() {
                            if parts_seen.insert((&p.pack, p.offset)) {
                                stored += p.len;
                            }
                        }
                        st.compressed += stored;
                        let slot = match r.encoding {
                            Encoding::Raw { .. } => &mut enc.standalone,
                            Encoding::Delta { .. } => &mut enc.delta,
                            Encoding::Cast { .. } => &mut enc.cast,
                        };
                        slot.0 += 1;
                        slot.1 += len;
                        slot.2 += stored;
                    }
                }
            }
        }
    }
    let packs = store.objects().list("packs/")?;
    let pack_bytes: u64 = packs.iter().map(|p| p.size).sum();
    let manifest_bytes: u64 = store.manifest_keys()?.iter().map(|l| l.size).sum();
    let stored = pack_bytes + manifest_bytes;
    let mut families: Vec<FamilyStats> = fams.into_values().map(|(f, _)| f).collect();
    families.sort_by_key(|f| std::cmp::Reverse(f.stages.raw));
    Ok(Stats {
        revisions: manifests.len() as u64,
        files: file_count,
        reduction: if st.raw == 0 {
            0.0
        } else {
            1.0 - stored as f64 / st.raw as f64
        },
        stages: st,
        stored,
        packs: packs.len() as u64,
        pack_bytes,
        manifest_bytes,
        encodings: enc,
        families,
    })
}

/// A problem `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The object's key.
    pub object: String,
    /// What is wrong.
    pub problem: String,
    /// The revisions (`repo@revision`) that need it.
    pub repos: Vec<String>,
}

/// `verify`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Whether everything checked out.
    pub ok: bool,
    /// Manifests read.
    pub manifests: u64,
    /// Packs read whole and hashed.
    pub packs: u64,
    /// Distinct files restored (to a hash) and checked.
    pub files: u64,
    /// Bytes of packs read.
    pub pack_bytes: u64,
    /// Problems, by object.
    pub problems: Vec<Problem>,
}

/// Checks everything reachable: every manifest parses, every pack it references is there with
/// the content its name hashes, every part lies inside its pack, and every distinct file
/// restores to its sha256 (through deltas and casts, each part checked against its BLAKE3).
pub fn verify(store: &Store) -> Result<VerifyReport> {
    let listed = store.manifests_lenient()?;
    let mut problems: BTreeMap<String, (String, HashSet<String>)> = BTreeMap::new();
    let mut add = |object: String, problem: String, who: String| {
        problems
            .entry(object)
            .or_insert_with(|| (problem, HashSet::new()))
            .1
            .insert(who);
    };
    let mut manifests = Vec::new();
    for (key, m) in listed {
        match m {
            Ok(m) => manifests.push(m),
            Err(e) => {
                let who = layout::parse_manifest_key(&key)
                    .map_or(key.clone(), |(r, v)| format!("{r}@{v}"));
                add(key, e.to_string(), who);
            }
        }
    }
    // Which revisions need which pack, and the furthest byte of each they use.
    let mut packs: BTreeMap<String, (u64, HashSet<String>)> = BTreeMap::new();
    for m in &manifests {
        let who = format!("{}@{}", m.repo, m.revision);
        for p in m.parts() {
            let e = packs.entry(p.pack.clone()).or_default();
            e.0 = e.0.max(p.offset + p.len);
            e.1.insert(who.clone());
        }
    }
    let mut pack_bytes = 0;
    let mut bad_packs = HashSet::new();
    for (hash, (need_end, who)) in &packs {
        let key = pack_key(hash);
        let problem = match store.objects().get(&key, layout::PACK_TARGET * 2)? {
            None => Some("missing".to_string()),
            Some(b) => {
                pack_bytes += b.len() as u64;
                if (b.len() as u64) < *need_end {
                    Some(format!(
                        "truncated: {} bytes, parts reach {need_end}",
                        b.len()
                    ))
                } else if blake3::hash(&b).to_hex().as_str() != hash {
                    Some("corrupt: its content does not hash to its name".to_string())
                } else {
                    None
                }
            }
        };
        if let Some(p) = problem {
            bad_packs.insert(hash.clone());
            for w in who {
                add(key.clone(), p.clone(), w.clone());
            }
        }
    }
    // Restore every distinct file whose packs are sound (a damaged pack is reported once,
    // above, with every revision that needs it).
    let mut files_done: HashSet<&str> = HashSet::new();
    let mut files = 0;
    for m in &manifests {
        for f in &m.files {
            if !files_done.insert(&f.sha256) {
                continue;
            }
            let mut recs = crate::store::plan::Records::new();
            for s in &f.segments {
                if let Segment::Tensor { blake3, .. } = s {
                    let mut cur = Some(blake3.clone());
                    while let Some(h) = cur.take() {
                        if let Some(r) = m.tensors.get(&h) {
                            cur = r.dependency().map(str::to_string);
                            recs.insert(h, r.clone());
                        }
                    }
                }
            }
            let uses_bad = recs.values().flat_map(|r| r.parts()).any(|p| bad_packs.contains(&p.pack))
                || f.segments.iter().any(|s| matches!(s, Segment::Bytes { parts, .. } if parts.iter().any(|p| bad_packs.contains(&p.pack))));
            if uses_bad {
                continue;
            }
            files += 1;
            if let Err(e) = crate::store::restore::check_file(store, m, f) {
                match e {
                    Error::StoreCorrupt {
                        object,
                        what,
                        repos,
                    } => {
                        for r in repos {
                            add(object.clone(), what.clone(), r);
                        }
                    }
                    other => return Err(other),
                }
            }
        }
    }
    let problems: Vec<Problem> = problems
        .into_iter()
        .map(|(object, (problem, who))| {
            let mut repos: Vec<String> = who.into_iter().collect();
            repos.sort();
            Problem {
                object,
                problem,
                repos,
            }
        })
        .collect();
    Ok(VerifyReport {
        ok: problems.is_empty(),
        manifests: manifests.len() as u64,
        packs: packs.len() as u64,
        files,
        pack_bytes,
        problems,
    })
}

/// `gc`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    /// Packs referenced by some manifest.
    pub reachable: u64,
    /// Unreferenced packs deleted.
    pub deleted: u64,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Unreferenced packs kept because they are younger than the grace period (an ingest may
    /// be about to commit a manifest naming them).
    pub kept_young: u64,
}

/// Deletes packs no manifest references that are older than `grace_secs`. Refuses to run if
/// any manifest cannot be read (its references would be unknown).
pub fn gc(store: &Store, grace_secs: u64) -> Result<GcReport> {
    // List the packs first: a pack written after this listing is not a candidate at all.
    let packs = store.objects().list("packs/")?;
    let mut reachable: HashSet<String> = HashSet::new();
    for (key, m) in store.manifests_lenient()? {
        let m = m.map_err(|e| {
            Error::invalid(format!(
                "gc stopped: manifest {key} cannot be read ({e}); fix or remove it first"
            ))
        })?;
        reachable.extend(m.parts().map(|p| pack_key(&p.pack)));
    }
    let now = crate::store::now() as i64;
    let mut doomed = Vec::new();
    let mut kept_young = 0;
    let mut deleted_bytes = 0;
    for p in &packs {
        if reachable.contains(&p.key) {
            continue;
        }
        if now - p.modified < grace_secs as i64 {
            kept_young += 1;
            continue;
        }
        deleted_bytes += p.size;
        doomed.push(p.key.clone());
    }
    store.objects().delete(&doomed)?;
    Ok(GcReport {
        reachable: packs.iter().filter(|p| reachable.contains(&p.key)).count() as u64,
        deleted: doomed.len() as u64,
        deleted_bytes,
        kept_young,
    })
}

/// Removes a revision, or every revision of a repo; returns the revisions removed. Their
/// packs stay until `gc` finds them unreferenced.
pub fn rm(store: &Store, repo: &str, revision: Option<&str>) -> Result<Vec<String>> {
    layout::check_repo_id(repo)?;
    let keys: Vec<String> = match revision {
        Some(rev) => {
            let key = manifest_key(repo, rev);
            if !store.objects().exists(&key)? {
                return Err(Error::not_found(format!(
                    "{repo}@{rev} is not in the store"
                )));
            }
            vec![key]
        }
        None => {
            let keys: Vec<String> = store
                .manifest_keys()?
                .into_iter()
                .filter(|l| layout::parse_manifest_key(&l.key).is_some_and(|(r, _)| r == repo))
                .map(|l| l.key)
                .collect();
            if keys.is_empty() {
                return Err(Error::not_found(format!("{repo} is not in the store")));
            }
            keys
        }
    };
    store.objects().delete(&keys)?;
    Ok(keys
        .iter()
        .filter_map(|k| layout::parse_manifest_key(k).map(|(_, r)| r))
        .collect())
}
