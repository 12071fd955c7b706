//! Input layouts shared by the fuzz targets and the seed maker (`examples/make_seeds.rs`), so
//! seeds are written exactly as the targets read them.
//!
//! The delta's manifest is protected by blake3(manifest): random mutations of a whole delta
//! never get past that check. Targets that decode deltas therefore take the manifest *body*
//! (and the payload) as separate fields and build the delta themselves with [`delta`], which
//! writes a preamble whose `manifest_len` is the body's length and the correct checksum. Every
//! mutation of the body (including insertions and deletions) then reaches the field checks.

use zipllm::codec::format::{MAGIC, VERSION};

pub mod strict;

/// Largest output a blob or zstd input asks for (1 MiB).
pub const MAX_OUT: usize = 1 << 20;

/// Preamble length of a delta.
pub const PREAMBLE_LEN: usize = 24;

/// A whole delta: preamble (version 1, flags 0, `manifest_len = body.len()`), `body`,
/// blake3(body), `payload`.
pub fn delta(body: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(PREAMBLE_LEN + body.len() + 32 + payload.len());
    d.extend_from_slice(&MAGIC);
    d.extend_from_slice(&VERSION.to_le_bytes());
    d.extend_from_slice(&0u32.to_le_bytes());
    d.extend_from_slice(&(body.len() as u64).to_le_bytes());
    d.extend_from_slice(body);
    d.extend_from_slice(blake3::hash(body).as_bytes());
    d.extend_from_slice(payload);
    d
}

/// Rewrites the manifest checksum of a whole delta in place, when the preamble's
/// `manifest_len` leaves room for it. Returns whether it did.
pub fn fix_checksum(delta: &mut [u8]) -> bool {
    if delta.len() < PREAMBLE_LEN {
        return false;
    }
    let ml = u64::from_le_bytes(delta[16..24].try_into().unwrap());
    let Some(end) = (ml as usize).checked_add(PREAMBLE_LEN) else {
        return false;
    };
    if ml > (delta.len() as u64) || end + 32 > delta.len() {
        return false;
    }
    let sum = blake3::hash(&delta[PREAMBLE_LEN..end]);
    delta[end..end + 32].copy_from_slice(sum.as_bytes());
    true
}

/// Splits a well-formed delta into (manifest body, payload).
pub fn split_delta(delta: &[u8]) -> Option<(&[u8], &[u8])> {
    let ml = u64::from_le_bytes(delta.get(16..24)?.try_into().ok()?) as usize;
    let body = delta.get(PREAMBLE_LEN..PREAMBLE_LEN + ml)?;
    let payload = delta.get(PREAMBLE_LEN + ml + 32..)?;
    Some((body, payload))
}

/// Reads fixed-size fields from the front of an input; running out yields zeros / empty
/// slices, so every input is valid.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }
    pub fn u8(&mut self) -> u8 {
        let b = self.bytes(1);
        b.first().copied().unwrap_or(0)
    }
    /// Little-endian, `n` ≤ 8 bytes.
    pub fn uint(&mut self, n: usize) -> u64 {
        let mut v = [0u8; 8];
        let b = self.bytes(n);
        v[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(v)
    }
    pub fn u32(&mut self) -> u32 {
        self.uint(4) as u32
    }
    /// Up to `n` bytes (fewer if the input ends).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

fn put_uint(out: &mut Vec<u8>, v: u64, n: usize) {
    out.extend_from_slice(&v.to_le_bytes()[..n]);
}

/// `blob` target input:
///
/// ```text
/// u8   flags: bits 0-1 word = 1 << bits; bit 2 a base is given;
///             bit 3 (with bit 2) the base is one word too long (a caller bug, must be an Err)
/// u24  n: output length = (n mod (MAX_OUT / word + 1)) * word
/// u8   k, then k bytes: base pattern, repeated to the base's length (zeros if k = 0)
/// ...  the blob
/// ```
pub struct BlobInput<'a> {
    pub word: usize,
    pub len: usize,
    pub base: Option<Vec<u8>>,
    pub base_wrong_len: bool,
    pub blob: &'a [u8],
}

