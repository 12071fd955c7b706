//! The store's only door to storage: an `object_store` backend (a local folder or S3), driven
//! from synchronous code, with every request counted.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// Requests one batch keeps in flight.
pub const IN_FLIGHT: usize = 16;

/// Requests made and bytes moved, by kind.
#[derive(Debug, Default)]
pub struct Counters {
    /// PUTs (create-only and overwrites).
    pub puts: AtomicU64,
    /// Create-only PUTs that found the object already there (dedup hits).
    pub put_exists: AtomicU64,
    /// GETs, whole or ranged (each range of a multi-range read counts).
    pub gets: AtomicU64,
    /// HEADs.
    pub heads: AtomicU64,
    /// LIST pages (one per call here).
    pub lists: AtomicU64,
    /// DELETEs.
    pub deletes: AtomicU64,
    /// Bytes uploaded.
    pub bytes_put: AtomicU64,
    /// Bytes downloaded.
    pub bytes_got: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Requests {
    /// PUTs.
    pub puts: u64,
    /// PUTs that were dedup hits.
    pub put_exists: u64,
    /// GETs.
    pub gets: u64,
    /// HEADs.
    pub heads: u64,
    /// LISTs.
    pub lists: u64,
    /// DELETEs.
    pub deletes: u64,
    /// Bytes uploaded.
    pub bytes_put: u64,
    /// Bytes downloaded.
    pub bytes_got: u64,
}

impl Requests {
    /// Requests of every kind.
    pub fn total(&self) -> u64 {
        self.puts + self.gets + self.heads + self.lists + self.deletes
    }

    /// The requests made since `earlier`.
    pub fn since(&self, earlier: &Requests) -> Requests {
        Requests {
            puts: self.puts - earlier.puts,
            put_exists: self.put_exists - earlier.put_exists,
            gets: self.gets - earlier.gets,
            heads: self.heads - earlier.heads,
            lists: self.lists - earlier.lists,
            deletes: self.deletes - earlier.deletes,
            bytes_put: self.bytes_put - earlier.bytes_put,
            bytes_got: self.bytes_got - earlier.bytes_got,
        }
    }
}

/// An object's listing entry.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Key relative to the store's root.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// Unix seconds of the last write.
    pub modified: i64,
    /// The object's version tag, where the backend gives one (S3: its ETag).
    pub version: String,
}

/// A store location opened for use.
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    runtime: tokio::runtime::Runtime,
    counters: Counters,
    url: String,
}

fn storage(context: impl Into<String>, e: object_store::Error) -> Error {
    Error::Storage {
        context: context.into(),
        message: e.to_string(),
    }
}

/// Reads `range` of an object. From a local folder the range is mapped from the file
/// `object_store` opened, not copied into fresh memory: objects are immutable once written
/// (content-addressed, create-only), so the mapping never sees them change, and a removed
/// file stays readable through it. A range past the end comes back short, as from
/// `get_range`, and is refused by the caller.
async fn get_range_mapped(
    store: &dyn ObjectStore,
    path: &ObjPath,
    range: Range<u64>,
) -> object_store::Result<Bytes> {
    let opts = object_store::GetOptions {
        range: Some(range.clone().into()),
        ..Default::default()
    };
    let got = store.get_opts(path, opts).await?;
    match got.payload {
        object_store::GetResultPayload::File(file, local) => {
            let range = got.range;
            if range.is_empty() {
                return Ok(Bytes::new());
            }
            let mapped = tokio::task::spawn_blocking(move || {
                // SAFETY: the file is a store object, never modified after it is written
                // (see above); the mapping is read-only.
                unsafe {
                    memmap2::MmapOptions::new()
                        .offset(range.start)
                        .len((range.end - range.start) as usize)
                        .populate()
                        .map(&file)
                }
            })
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })?
            .map_err(|e| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: format!("mapping {}: {e}", local.display()).into(),
            })?;
            Ok(Bytes::from_owner(mapped))
        }
        object_store::GetResultPayload::Stream(_) => got.bytes().await,
    }
}

/// An S3 bucket (and the key prefix inside it) for `s3://bucket/prefix`.
#[cfg(feature = "s3")]
fn s3_store(location: &str, rest: &str) -> Result<(Arc<dyn ObjectStore>, String)> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::invalid(format!("`{location}` names no bucket")));
    }
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(|e| storage(format!("configuring {location}"), e))?;
    Ok((Arc::new(s3), prefix.trim_matches('/').to_string()))
}

#[cfg(not(feature = "s3"))]
fn s3_store(location: &str, _rest: &str) -> Result<(Arc<dyn ObjectStore>, String)> {
    Err(Error::invalid(format!(
        "`{location}`: this build has no S3 support (cargo feature `s3`)"
    )))
}

