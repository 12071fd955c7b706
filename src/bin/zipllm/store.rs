//! `zipllm store …`: the hub store's commands.

use std::path::PathBuf;

use clap::Subcommand;
use serde::Serialize;
use serde_json::json;
use zipllm::store::{self, IngestOptions, Store};
use zipllm::{Error, Result};

use super::mb;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Ingest a model repo folder (any files; safetensors single or sharded) as REPO_ID.
    Ingest {
        /// A local folder or s3://bucket/prefix.
        store: String,
        /// org/name.
        repo: String,
        /// The repo's folder.
        dir: PathBuf,
        /// The revision to commit.
        #[arg(long, default_value = "main")]
        revision: String,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// zstd level for every part.
        #[arg(long, default_value_t = zipllm::codec::entropy::DEFAULT_LEVEL)]
        level: i32,
        /// Print a JSON report.
        #[arg(long)]
        json: bool,
    },
    /// List repos and revisions.
    Ls {
        /// The store.
        store: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A revision's files: size, sha256, stored bytes and the base each is a delta against.
    Show {
        /// The store.
        store: String,
        /// org/name.
        repo: String,
        /// The revision.
        #[arg(long, default_value = "main")]
        revision: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore a revision's files (or one) byte for byte; each appears once its sha256 checks.
    Restore {
        /// The store.
        store: String,
        /// org/name.
        repo: String,
        /// Where to write the files.
        out_dir: PathBuf,
        /// The revision.
        #[arg(long, default_value = "main")]
        revision: String,
        /// Only this file (its path in the repo).
        #[arg(long)]
        file: Option<String>,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write bytes START-END (end exclusive) of one file to stdout or -o, reading only the
    /// objects they need.
    Cat {
        /// The store.
        store: String,
        /// org/name.
        repo: String,
        /// The file's path in the repo.
        path: String,
        /// The revision.
        #[arg(long, default_value = "main")]
        revision: String,
        /// START-END; the whole file by default.
        #[arg(long)]
        range: Option<String>,
        /// Write here instead of stdout.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Print a JSON summary (bytes, requests) on stdout (needs -o).
        #[arg(long)]
        json: bool,
    },
    /// Bytes at each stage of the pipeline (raw, file dedup, tensor dedup, compressed, stored),
    /// for the store and per family.
    Stats {
        /// The store.
        store: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check everything reachable: every pack's hash and every distinct file's sha256.
    Verify {
        /// The store.
        store: String,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete packs no revision references that are older than the grace period.
    Gc {
        /// The store.
        store: String,
        /// e.g. 7d, 12h, 30m, 0s (default 1h: longer than any ingest in flight).
        #[arg(long, default_value = "1h")]
        grace: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The paper's table for a corpus (scripts/store_corpus.py makes one) next to zstd -3,
    /// chunk dedup + zstd and single-pair deltas, and ingest/restore speeds at 1 and 2 threads.
    Bench {
        /// The corpus folder (with corpus.json).
        corpus: PathBuf,
        /// Scratch folder for the stores (default: a folder in the system's temp dir).
        #[arg(long)]
        work: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The store at hub scale on metadata only: a hub like the paper's 3,048 LLMs run through
    /// the manifest, index, family-lookup, restore-planning and gc code (docs/STORE.md).
    Simulate {
        /// Models in the simulated hub.
        #[arg(long, default_value_t = 3048)]
        models: u64,
        /// Seed of the hub's random choices.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a revision (or every revision of the repo); `gc` reclaims its packs.
    Rm {
        /// The store.
        store: String,
        /// org/name.
        repo: String,
        /// Only this revision.
        #[arg(long)]
        revision: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl StoreCommand {
    /// Whether the command asked for JSON.
    pub fn json(&self) -> bool {
        match self {
            StoreCommand::Ingest { json, .. }
            | StoreCommand::Ls { json, .. }
            | StoreCommand::Show { json, .. }
            | StoreCommand::Restore { json, .. }
            | StoreCommand::Cat { json, .. }
            | StoreCommand::Stats { json, .. }
            | StoreCommand::Verify { json, .. }
            | StoreCommand::Gc { json, .. }
            | StoreCommand::Bench { json, .. }
            | StoreCommand::Simulate { json, .. }
            | StoreCommand::Rm { json, .. } => *json,
        }
    }
}

fn print_json(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Parses `7d`, `12h`, `30m`, `45s` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<u64> {
    let bad = || Error::InvalidInput {
        what: format!("`{s}` is not a duration (e.g. 7d, 12h, 30m, 0s)"),
    };
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

fn parse_range(s: &str) -> Result<std::ops::Range<u64>> {
    let bad = || Error::InvalidInput {
        what: format!("`{s}` is not a byte range START-END"),
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b {
        return Err(bad());
    }
    Ok(a..b)
}

pub fn run(command: StoreCommand) -> Result<()> {
    match command {
        StoreCommand::Ingest {
            store,
            repo,
            dir,
            revision,
            threads,
            level,
            json,
        } => {
            let s = Store::open(&store)?;
            let opts = IngestOptions { revision, level };
            let r = zipllm::native::with_threads(threads, || {
                store::ingest::ingest(&s, &repo, &dir, &opts)
            })??;
            if json {
                print_json(&r);
            } else {
                for f in &r.files {
                    let how = match (&f.outcome[..], &f.base) {
                        ("duplicate", _) => "duplicate of a stored file".to_string(),
                        (_, Some(b)) => format!(
                            "delta against {}/{} ({:.2} bits/element): {} delta, {} cast, {} deduplicated, {} standalone tensors",
                            b.repo, b.path, b.bit_distance, f.tensors.delta, f.tensors.cast, f.tensors.deduplicated, f.tensors.standalone
                        ),
                        _ if f.format == "bytes" => "compressed".to_string(),
                        _ => format!(
                            "no base: {} standalone, {} cast, {} deduplicated tensors",
                            f.tensors.standalone, f.tensors.cast, f.tensors.deduplicated
                        ),
                    };
                    println!(
                        "{:<48} {:>10} -> {:>10}  {how}",
                        f.path,
                        mb(f.size),
                        mb(f.stored_bytes)
                    );
                }
                println!(
                    "{}@{}: {} in, {} added in {} packs, {:.2} s ({:.0} MB/s), {} requests",
                    r.repo,
                    r.revision,
                    mb(r.bytes_in),
                    mb(r.bytes_added),
                    r.packs_written,
                    r.seconds,
                    r.bytes_in as f64 / 1e6 / r.seconds.max(1e-9),
                    r.requests.total()
                );
            }
        }
        StoreCommand::Ls { store, json } => {
            let s = Store::open(&store)?;
            let list = s.ls()?;
            if json {
                print_json(&list);
            } else {
                for r in list {
                    println!(
                        "{:<56} {:<12} {:>4} files {:>12}",
                        r.repo,
                        r.revision,
                        r.files,
                        mb(r.bytes)
                    );
                }
            }
        }
        StoreCommand::Show {
            store,
            repo,
            revision,
            json,
        } => {
            let s = Store::open(&store)?;
            let shown = store::maintain::show(&s, &repo, &revision)?;
            if json {
                print_json(&shown);
            } else {
                for f in &shown.files {
                    let base = f
                        .base
                        .as_ref()
                        .map(|b| {
                            format!(
                                "delta against {}/{} ({:.2} bits/element)",
                                b.repo, b.path, b.bit_distance
                            )
                        })
                        .unwrap_or_default();
                    println!(
                        "{:<48} {:>10} stored {:>10}  {}  {base}",
                        f.path,
                        mb(f.size),
                        mb(f.stored_bytes),
                        &f.sha256[..12]
                    );
                }
            }
        }
        StoreCommand::Restore {
            store,
            repo,
            out_dir,
            revision,
            file,
            threads,
            json,
        } => {
            let s = Store::open(&store)?;
            let r = zipllm::native::with_threads(threads, || {
                store::restore::restore(&s, &repo, &revision, &out_dir, file.as_deref())
            })??;
            if json {
                print_json(&r);
            } else {
                println!(
                    "{} files, {} in {:.2} s ({:.0} MB/s), {} requests, every sha256 checked",
                    r.files.len(),
                    mb(r.bytes),
                    r.seconds,
                    r.bytes as f64 / 1e6 / r.seconds.max(1e-9),
                    r.requests.total()
                );
            }
        }
        StoreCommand::Cat {
            store,
            repo,
            path,
            revision,
            range,
            output,
            json,
        } => {
            let s = Store::open(&store)?;
            let range = match range {
                Some(r) => parse_range(&r)?,
                None => 0..s.manifest(&repo, &revision)?.file(&path)?.size,
            };
            let before = s.objects().requests();
            let bytes = store::restore::read_range(&s, &repo, &revision, &path, range.clone())?;
            let requests = s.objects().requests().since(&before);
            match output {
                Some(o) => zipllm::native::write_atomically(&o, |w| {
                    w.write_all(&bytes)
                        .map_err(|e| Error::io(format!("writing {}", o.display()), e))
                })?,
                None => {
                    use std::io::Write;
                    std::io::stdout()
                        .write_all(&bytes)
                        .map_err(|e| Error::io("writing to stdout", e))?;
                }
            }
            if json {
                print_json(
                    &json!({"bytes": bytes.len(), "start": range.start, "end": range.end, "requests": requests}),
                );
            }
        }
        StoreCommand::Stats { store, json } => {
            let s = Store::open(&store)?;
            let st = store::maintain::stats(&s)?;
            if json {
                print_json(&st);
            } else {
                let raw = st.stages.raw.max(1) as f64;
                let row = |name: &str, b: u64| {
                    println!("{name:<22} {:>12}  {:>6.1}%", mb(b), 100.0 * b as f64 / raw)
                };
                row("raw", st.stages.raw);
                row("after file dedup", st.stages.file_dedup);
                row("after tensor dedup", st.stages.tensor_dedup);
                row("after BitX + zstd", st.stages.compressed);
                row("stored (objects)", st.stored);
                println!(
                    "{} revisions, {} files, {} packs; reduction {:.1}%",
                    st.revisions,
                    st.files,
                    st.packs,
                    100.0 * st.reduction
                );
                println!("families:");
                for f in &st.families {
                    println!(
                        "  {:<60} {:>3} files {:>3} deltas {:>10} -> {:>10}",
                        f.base,
                        f.files,
                        f.deltas,
                        mb(f.stages.raw),
                        mb(f.stages.compressed)
                    );
                }
            }
        }
        StoreCommand::Verify {
            store,
            threads,
            json,
        } => {
            let s = Store::open(&store)?;
            let r = zipllm::native::with_threads(threads, || store::maintain::verify(&s))??;
            if json {
                print_json(&r);
            } else {
                for p in &r.problems {
                    println!(
                        "{}: {} (needed by {})",
                        p.object,
                        p.problem,
                        p.repos.join(", ")
                    );
                }
                println!(
                    "{} manifests, {} packs ({}), {} distinct files restored and checked: {}",
                    r.manifests,
                    r.packs,
                    mb(r.pack_bytes),
                    r.files,
                    if r.ok { "ok" } else { "PROBLEMS" }
                );
            }
            if !r.ok && json {
                // The report above is the answer; the exit status says it failed.
                std::process::exit(zipllm::ErrorCode::StoreCorrupt.exit_status());
            }
            if !r.ok {
                let first = &r.problems[0];
                return Err(Error::StoreCorrupt {
                    object: first.object.clone(),
                    what: format!("{} ({} problem(s) in all)", first.problem, r.problems.len()),
                    repos: first.repos.clone(),
                });
            }
        }
        StoreCommand::Gc { store, grace, json } => {
            let grace = parse_duration(&grace)?;
            let s = Store::open(&store)?;
            let r = store::maintain::gc(&s, grace)?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "{} packs reachable; deleted {} unreferenced ({}); kept {} younger than the grace period",
                    r.reachable,
                    r.deleted,
                    mb(r.deleted_bytes),
                    r.kept_young
                );
            }
        }
        StoreCommand::Bench { corpus, work, json } => {
            let work = work.unwrap_or_else(|| std::env::temp_dir().join("zipllm-store-bench"));
            std::fs::create_dir_all(&work)
                .map_err(|e| Error::io(format!("creating {}", work.display()), e))?;
            let r = store::bench::run(&corpus, &work)?;
            let _ = std::fs::remove_dir_all(&work);
            if json {
                print_json(&r);
            } else {
                print_bench(&r);
            }
        }
        StoreCommand::Simulate { models, seed, json } => {
            // The report is a table of named figures: JSON is its text form too.
            let _ = json;
            print_json(&store::simulate::run(models, seed));
        }
        StoreCommand::Rm {
            store,
            repo,
            revision,
            json,
        } => {
            let s = Store::open(&store)?;
            let removed = store::maintain::rm(&s, &repo, revision.as_deref())?;
            if json {
                print_json(&json!({"repo": repo, "removed": removed}));
            } else {
                println!("removed {repo} revisions: {}", removed.join(", "));
            }
        }
    }
    Ok(())
}

fn print_bench(r: &store::bench::BenchReport) {
    let raw = r.raw.max(1) as f64;
    let st = &r.stats;
    let row = |name: &str, b: u64| {
        println!(
            "| {name:<44} | {:>10} | {:>6.1}% |",
            mb(b),
            100.0 * b as f64 / raw
        )
    };
    println!("| stage (zipllm store) | bytes | of raw |\n|---|---:|---:|");
    row("raw", st.stages.raw);
    row("after file dedup (sha256)", st.stages.file_dedup);
    row("after tensor dedup (BLAKE3)", st.stages.tensor_dedup);
    row("after BitX deltas + compression", st.stages.compressed);
    row("stored (every object, manifests included)", st.stored);
    println!("\n| same files, other ways | bytes | of raw |\n|---|---:|---:|");
    row("zstd -3 of each file", r.zstd3);
    row(
        &format!(
            "FastCDC 64 KiB chunk dedup + zstd -3 ({} chunks)",
            r.cdc_chunks
        ),
        r.cdc_zstd3,
    );
    row("best single-file result per distinct file", r.best_single);
    row("  of which single-pair encode deltas", r.single_pair_deltas);
    println!(
        "\nstored / best single-file: {:.3}   stored / chunk dedup + zstd: {:.3}   bases right: {}",
        st.stored as f64 / r.best_single.max(1) as f64,
        st.stored as f64 / r.cdc_zstd3.max(1) as f64,
        r.bases_right
    );
    let (mr, mc, ms) = r.minilm;
    println!(
        "MiniLM family alone ({}): chunk dedup + zstd -3 {}, store {}: {:.3}",
        mb(mr),
        mb(mc),
        mb(ms),
        ms as f64 / mc.max(1) as f64
    );
    for (repo, path, got, want) in &r.bases {
        println!(
            "  {repo}/{path}: base {} (expected {})",
            got.as_deref().unwrap_or("none"),
            want.as_deref().unwrap_or("none")
        );
    }
    println!(
        "\n| decoding threads | ingest MB/s | ingest MiniLM | restore, fresh handle per repo | \
         restore MiniLM, fresh | restore, one handle | restore MiniLM, one handle | \
         restore MiniLM MB per CPU s (fresh / one) |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for s in &r.speeds {
        let cpu = s
            .restore_minilm_mb_per_cpu_s
            .map_or("n/a".to_string(), |(one, fresh)| {
                format!("{fresh:.0} / {one:.0}")
            });
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {cpu} |",
            s.threads,
            s.ingest_mb_s,
            s.ingest_minilm_mb_s,
            s.restore_cold_mb_s,
            s.restore_cold_minilm_mb_s,
            s.restore_mb_s,
            s.restore_minilm_mb_s
        );
    }
    println!(
        "(restore: a fetch, a hashing and a writing thread run beside the decoding ones; \
         one handle keeps up to {} MiB of decoded parts between repos)",
        crate_budget_mib()
    );
    for (repo, e, d) in &r.single_pair_mb_s {
        println!("single-pair, 1 thread, {repo}: encode {e:.0} MB/s, decode {d:.0} MB/s");
    }
    println!(
        "requests per GB: ingest {:.0}, restore {:.0}; objects per GB stored: {:.1}",
        r.requests_per_gb.0, r.requests_per_gb.1, r.objects_per_gb
    );
}

/// The decoded-part budget a store handle gets, in MiB.
fn crate_budget_mib() -> u64 {
    zipllm::store::decoded::Decoded::from_env().budget() >> 20
}
