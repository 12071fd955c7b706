//! Profiling aid and the bench's native figure: decodes a delta many times in one process, one
//! decoding thread, chunk checks only, and prints the best run.
//! `cargo run --release --example decode_loop -- BASE DELTA [RUNS] [--into]`
//!
//! With `--into`, every run leaves the whole file in one caller-owned buffer, as the wasm
//! package's `rebuild({ into })` does; without it the verified chunks are dropped.
use std::path::PathBuf;
use zipllm::native::{rebuild_mapped, DeltaFile, Mapped, RebuildOptions};

fn main() -> zipllm::Result<()> {
    let args: Vec<String> = std::env::args().filter(|a| a != "--into").collect();
    let into = std::env::args().any(|a| a == "--into");
    if args.len() < 3 {
        eprintln!("usage: decode_loop BASE DELTA [RUNS] [--into]");
        std::process::exit(2);
    }
    let base = Mapped::open(&PathBuf::from(&args[1]))?;
    let delta = DeltaFile::open(&PathBuf::from(&args[2]))?;
    let runs: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(20);
    let options = RebuildOptions {
        threads: Some(1),
        full_hash: false,
        ..Default::default()
    };
    let size = delta.plan.manifest.target_size as usize;
    let mut file = if into { vec![0u8; size] } else { Vec::new() };
    let started = std::time::Instant::now();
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = std::time::Instant::now();
        let mut at = 0;
        rebuild_mapped(base.bytes(), &delta, options, &|_| {}, &mut |bytes| {
            if into {
                file[at..at + bytes.len()].copy_from_slice(bytes);
            }
            at += bytes.len();
            Ok(())
        })?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let secs = started.elapsed().as_secs_f64() / runs as f64;
    let mb = size as f64 / 1e6;
    println!(
        "{:.1} ms per decode, {:.0} MB/s; best {:.0} MB/s",
        secs * 1e3,
        mb / secs,
        mb / best
    );
    Ok(())
}