impl<'a> BlobInput<'a> {
    pub fn parse(data: &'a [u8]) -> Self {
        let mut c = Cursor::new(data);
        let flags = c.u8();
        let word = 1usize << (flags & 3);
        let n = c.uint(3) as usize;
        let len = (n % (MAX_OUT / word + 1)) * word;
        let k = c.u8() as usize;
        let pattern = c.bytes(k);
        let with_base = flags & 4 != 0;
        let base_wrong_len = with_base && flags & 8 != 0;
        let base = with_base.then(|| {
            let blen = len + if base_wrong_len { word } else { 0 };
            if pattern.is_empty() {
                vec![0u8; blen]
            } else {
                pattern.iter().copied().cycle().take(blen).collect()
            }
        });
        BlobInput {
            word,
            len,
            base,
            base_wrong_len,
            blob: c.rest(),
        }
    }

    /// Serializes (for seeds): `base_pattern` None means no base.
    pub fn write(word: usize, len: usize, base_pattern: Option<&[u8]>, blob: &[u8]) -> Vec<u8> {
        assert!(len <= MAX_OUT && len % word == 0);
        let mut out = Vec::new();
        let mut flags = word.trailing_zeros() as u8;
        if base_pattern.is_some() {
            flags |= 4;
        }
        out.push(flags);
        put_uint(&mut out, (len / word) as u64, 3);
        let p = base_pattern.unwrap_or(&[]);
        let p = &p[..p.len().min(255)];
        out.push(p.len() as u8);
        out.extend_from_slice(p);
        out.extend_from_slice(blob);
        out
    }
}

/// `zstd_diff` target input: `u24 n` (output length = n mod (MAX_OUT + 1)), then the frame.
pub struct ZstdInput<'a> {
    pub out_len: usize,
    pub frame: &'a [u8],
}

impl<'a> ZstdInput<'a> {
    pub fn parse(data: &'a [u8]) -> Self {
        let mut c = Cursor::new(data);
        let n = c.uint(3) as usize;
        ZstdInput {
            out_len: n % (MAX_OUT + 1),
            frame: c.rest(),
        }
    }

    pub fn write(out_len: usize, frame: &[u8]) -> Vec<u8> {
        assert!(out_len <= MAX_OUT);
        let mut out = Vec::new();
        put_uint(&mut out, out_len as u64, 3);
        out.extend_from_slice(frame);
        out
    }
}

/// `rebuild` target input:
///
/// ```text
/// u8   s, then s bytes: the schedule (decoded with `arbitrary` by the target)
/// u32  b, then b bytes: the manifest body (fewer if the input ends)
/// u32  p, then p bytes: the payload
/// ...  the base
/// ```
///
/// The delta fed to the decoders is [`delta`]`(body, payload)`: correct preamble and checksum.
pub struct RebuildInput<'a> {
    pub schedule: &'a [u8],
    pub body: &'a [u8],
    pub payload: &'a [u8],
    pub base: &'a [u8],
}

impl<'a> RebuildInput<'a> {
    pub fn parse(data: &'a [u8]) -> Self {
        let mut c = Cursor::new(data);
        let s = c.u8() as usize;
        let schedule = c.bytes(s);
        let b = c.u32() as usize;
        let body = c.bytes(b);
        let p = c.u32() as usize;
        let payload = c.bytes(p);
        RebuildInput {
            schedule,
            body,
            payload,
            base: c.rest(),
        }
    }

    pub fn write(schedule: &[u8], body: &[u8], payload: &[u8], base: &[u8]) -> Vec<u8> {
        assert!(schedule.len() < 256);
        let mut out = vec![schedule.len() as u8];
        out.extend_from_slice(schedule);
        put_uint(&mut out, body.len() as u64, 4);
        out.extend_from_slice(body);
        put_uint(&mut out, payload.len() as u64, 4);
        out.extend_from_slice(payload);
        out.extend_from_slice(base);
        out
    }
}

/// `fingerprint` target input:
///
/// ```text
/// u8   a: sample fraction selector (low 4 bits) and budget share selector (high 4 bits)
/// u8   b: budget max_bytes = 1 << (b & 63); bit 6 unused; bit 7: the rest is a
///         `Fingerprint::to_bytes` file rather than JSON
/// u32  m, then m bytes: a safetensors file (the candidate model)
/// ...  a fingerprint: JSON (serde) or the binary `.fp` layout
/// ```
pub struct FingerprintInput<'a> {
    pub fraction: f64,
    pub share: f64,
    pub max_bytes: u64,
    pub binary: bool,
    pub model: &'a [u8],
    pub fingerprint: &'a [u8],
}