impl Objects {
    /// Opens `location`: `s3://bucket[/prefix]` (configured by the `AWS_*` environment
    /// variables, `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP` included) or a local folder, created
    /// if missing.
    pub fn open(location: &str) -> Result<Objects> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the I/O runtime", e))?;
        let (store, prefix): (Arc<dyn ObjectStore>, String) =
            if let Some(rest) = location.strip_prefix("s3://") {
                s3_store(location, rest)?
            } else if location.contains("://") {
                return Err(Error::invalid(format!(
                    "`{location}`: a store is a local folder or s3://bucket/prefix"
                )));
            } else {
                std::fs::create_dir_all(location)
                    .map_err(|e| Error::io(format!("creating the store folder {location}"), e))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(location)
                    .map_err(|e| storage(format!("opening {location}"), e))?
                    .with_automatic_cleanup(true);
                (Arc::new(fs), String::new())
            };
        Ok(Objects {
            store,
            prefix,
            runtime,
            counters: Counters::default(),
            url: location.to_string(),
        })
    }

    /// The location as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests so far.
    pub fn requests(&self) -> Requests {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Requests {
            puts: l(&c.puts),
            put_exists: l(&c.put_exists),
            gets: l(&c.gets),
            heads: l(&c.heads),
            lists: l(&c.lists),
            deletes: l(&c.deletes),
            bytes_put: l(&c.bytes_put),
            bytes_got: l(&c.bytes_got),
        }
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn key_of(&self, path: &ObjPath) -> String {
        let s = path.as_ref();
        if self.prefix.is_empty() {
            s.to_string()
        } else {
            s.strip_prefix(&self.prefix)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(s)
                .to_string()
        }
    }

    fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Writes `key` only if no object is there. Returns whether this call created it (false:
    /// it existed — for a content-addressed key, a dedup hit).
    pub fn put_new(&self, key: &str, bytes: Bytes) -> Result<bool> {
        let len = bytes.len() as u64;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.add(&self.counters.puts, 1);
        let r = self.runtime.block_on(self.store.put_opts(
            &self.path(key),
            PutPayload::from_bytes(bytes),
            opts,
        ));
        match r {
            Ok(_) => {
                self.add(&self.counters.bytes_put, len);
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.add(&self.counters.put_exists, 1);
                Ok(false)
            }
            Err(e) => Err(storage(format!("writing {key} to {}", self.url), e)),
        }
    }

    /// Writes `key`, replacing what is there (manifests only).
    pub fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        let len = bytes.len() as u64;
        self.add(&self.counters.puts, 1);
        self.runtime
            .block_on(
                self.store
                    .put(&self.path(key), PutPayload::from_bytes(bytes)),
            )
            .map_err(|e| storage(format!("writing {key} to {}", self.url), e))?;
        self.add(&self.counters.bytes_put, len);
        Ok(())
    }

    /// Reads a whole object; `Ok(None)` if it does not exist.
    pub fn get(&self, key: &str, max_len: u64) -> Result<Option<Bytes>> {
        self.add(&self.counters.gets, 1);
        let path = self.path(key);
        let r = self.runtime.block_on(async {
            let got = self.store.get(&path).await?;
            if got.meta.size > max_len {
                return Ok(Err(got.meta.size));
            }
            got.bytes().await.map(Ok)
        });
        match r {
            Ok(Ok(b)) => {
                self.add(&self.counters.bytes_got, b.len() as u64);
                Ok(Some(b))
            }
            Ok(Err(size)) => Err(Error::store_corrupt(
                key,
                format!("{size} bytes, over the {max_len}-byte limit for it"),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage(format!("reading {key} from {}", self.url), e)),
        }
    }

    /// Reads byte ranges of one object (the backend coalesces nearby ranges into fewer
    /// requests). A missing object or a range past its end is [`Error::StoreCorrupt`].
    pub fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.add(&self.counters.gets, ranges.len() as u64);
        let path = self.path(key);
        let r = self.runtime.block_on(self.store.get_ranges(&path, ranges));
        self.checked_ranges(key, ranges, r)
    }

    /// Reads one byte range from each of several objects, [`IN_FLIGHT`] requests at a time, on
    /// the I/O runtime alone (a caller on a compute thread pool does not tie it up).
    pub fn get_range_many(&self, reads: &[(String, Range<u64>)]) -> Result<Vec<Bytes>> {
        self.add(&self.counters.gets, reads.len() as u64);
        let store = self.store.clone();
        let got = self.runtime.block_on(async {
            futures::stream::iter(reads)
                .map(|(key, r)| {
                    let (store, path) = (store.clone(), self.path(key));
                    async move { get_range_mapped(&*store, &path, r.clone()).await }
                })
                .buffered(IN_FLIGHT)
                .collect::<Vec<_>>()
                .await
        });
        got.into_iter()
            .zip(reads)
            .map(|(r, (key, range))| {
                self.checked_ranges(key, std::slice::from_ref(range), r.map(|b| vec![b]))
                    .map(|mut v| v.remove(0))
            })
            .collect()
    }

    /// Counts what a range read got, and maps short reads and a missing object to
    /// [`Error::StoreCorrupt`].
    fn checked_ranges(
        &self,
        key: &str,
        ranges: &[Range<u64>],
        r: object_store::Result<Vec<Bytes>>,
    ) -> Result<Vec<Bytes>> {
        match r {
            Ok(v) => {
                let n: u64 = v.iter().map(|b| b.len() as u64).sum();
                self.add(&self.counters.bytes_got, n);
                for (b, want) in v.iter().zip(ranges) {
                    if b.len() as u64 != want.end - want.start {
                        return Err(Error::store_corrupt(key, "truncated"));
                    }
                }
                Ok(v)
            }
            Err(object_store::Error::NotFound { .. }) => Err(Error::store_corrupt(key, "missing")),
            Err(e) => {
                // Past-the-end ranges are how a truncated object shows.
                let msg = e.to_string();
                if msg.contains("range") || msg.contains("Range") {
                    Err(Error::store_corrupt(key, format!("truncated ({msg})")))
                } else {
                    Err(storage(format!("reading {key} from {}", self.url), e))
                }
            }
        }
    }

    /// Whether `key` exists.
    pub fn exists(&self, key: &str) -> Result<bool> {
        self.add(&self.counters.heads, 1);
        match self.runtime.block_on(self.store.head(&self.path(key))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(storage(format!("checking {key} in {}", self.url), e)),
        }
    }

    /// Every object under `prefix` (a key prefix ending in `/`).
    pub fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        self.add(&self.counters.lists, 1);
        let path = self.path(prefix.trim_end_matches('/'));
        let listed: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&path)).try_collect())
            .map_err(|e| storage(format!("listing {prefix} in {}", self.url), e))?;
        Ok(listed
            .into_iter()
            .map(|m| Listed {
                key: self.key_of(&m.location),
                size: m.size,
                modified: m.last_modified.timestamp(),
                version: format!(
                    "{}/{}/{}",
                    m.size,
                    m.last_modified.timestamp_nanos_opt().unwrap_or_default(),
                    m.e_tag.unwrap_or_default()
                ),
            })
            .collect())
    }

    /// Deletes objects (missing ones are not an error).
    pub fn delete(&self, keys: &[String]) -> Result<()> {
        self.add(&self.counters.deletes, keys.len() as u64);
        let paths: Vec<ObjPath> = keys.iter().map(|k| self.path(k)).collect();
        let store = self.store.clone();
        self.runtime.block_on(async {
            futures::stream::iter(paths)
                .map(|p| {
                    let store = store.clone();
                    async move {
                        match store.delete(&p).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                            Err(e) => Err(storage(format!("deleting {p}"), e)),
                        }
                    }
                })
                .buffer_unordered(16)
                .try_collect::<Vec<()>>()
                .await
        })?;
        Ok(())
    }

    /// Reads many whole objects at once ([`IN_FLIGHT`] at a time); missing ones are `None`.
    pub fn get_many(&self, keys: &[String], max_len: u64) -> Result<Vec<Option<Bytes>>> {
        self.add(&self.counters.gets, keys.len() as u64);
        let store = self.store.clone();
        let paths: Vec<ObjPath> = keys.iter().map(|k| self.path(k)).collect();
        let got = self.runtime.block_on(async {
            futures::stream::iter(paths)
                .map(|p| {
                    let store = store.clone();
                    async move {
                        match store.get(&p).await {
                            Ok(g) if g.meta.size > max_len => Ok(Err(g.meta.size)),
                            Ok(g) => g.bytes().await.map(|b| Ok(Some(b))),
                            Err(object_store::Error::NotFound { .. }) => Ok(Ok(None)),
                            Err(e) => Err(e),
                        }
                    }
                })
                .buffered(IN_FLIGHT)
                .try_collect::<Vec<_>>()
                .await
        });
        let got = got.map_err(|e| storage(format!("reading from {}", self.url), e))?;
        let mut out = Vec::with_capacity(got.len());
        for (r, key) in got.into_iter().zip(keys) {
            match r {
                Ok(b) => {
                    if let Some(b) = &b {
                        self.add(&self.counters.bytes_got, b.len() as u64);
                    }
                    out.push(b)
                }
                Err(size) => {
                    return Err(Error::store_corrupt(
                        key,
                        format!("{size} bytes, over the {max_len}-byte limit for it"),
                    ))
                }
            }
        }
        Ok(out)
    }
}
