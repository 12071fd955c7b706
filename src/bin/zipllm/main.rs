//! The `zipllm` command: encode, decode, verify and inspect deltas; benchmark a pair.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

mod store;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use zipllm::native::{self, DeltaFile, Mapped};
use zipllm::{EncodeOptions, Error, Result, Strategy};

#[derive(Parser)]
#[command(
    name = "zipllm",
    version,
    about = "Rebuild fine-tuned safetensors byte for byte from a base model plus a small delta",
    after_help = "Exit status: 0 ok, 1 I/O error, 2 bad arguments or inputs, 3 malformed safetensors, \
                  4 corrupt or truncated delta, 5 unsupported delta version, 6 wrong base, \
                  7 the delta rebuilds another file than --expect-sha256, 8 a store object is missing or \
                  corrupt, 9 no such repo, revision or file in the store, 10 the object store \
                  failed a request, 70 internal error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a delta that rebuilds TARGET from BASE.
    Encode {
        /// The base model the fine-tune came from, or a folder of candidate bases: the best
        /// related one is picked (see `zipllm match`).
        #[arg(long)]
        base: PathBuf,
        /// The fine-tuned model.
        #[arg(long)]
        target: PathBuf,
        /// Where to write the delta.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// zstd level (1-22).
        #[arg(long, default_value_t = zipllm::codec::entropy::DEFAULT_LEVEL)]
        level: i32,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// auto (default), bitx (XOR + byte planes), bitx-fields (the paper's field split), best.
        #[arg(long, default_value = "auto")]
        strategy: String,
        /// Largest piece of a tensor coded as one unit, in KiB (a multiple of 8 KiB... any
        /// multiple of 8 bytes works; smaller pieces decode with hotter caches).
        #[arg(long, default_value_t = EncodeOptions::default().piece_len / 1024)]
        piece_kib: u64,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the fine-tune from BASE and DELTA; the output appears only once fully verified.
    Decode {
        /// The base model the delta was made against.
        #[arg(long)]
        base: PathBuf,
        /// The delta.
        delta: PathBuf,
        /// Where to write the rebuilt file.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Skip re-hashing the whole output (sha256, blake3); every chunk is still checked.
        #[arg(long)]
        no_full_hash: bool,
        /// The sha256 the rebuilt file must have (the hub's LFS oid, 64 hex digits): a delta for
        /// another file is refused before anything is decoded, and the output is hashed and
        /// compared. Cannot be combined with --no-full-hash.
        #[arg(long, value_name = "HEX", conflicts_with = "no_full_hash")]
        expect_sha256: Option<String>,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild in memory and check every checksum, writing nothing.
    Verify {
        /// The base model the delta was made against.
        #[arg(long)]
        base: PathBuf,
        /// The delta.
        delta: PathBuf,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Skip re-hashing the whole output (sha256, blake3); every chunk is still checked.
        #[arg(long)]
        no_full_hash: bool,
        /// The sha256 the rebuilt file must have (the hub's LFS oid, 64 hex digits): a delta for
        /// another file is refused before anything is decoded, and the output is hashed and
        /// compared. Cannot be combined with --no-full-hash.
        #[arg(long, value_name = "HEX", conflicts_with = "no_full_hash")]
        expect_sha256: Option<String>,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Show what a delta holds: sizes before and after by tensor kind, dtype and method.
    Inspect {
        /// The delta.
        delta: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure sizes and speeds on one pair, side by side with BitX, the paper's layout and zstd.
    Bench {
        /// The base model.
        #[arg(long)]
        base: PathBuf,
        /// The fine-tuned model.
        #[arg(long)]
        target: PathBuf,
        /// zstd level of our delta.
        #[arg(long, default_value_t = zipllm::codec::entropy::DEFAULT_LEVEL)]
        level: i32,
        /// Threads for the "all threads" figures (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Timed runs per figure (the best is kept).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tell which candidate base TARGET was fine-tuned from: related, unrelated or incompatible.
    Match {
        /// The fine-tuned model, or its fingerprint (`zipllm fingerprint`).
        #[arg(long)]
        target: PathBuf,
        /// Candidate bases (files, or folders of .safetensors files).
        #[arg(required = true)]
        candidates: Vec<PathBuf>,
        /// Compare every element instead of a sample (reads both files whole).
        #[arg(long)]
        exact: bool,
        /// Most bytes of the target to sample, in KiB (also capped at 1% of the file).
        #[arg(long, default_value_t = 2048)]
        sample_kib: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Save a model's fingerprint (header table and sampled blocks) for later matching.
    Fingerprint {
        /// The model.
        model: PathBuf,
        /// Where to write the fingerprint.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Every byte instead of a sample.
        #[arg(long)]
        exact: bool,
        /// Most bytes to sample, in KiB (also capped at 1% of the file).
        #[arg(long, default_value_t = 2048)]
        sample_kib: u64,
    },
    /// The hub store: many repos on a folder or S3, each tensor kept once (docs/STORE.md).
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Write a copy of a model with every F32 tensor cast to BF16 (round to nearest even).
    Cast {
        /// The model to cast.
        input: PathBuf,
        /// Where to write the bf16 model.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:8} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

fn file_len(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Store { command } => store::run(command)?,
        Command::Encode {
            base,
            target,
            output,
            level,
            threads,
            strategy,
            piece_kib,
            json,
        } => {
            let strategy = Strategy::from_name(&strategy).ok_or_else(|| Error::InvalidInput {
                what: format!("unknown strategy `{strategy}`"),
            })?;
            let options = EncodeOptions {
                level,
                strategy,
                piece_len: piece_kib * 1024,
                ..Default::default()
            };
            let base = if base.is_dir() {
                pick_base(&base, &target)?
            } else {
                base
            };
            let total = file_len(&target)?;
            let pb = bar(total, "encode");
            let started = Instant::now();
            let delta = native::encode_files(&base, &target, &options, threads, &|n| pb.inc(n))?;
            native::write_atomically(&output, |w| delta.write_to(w).map(|_| ()))?;
            pb.finish_and_clear();
            let secs = started.elapsed().as_secs_f64();
            let written = file_len(&output)?;
            let sha = zipllm::codec::rebuild::hex(&delta.manifest.target_sha256);
            if json {
                println!(
                    "{}",
                    json!({"delta": output, "delta_bytes": written, "target_bytes": total,
                           "ratio": written as f64 / total.max(1) as f64, "target_sha256": sha,
                           "seconds": secs, "mb_per_s": total as f64 / 1e6 / secs.max(1e-9)})
                );
            } else {
                println!(
                    "{}: {} ({:.3} of the {} target) in {:.2} s ({:.0} MB/s); target sha256 {sha}",
                    output.display(),
                    mb(written),
                    written as f64 / total.max(1) as f64,
                    mb(total),
                    secs,
                    total as f64 / 1e6 / secs.max(1e-9)
                );
            }
        }
        Command::Decode {
            base,
            delta,
            output,
            threads,
            no_full_hash,
            expect_sha256,
            json,
        } => {
            let total = DeltaFile::open(&delta)?.plan.manifest.target_size;
            let pb = bar(total, "decode");
            let started = Instant::now();
            let options = native::RebuildOptions {
                threads,
                full_hash: !no_full_hash,
                expect_sha256: expect_sha256.as_deref().map(parse_sha256).transpose()?,
            };
            let summary = native::rebuild_to_file(&base, &delta, &output, options, &|n| pb.inc(n))?;
            pb.finish_and_clear();
            report_rebuild(Some(&output), &summary, started, json);
        }
        Command::Verify {
            base,
            delta,
            threads,
            no_full_hash,
            expect_sha256,
            json,
        } => {
            let total = DeltaFile::open(&delta)?.plan.manifest.target_size;
            let pb = bar(total, "verify");
            let started = Instant::now();
            let options = native::RebuildOptions {
                threads,
                full_hash: !no_full_hash,
                expect_sha256: expect_sha256.as_deref().map(parse_sha256).transpose()?,
            };
            let summary = native::rebuild(&base, &delta, options, &|n| pb.inc(n), &mut |_| Ok(()))?;
            pb.finish_and_clear();
            report_rebuild(None, &summary, started, json);
        }
        Command::Inspect { delta, json } => {
            let d = DeltaFile::open(&delta)?;
            let report = zipllm::codec::inspect::report(&d.plan, |b| d.blob(b))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print_inspect(&report);
            }
        }
        Command::Bench {
            base,
            target,
            level,
            threads,
            runs,
            json,
        } => {
            let b = Mapped::open(&base)?;
            let t = Mapped::open(&target)?;
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let r = zipllm::native::bench::run(b.bytes(), t.bytes(), level, threads, runs)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print_bench(&r);
            }
        }
        Command::Match {
            target,
            candidates,
            exact,
            sample_kib,
            json,
        } => {
            let verdicts = match_candidates(&target, &candidates, exact, sample_kib * 1024)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&verdicts).unwrap_or_default()
                );
            } else {
                println!(
                    "{:<40} {:<13} {:>9} {:>9} {:>10}  reason",
                    "candidate", "verdict", "bits/el", "norm.", "confidence"
                );
                for v in &verdicts {
                    println!(
                        "{:<40} {:<13} {:>9} {:>9} {:>10.3}  {}",
                        v.candidate,
                        v.verdict,
                        v.bit_distance.map_or("-".into(), |d| format!("{d:.3}")),
                        v.normalized_distance
                            .map_or("-".into(), |d| format!("{d:.3}")),
                        v.confidence,
                        v.reason
                    );
                }
            }
        }
        Command::Fingerprint {
            model,
            output,
            exact,
            sample_kib,
        } => {
            let fp = native::fingerprint_file(&model, sample_kib * 1024, 0.01, exact)?;
            native::write_atomically(&output, |w| {
                let bytes = fp.to_bytes()?;
                std::io::Write::write_all(w, &bytes)
                    .map_err(|e| Error::io(format!("writing {}", output.display()), e))
            })?;
            println!(
                "{}: {} samples, {} of {} bytes read",
                output.display(),
                fp.samples.len(),
                fp.bytes_read,
                fp.file_len
            );
        }
        Command::Cast { input, output } => {
            let m = Mapped::open(&input)?;
            native::write_atomically(&output, |w| zipllm::model::cast_f32_to_bf16(m.bytes(), w))?;
            println!("{}: {}", output.display(), mb(file_len(&output)?));
        }
    }
    Ok(())
}

/// Fingerprints `target` once and ranks every candidate (folders expanded to their files).
fn match_candidates(
    target: &Path,
    candidates: &[PathBuf],
    exact: bool,
    max_bytes: u64,
) -> Result<Vec<zipllm::family::Verdict>> {
    let mut magic = [0u8; 8];
    let is_fingerprint = std::fs::File::open(target)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|_| &magic == zipllm::family::FINGERPRINT_MAGIC);
    let fp = if is_fingerprint {
        let bytes = std::fs::read(target)
            .map_err(|e| Error::io(format!("reading {}", target.display()), e))?;
        zipllm::family::Fingerprint::from_bytes(&bytes)?
    } else {
        native::fingerprint_file(target, max_bytes, 0.01, exact)?
    };
    let mut verdicts = Vec::new();
    for c in candidates {
        let files = if c.is_dir() {
            native::safetensors_in(c)?
        } else {
            vec![c.clone()]
        };
        for f in files {
            if f == target {
                continue;
            }
            let name = if c.is_dir() {
                f.display().to_string()
            } else {
                c.display().to_string()
            };
            verdicts.push(native::compare_file(&name, &fp, &f)?);
        }
    }
    zipllm::family::rank(&mut verdicts);
    Ok(verdicts)
}

