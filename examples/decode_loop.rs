//! Profiling aid: decodes a delta many times in one process, one thread, chunk checks only.
//! `cargo run --release --example decode_loop -- BASE DELTA [RUNS]`
use std::path::PathBuf;
use zipllm::native::{rebuild_mapped, DeltaFile, Mapped, RebuildOptions};

fn main() -> zipllm::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: decode_loop BASE DELTA [RUNS]");
        std::process::exit(2);
    }
    let base = Mapped::open(&PathBuf::from(&args[1]))?;
    let delta = DeltaFile::open(&PathBuf::from(&args[2]))?;
    let runs: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(20);
    let options = RebuildOptions {
        threads: Some(1),
        full_hash: false,
    };
    let started = std::time::Instant::now();
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = std::time::Instant::now();
        rebuild_mapped(base.bytes(), &delta, options, &|_| {}, &mut |_| Ok(()))?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    let secs = started.elapsed().as_secs_f64() / runs as f64;
    let mb = delta.plan.manifest.target_size as f64 / 1e6;
    println!(
        "{:.1} ms per decode, {:.0} MB/s; best {:.0} MB/s",
        secs * 1e3,
        mb / secs,
        mb / best
    );
    Ok(())
}