const FRACTIONS: [f64; 16] = [
    0.0,
    0.001,
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    0.99,
    1.0,
    2.0,
    -1.0,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1e-300,
    f64::MAX,
];

impl<'a> FingerprintInput<'a> {
    pub fn parse(data: &'a [u8]) -> Self {
        let mut c = Cursor::new(data);
        let a = c.u8();
        let b = c.u8();
        let m = c.u32() as usize;
        let model = c.bytes(m);
        FingerprintInput {
            fraction: FRACTIONS[(a & 15) as usize],
            share: FRACTIONS[(a >> 4) as usize],
            max_bytes: 1u64 << (b & 63),
            binary: b & 0x80 != 0,
            model,
            fingerprint: c.rest(),
        }
    }

    /// `a`, `b` as documented above.
    pub fn write(a: u8, b: u8, model: &[u8], fingerprint: &[u8]) -> Vec<u8> {
        let mut out = vec![a, b];
        put_uint(&mut out, model.len() as u64, 4);
        out.extend_from_slice(model);
        out.extend_from_slice(fingerprint);
        out
    }
}

/// Known, explained differences between C zstd and ruzstd (as zipllm calls them), found by the
/// `zstd_diff` and `blob` targets (fuzz/README.md, "Findings"). Called when the two disagree
/// on `frame` (Ok/Err, or the bytes); says which known difference explains it, if one does
/// and its name is allowed: `ZIPLLM_FUZZ_ALLOW` is a comma-separated list (default both:
/// `checksum,invalid-frame`), and `ZIPLLM_FUZZ_STRICT=1` allows nothing.
///
/// * `checksum`: the frame carries a content checksum that does not match its content
///   (checked by recomputing it). C zstd refuses the frame; `decompress_rust` does not check
///   checksums and returns the bytes (the chunk checksums still catch them in a rebuild).
/// * `invalid-frame`: the frame breaks the format in a part [`strict`] reads strictly, so each
///   decoder may legitimately refuse it or read it its own way. Seen so far: Huffman literals
///   whose streams do not each decode exactly their share of the literals and end exactly
///   there (C zstd's fast 4-stream loop, x86_64 with BMI2 and 32-bit with the wasm32 vendor
///   patch, only checks that each stream filled its share; ruzstd decodes each stream until
///   its bits run out and only checks the total; C zstd's strict loop checks both, so each may
///   accept or refuse, or both accept with different bytes), and reserved bits set in the
///   sequences' Symbol_Compression_Modes (C zstd refuses, ruzstd ignores them). A frame that
///   reads exactly there and still makes the decoders disagree is never let through.
pub fn known_divergence(frame: &[u8], out_len: usize) -> Option<&'static str> {
    let mut c_out = vec![0u8; out_len];
    let mut r_out = vec![0u8; out_len];
    let c = zipllm::codec::entropy::Decompressor::new()
        .ok()?
        .decompress_into(frame, &mut c_out);
    let mut rust = ruzstd::decoding::FrameDecoder::new();
    let r = zipllm::codec::entropy::decompress_rust(&mut rust, frame, &mut r_out);
    let name = match (&c, &r) {
        (Err(e), Ok(())) if e.to_string().contains("checksum") => {
            let stored = rust.get_checksum_from_data();
            (stored.is_some() && stored != rust.get_calculated_checksum()).then_some("checksum")
        }
        (Err(_), Err(_)) => None,
        (Ok(()), Ok(())) if c_out == r_out => None,
        _ => strict::violation(frame).map(|_| "invalid-frame"),
    }?;
    allowed(name).then_some(name)
}

fn allowed(name: &str) -> bool {
    static ALLOW: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    ALLOW
        .get_or_init(|| {
            if std::env::var("ZIPLLM_FUZZ_STRICT").is_ok_and(|v| v == "1") {
                return Vec::new();
            }
            std::env::var("ZIPLLM_FUZZ_ALLOW")
                .unwrap_or_else(|_| "checksum,invalid-frame".to_string())
                .split(',')
                .map(|s| s.trim().to_string())
                .collect()
        })
        .iter()
        .any(|a| a == name)
}
