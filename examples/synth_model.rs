//! Writes a large synthetic base/fine-tune pair for the bounded-memory test of the npm package:
//! bf16 tensors of 64 MiB, pseudo-random weights, every fourth tensor of the fine-tune with one
//! word in sixteen moved by one unit in the last place. Streams to disk; memory stays small.
//!
//! `cargo run --release --example synth_model -- BASE TARGET GIB [TENSOR_MIB]` (tensors of 64 MiB
//! unless TENSOR_MIB says otherwise; written 64 MiB at a time whatever their size).
use std::io::{BufWriter, Write};

const CHUNK: u64 = 64 << 20;

fn fill(seed: u64, out: &mut [u8]) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for w in out.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Keep the exponent plausible for weights around 0.02: bf16 words 0x3Cxx or 0xBCxx.
        let v = (x & 0x807F_807F_807F_807F) | 0x3C00_3C00_3C00_3C00;
        w.copy_from_slice(&v.to_le_bytes());
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 && args.len() != 5 {
        eprintln!("usage: synth_model BASE TARGET GIB [TENSOR_MIB]");
        std::process::exit(2);
    }
    let gib: f64 = args[3].parse().expect("GIB must be a number");
    let tensor_mib: u64 = args.get(4).map_or(64, |a| {
        a.parse().expect("TENSOR_MIB must be a whole number")
    });
    let tensor: u64 = tensor_mib << 20;
    assert!(tensor % CHUNK == 0, "TENSOR_MIB must be a multiple of 64");
    let count = ((gib * (1u64 << 30) as f64) / tensor as f64).ceil() as u64;
    let mut json = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    for i in 0..count {
        let (a, b) = (i * tensor, (i + 1) * tensor);
        json.push_str(&format!(",\"layers.{i}.weight\":{{\"dtype\":\"BF16\",\"shape\":[{},{}],\"data_offsets\":[{a},{b}]}}", tensor / 2 / 4096, 4096));
    }
    json.push('}');
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut base = BufWriter::with_capacity(8 << 20, std::fs::File::create(&args[1])?);
    let mut target = BufWriter::with_capacity(8 << 20, std::fs::File::create(&args[2])?);
    for w in [&mut base, &mut target] {
        w.write_all(&(json.len() as u64).to_le_bytes())?;
        w.write_all(json.as_bytes())?;
    }
    let mut buf = vec![0u8; CHUNK as usize];
    for i in 0..count {
        for c in 0..tensor / CHUNK {
            // The first chunk of every tensor draws from the tensor's own seed, as before.
            fill((i + 1) + c * 0x1_0000_0000, &mut buf);
            base.write_all(&buf)?;
            if i % 4 == 3 {
                for w in buf.chunks_exact_mut(32) {
                    let u = u16::from_le_bytes([w[0], w[1]]).wrapping_add(1);
                    w[..2].copy_from_slice(&u.to_le_bytes());
                }
            }
            target.write_all(&buf)?;
        }
    }
    base.flush()?;
    target.flush()?;
    println!(
        "{} tensors, {} bytes each file",
        count,
        8 + json.len() as u64 + count * tensor
    );
    Ok(())
}