/// The best related base in `dir` for `target`, said on stderr.
fn pick_base(dir: &Path, target: &Path) -> Result<PathBuf> {
    let verdicts = match_candidates(target, &[dir.to_path_buf()], false, 2 << 20)?;
    match verdicts.first().filter(|v| v.verdict == "related") {
        Some(v) => {
            eprintln!(
                "zipllm: picked base {} ({} differing bits per bit, threshold {}, confidence {:.3})",
                v.candidate,
                v.normalized_distance.map_or("?".into(), |d| format!("{d:.3}")),
                v.threshold,
                v.confidence
            );
            Ok(PathBuf::from(&v.candidate))
        }
        None => Err(Error::InvalidInput {
            what: format!(
                "no base in {} is related to {}: {}",
                dir.display(),
                target.display(),
                verdicts
                    .iter()
                    .map(|v| format!("{} is {} ({})", v.candidate, v.verdict, v.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }),
    }
}

/// Parses a sha256 given in hex (the hub's LFS oid).
fn parse_sha256(hex: &str) -> Result<[u8; 32]> {
    let bad = || Error::InvalidInput {
        what: format!("--expect-sha256 takes 64 hex digits, not `{hex}`"),
    };
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn report_rebuild(output: Option<&Path>, s: &zipllm::Summary, started: Instant, json: bool) {
    let secs = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            json!({"output": output, "bytes": s.size, "sha256": s.sha256, "blake3": s.blake3,
                   "verified": true, "full_hash_checked": s.full_hash_checked, "seconds": secs})
        );
    } else {
        let what = output.map_or("verified".to_string(), |p| format!("{}:", p.display()));
        let how = if s.full_hash_checked {
            "verified"
        } else {
            "as recorded (every chunk verified, the whole file not re-hashed)"
        };
        println!(
            "{what} {} bytes, sha256 {} {how} in {:.2} s ({:.0} MB/s)",
            s.size,
            s.sha256,
            secs,
            s.size as f64 / 1e6 / secs.max(1e-9)
        );
    }
}

fn print_inspect(r: &zipllm::codec::inspect::Report) {
    println!("format version {}", r.format_version);
    println!(
        "delta     {:>14} bytes   ratio {:.4}",
        r.delta_bytes, r.ratio
    );
    println!(
        "target    {:>14} bytes   sha256 {}",
        r.target_bytes, r.target_sha256
    );
    println!(
        "base      {:>14} bytes   header blake3 {}",
        r.base_bytes, r.base_header_blake3
    );
    println!(
        "{} tensors, {} pieces, {} blobs, {} chunks, {} header bytes",
        r.tensors, r.pieces, r.blobs, r.chunks, r.header_bytes
    );
    for (title, table) in [
        ("kind", &r.by_kind),
        ("dtype", &r.by_dtype),
        ("method", &r.by_method),
    ] {
        println!(
            "\n{title:<24} {:>7} {:>14} {:>14} {:>8}",
            "count", "before", "after", "ratio"
        );
        for (name, s) in table.iter() {
            println!(
                "{name:<24} {:>7} {:>14} {:>14} {:>8.4}",
                s.count, s.before, s.after, s.ratio
            );
        }
    }
}

fn print_bench(r: &zipllm::native::bench::BenchReport) {
    let n = r.target_bytes as f64;
    println!("fine-tune: {} bytes", r.target_bytes);
    println!("{:<40} {:>12} {:>8}", "size", "bytes", "ratio");
    for (name, b) in [
        (
            format!("zipllm (diff+sparse-planes, zstd-{})", r.level),
            r.ours_bytes,
        ),
        (
            "BitX byte planes in zipllm container".to_string(),
            r.bitx_planes_bytes,
        ),
        (
            "paper layout (XOR fields, zstd-3)".to_string(),
            r.paper_layout_bytes,
        ),
        ("zstd -3 of the fine-tune".to_string(), r.zstd3_bytes),
    ] {
        println!("{name:<40} {b:>12} {:>8.4}", b as f64 / n);
    }
    println!("zipllm / paper layout: {:.3}", r.ours_vs_paper);
    println!("\nper dtype, whole tensors, zstd-3 (bytes):");
    for (dtype, row) in &r.methods_by_dtype {
        let cells: Vec<String> = row.iter().map(|(m, b)| format!("{m} {b}")).collect();
        println!("  {dtype}: {}", cells.join(", "));
    }
    println!(
        "\nspeed (MB/s of fine-tune)      1 thread   {} threads",
        r.threads
    );
    println!(
        "encode                       {:>10.0} {:>10.0}",
        r.encode_mb_s_1, r.encode_mb_s_all
    );
    println!(
        "decode (chunk checksums)     {:>10.0} {:>10.0}",
        r.decode_mb_s_1, r.decode_mb_s_all
    );
    println!(
        "decode + whole-file sha256   {:>10.0}",
        r.decode_full_hash_mb_s_1
    );
    println!("zstd -d of zstd -3 fine-tune {:>10.0}", r.zstd_decode_mb_s);
    println!("decode time / zstd -d time: {:.2}", r.decode_time_vs_zstd);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = matches!(
        &cli.command,
        Command::Encode { json: true, .. }
            | Command::Decode { json: true, .. }
            | Command::Verify { json: true, .. }
            | Command::Inspect { json: true, .. }
            | Command::Bench { json: true, .. }
            | Command::Match { json: true, .. }
    ) || matches!(&cli.command, Command::Store { command } if command.json());
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    json!({"error": {"code": e.code().as_str(), "message": e.to_string()}})
                );
            }
            eprintln!("zipllm: error: {e}");
            ExitCode::from(e.code().exit_status() as u8)
        }
    }
}
