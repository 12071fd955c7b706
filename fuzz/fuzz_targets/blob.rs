//! `BlobDecoder::decode(blob, base, word, out)` through both zstd backends: C zstd
//! (`BlobDecoder::new()`, the repository's patched vendor/zstd-sys) and ruzstd
//! (`BlobDecoder::with_decompressor(Decompressor::pure_rust())`). They must agree on Ok/Err and,
//! when Ok, on every output byte.
//!
//! Input layout: `zipllm_fuzz::BlobInput` (flags with word and base, output length ≤ 1 MiB,
//! base pattern, blob). The decoders are kept from one input to the next, as the rebuild keeps
//! its decoder from one piece to the next. A disagreement explained by a known, allowed zstd
//! divergence in one of the blob's streams (`zipllm_fuzz::known_divergence`) passes.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use zipllm::codec::blob::BlobDecoder;
use zipllm::codec::entropy::Decompressor;
use zipllm_fuzz::BlobInput;

struct State {
    c: BlobDecoder,
    rust: BlobDecoder,
    out_c: Vec<u8>,
    out_rust: Vec<u8>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State {
        c: BlobDecoder::new().expect("C zstd decoder"),
        rust: BlobDecoder::with_decompressor(Decompressor::pure_rust()),
        out_c: Vec::new(),
        out_rust: Vec::new(),
    });
}

fuzz_target!(|data: &[u8]| {
    let input = BlobInput::parse(data);
    STATE.with(|s| {
        let s = &mut *s.borrow_mut();
        // The two output buffers start from different bytes, so a byte the decoder leaves
        // unwritten on an Ok shows up as a mismatch.
        s.out_c.resize(input.len, 0);
        s.out_c.fill(0x00);
        s.out_rust.resize(input.len, 0);
        s.out_rust.fill(0xA5);
        let base = input.base.as_deref();
        let rc = s.c.decode(input.blob, base, input.word, &mut s.out_c);
        let rr = s.rust.decode(input.blob, base, input.word, &mut s.out_rust);
        if input.base_wrong_len {
            // A base of the wrong length is a caller error the decoder must refuse, not index past.
            assert!(rc.is_err() && rr.is_err(), "a base of the wrong length was accepted");
        }
        match (&rc, &rr) {
            (Ok(()), Ok(())) => assert!(
                s.out_c == s.out_rust || known_stream_divergence(input.blob),
                "C zstd and ruzstd decode the blob to different bytes"
            ),
            (Err(_), Err(_)) => {}
            _ if known_stream_divergence(input.blob) => {}
            _ => panic!(
                "C zstd and ruzstd disagree: C {:?}, ruzstd {:?} (word {}, len {}, base {})",
                rc.as_ref().err().map(|e| e.to_string()),
                rr.as_ref().err().map(|e| e.to_string()),
                input.word,
                input.len,
                base.is_some()
            ),
        }
    });
});

/// Whether one of the blob's zstd streams shows a known, allowed C/ruzstd divergence
/// (`zipllm_fuzz::known_divergence`), which explains the decoders' disagreement on the blob.
fn known_stream_divergence(blob: &[u8]) -> bool {
    let Ok((header, mut at)) = zipllm::codec::format::BlobHeader::parse(blob) else {
        return false;
    };
    for &(codec, raw, stored) in &header.streams {
        let body = &blob[at..at + stored as usize];
        at += stored as usize;
        if codec == zipllm::codec::entropy::Codec::Zstd && raw <= zipllm_fuzz::MAX_OUT as u64 {
            if zipllm_fuzz::known_divergence(body, raw as usize).is_some() {
                return true;
            }
        }
    }
    false
}
