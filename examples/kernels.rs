//! Profiling aid: the restore path's byte kernels alone (stream join, F32→BF16 cast, sha256) on
//! 64 MiB of pseudo-random words, best of several runs, in GB/s.
//! `cargo run --release --example kernels`
use std::time::Instant;
use zipllm::codec::transform::{join, split, Layout};

fn best(runs: usize, bytes: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    bytes as f64 / 1e9 / best
}

fn main() -> zipllm::Result<()> {
    let n = 64 << 20;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let mut out = vec![0u8; n];
    for (layout, word) in [
        (Layout::Fields, 4),
        (Layout::Fields, 2),
        (Layout::Planes, 4),
        (Layout::Planes, 2),
    ] {
        let streams = split(layout, word, &data)?;
        let refs: Vec<&[u8]> = streams.iter().map(|s| s.as_slice()).collect();
        let gb = best(5, n, || join(layout, word, &refs, &mut out).expect("join"));
        assert_eq!(out, data);
        println!("join {} word {word}: {gb:.2} GB/s", layout.name());
    }
    let mut half = vec![0u8; n / 2];
    let gb = best(5, n / 2, || {
        zipllm::model::cast_f32_bytes_to_bf16(&data, &mut half)
    });
    println!("cast f32→bf16 (output bytes): {gb:.2} GB/s");
    use sha2::Digest as _;
    let gb = best(3, n, || {
        std::hint::black_box(sha2::Sha256::digest(&data));
    });
    println!("sha256: {gb:.2} GB/s");
    Ok(())
}
