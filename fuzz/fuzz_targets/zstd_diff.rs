//! Differential zstd: one fuzzed frame into an output of a fuzzed exact length (≤ 1 MiB),
//! decoded by C zstd (`Decompressor::new()`: the repository's patched vendor/zstd-sys; built
//! with `-D__wasm32__` for i686 by scripts/fuzz.sh to take the wasm32-only 64-bit-container
//! path) and by ruzstd (`entropy::decompress_rust`). Both must say Ok with the same bytes, or
//! both Err.
//!
//! Input layout: `zipllm_fuzz::ZstdInput` (u24 output length, then the frame).
//!
//! Divergences explained and allowed by `ZIPLLM_FUZZ_ALLOW` pass (`zipllm_fuzz::known_divergence`:
//! by default a wrong content checksum, which ruzstd does not check, and Huffman literals that
//! break the format, which each decoder reads with its own leniency); any other is a crash.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use zipllm::codec::entropy::{decompress_rust, Decompressor};
use zipllm_fuzz::ZstdInput;

struct State {
    c: Decompressor,
    rust: ruzstd::decoding::FrameDecoder,
    out_c: Vec<u8>,
    out_rust: Vec<u8>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State {
        c: Decompressor::new().expect("C zstd decoder"),
        rust: ruzstd::decoding::FrameDecoder::new(),
        out_c: Vec::new(),
        out_rust: Vec::new(),
    });
}

fuzz_target!(|data: &[u8]| {
    let input = ZstdInput::parse(data);
    STATE.with(|s| {
        let s = &mut *s.borrow_mut();
        s.out_c.resize(input.out_len, 0);
        s.out_c.fill(0x00);
        s.out_rust.resize(input.out_len, 0);
        s.out_rust.fill(0xA5);
        let rc = s.c.decompress_into(input.frame, &mut s.out_c);
        let rr = decompress_rust(&mut s.rust, input.frame, &mut s.out_rust);
        match (&rc, &rr) {
            (Ok(()), Ok(())) => {
                if s.out_c != s.out_rust
                    && zipllm_fuzz::known_divergence(input.frame, input.out_len).is_none()
                {
                    let at = s.out_c.iter().zip(&s.out_rust).position(|(a, b)| a != b);
                    panic!(
                        "C zstd and ruzstd decode the frame to different bytes (first difference at {at:?} of {})",
                        input.out_len
                    );
                }
            }
            (Err(_), Err(_)) => {}
            _ if zipllm_fuzz::known_divergence(input.frame, input.out_len).is_some() => {}
            _ => panic!(
                "C zstd and ruzstd disagree on a frame into {} bytes: C {:?}, ruzstd {:?}",
                input.out_len,
                rc.as_ref().err().map(|e| e.to_string()),
                rr.as_ref().err().map(|e| e.to_string()),
            ),
        }
    });
});
