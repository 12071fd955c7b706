//! BLAKE3 for the chunk checksums, with a leaf kernel of our own on WebAssembly.
//!
//! Hashing every rebuilt byte is the largest single cost of a rebuild in wasm. The blake3
//! crate's SIMD128 kernel rotates by 8 bits with a byte shuffle, and V8 rebuilds a shuffle's
//! 16-byte mask in a register at every use (four instructions before the `pshufb`). Rotating by
//! shifts instead made the kernel 13-16% faster in V8 (Node 20, measured side by side). So on
//! wasm32 with SIMD128, [`Hasher`] compresses four 1 KiB chunks side by side in that kernel
//! and builds the tree above them with [`blake3::hazmat`]; the result is BLAKE3 exactly.
//! Everywhere else [`Hasher`] is the blake3 crate's own, which has AVX-512 and friends.
//!
//! ```
//! let mut h = zipllm::hash::Hasher::new();
//! h.update(b"hello ");
//! h.update(b"world");
//! assert_eq!(h.finalize(), blake3::hash(b"hello world"));
//! ```

// The tree and the lanes serve the wasm build; natively only the tests use them (as the
// reference for the SIMD lanes, which tests/wasm.rs checks in Chromium).
#![cfg_attr(
    not(all(target_arch = "wasm32", target_feature = "simd128")),
    allow(dead_code)
)]

use blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use blake3::CHUNK_LEN;

/// Incremental BLAKE3 (32-byte output), the same API on every target.
#[derive(Clone)]
pub struct Hasher {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    inner: TreeHasher<simd128::Lanes4>,
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    inner: blake3::Hasher,
}

impl Hasher {
    /// A hasher with no input yet.
    pub fn new() -> Self {
        Hasher {
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            inner: TreeHasher::new(),
            #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
            inner: blake3::Hasher::new(),
        }
    }

    /// Adds input.
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.inner.update(data);
        self
    }

    /// The hash of everything added so far.
    pub fn finalize(&self) -> blake3::Hash {
        self.inner.finalize()
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`FileHasher`] found: a file's size, sha256 (the hub's LFS oid) and blake3, and, when
/// it was asked to, each tensor's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileHashes {
    /// Bytes hashed.
    pub size: u64,
    /// sha256 of the file, hex.
    pub sha256: String,
    /// blake3 of the file, hex.
    pub blake3: String,
    /// Per tensor of a safetensors file, in file order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Vec<TensorHash>>,
}

/// One tensor's identity: the blake3 of its bytes is the key tensors are deduplicated on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TensorHash {
    /// Its name in the header.
    pub name: String,
    /// Its dtype's safetensors name.
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Its length in bytes.
    pub bytes: u64,
    /// blake3 of its bytes, hex.
    pub blake3: String,
}

/// Hashes a file fed in pieces of any size, with no I/O of its own: the whole file's sha256
/// and blake3 and, with [`FileHasher::with_tensors`], the blake3 of every tensor of a
/// safetensors file. Memory: the header (at most the safetensors limit), nothing per byte.
///
/// ```
/// # fn main() -> zipllm::Result<()> {
/// let mut h = zipllm::hash::FileHasher::new();
/// h.update(b"hello ")?;
/// h.update(b"world")?;
/// assert_eq!(h.finish()?.blake3, blake3::hash(b"hello world").to_hex().as_str());
/// # Ok(()) }
/// ```
pub struct FileHasher {
    sha: sha2::Sha256,
    blake: Hasher,
    size: u64,
    tensors: Option<TensorWalk>,
}

/// Where a per-tensor walk is: gathering the header, then inside tensor `current`.
struct TensorWalk {
    header: Vec<u8>,
    model: Option<crate::model::Model>,
    current: usize,
    hasher: Hasher,
    done: Vec<TensorHash>,
}

impl Default for FileHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl FileHasher {
    /// A hasher of whole files.
    pub fn new() -> Self {
        FileHasher {
            sha: sha2::Digest::new(),
            blake: Hasher::new(),
            size: 0,
            tensors: None,
        }
    }

    /// A hasher of safetensors files that also hashes each tensor.
    pub fn with_tensors() -> Self {
        FileHasher {
            tensors: Some(TensorWalk {
                header: Vec::new(),
                model: None,
                current: 0,
                hasher: Hasher::new(),
                done: Vec::new(),
            }),
            ..Self::new()
        }
    }

    /// Adds the file's next bytes. Errors (tensors only) if they are not a safetensors file.
    pub fn update(&mut self, bytes: &[u8]) -> crate::Result<()> {
        sha2::Digest::update(&mut self.sha, bytes);
        self.blake.update(bytes);
        let at = self.size;
        self.size += bytes.len() as u64;
        match &mut self.tensors {
            Some(walk) => walk.update(bytes, at),
            None => Ok(()),
        }
    }

    /// The hashes of everything added; errors if a safetensors file ended early or ran long.
    pub fn finish(self) -> crate::Result<FileHashes> {
        let tensors = match self.tensors {
            Some(walk) => Some(walk.finish(self.size)?),
            None => None,
        };
        Ok(FileHashes {
            size: self.size,
            sha256: crate::codec::rebuild::hex(&sha2::Digest::finalize(self.sha)),
            blake3: self.blake.finalize().to_hex().to_string(),
            tensors,
        })
    }
}

impl TensorWalk {
    /// `bytes` start at file offset `pos`.
    fn update(&mut self, mut bytes: &[u8], mut pos: u64) -> crate::Result<()> {
        use crate::model::{Model, PREFIX_LEN};
        while !bytes.is_empty() {
            let Some(model) = &self.model else {
                // The header region: its 8-byte length first, then the JSON it announces.
                let want = if self.header.len() < PREFIX_LEN as usize {
                    PREFIX_LEN
                } else {
                    Model::header_region_len(&self.header, None)?
                };
                let take = ((want - self.header.len() as u64) as usize).min(bytes.len());
                self.header.extend_from_slice(&bytes[..take]);
                (bytes, pos) = (&bytes[take..], pos + take as u64);
                if self.header.len() as u64 >= PREFIX_LEN
                    && self.header.len() as u64 == Model::header_region_len(&self.header, None)?
                {
                    self.model = Some(Model::parse_header(&self.header, None)?);
                    self.close_empty();
                }
                continue;
            };
            // Tensors tile the data region in file order (Model checks): each byte belongs
            // to the tensor being hashed.
            let Some(t) = model.tensors.get(self.current) else {
                return Err(crate::Error::bad_safetensors(format!(
                    "bytes after the last tensor, at offset {pos}"
                )));
            };
            let take = ((t.end - pos) as usize).min(bytes.len());
            self.hasher.update(&bytes[..take]);
            (bytes, pos) = (&bytes[take..], pos + take as u64);
            if pos == t.end {
                let blake3 = std::mem::take(&mut self.hasher).finalize();
                self.close(blake3);
                self.close_empty();
            }
        }
        Ok(())
    }

    /// Records tensor `current` as hashed.
    fn close(&mut self, blake3: blake3::Hash) {
        if let Some(t) = self
            .model
            .as_ref()
            .and_then(|m| m.tensors.get(self.current))
        {
            self.done.push(TensorHash {
                name: t.name.clone(),
                dtype: t.dtype.name().into(),
                shape: t.shape.clone(),
                bytes: t.len(),
                blake3: blake3.to_hex().to_string(),
            });
            self.current += 1;
        }
    }

    /// Records the empty tensors that come next: no byte will close them.
    fn close_empty(&mut self) {
        while let Some(t) = self
            .model
            .as_ref()
            .and_then(|m| m.tensors.get(self.current))
        {
            if !t.is_empty() {
                break;
            }
            self.close(blake3::hash(&[]));
        }
    }

    fn finish(self, size: u64) -> crate::Result<Vec<TensorHash>> {
        let Some(model) = &self.model else {
            return Err(crate::Error::bad_safetensors(format!(
                "the file ends after {size} bytes, inside its header"
            )));
        };
        if size != model.file_len || self.current != model.tensors.len() {
            return Err(crate::Error::bad_safetensors(format!(
                "the header describes {} bytes but the file has {size}",
                model.file_len
            )));
        }
        Ok(self.done)
    }
}

/// Four 32-bit lanes, one per chunk hashed side by side.
trait Lanes: Copy {
    fn splat(x: u32) -> Self;
    fn from_array(x: [u32; 4]) -> Self;
    fn add(self, o: Self) -> Self;
    fn xor(self, o: Self) -> Self;
    fn rot16(self) -> Self;
    fn rot12(self) -> Self;
    fn rot8(self) -> Self;
    fn rot7(self) -> Self;
    /// Lanes 0 and 2 of `a`, then lanes 0 and 2 of `b`.
    fn evens(a: Self, b: Self) -> Self;
    /// Lanes 1 and 3 of `a`, then lanes 1 and 3 of `b`.
    fn odds(a: Self, b: Self) -> Self;
    /// Message words of one 64-byte block from each of four chunks: word `k` of chunk `i` in
    /// lane `i` of result `k`. `chunks` holds the four chunks back to back.
    fn load_block(chunks: &[u8; 4 * CHUNK_LEN], block: usize) -> [Self; 16];
    /// Chaining values back from lanes to four 32-byte values.
    fn store_cvs(h: [Self; 8]) -> [ChainingValue; 4];
}

const IV: [u32; 8] = [
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
];
const CHUNK_START: u32 = 1;
const CHUNK_END: u32 = 2;
const PARENT: u32 = 4;
const BLOCK_LEN: usize = 64;

#[inline(always)]
fn g<L: Lanes>(v: &mut [L; 16], [a, b, c, d]: [usize; 4], x: L, y: L) {
    v[a] = v[a].add(v[b]).add(x);
    v[d] = v[d].xor(v[a]).rot16();
    v[c] = v[c].add(v[d]);
    v[b] = v[b].xor(v[c]).rot12();
    v[a] = v[a].add(v[b]).add(y);
    v[d] = v[d].xor(v[a]).rot8();
    v[c] = v[c].add(v[d]);
    v[b] = v[b].xor(v[c]).rot7();
}

/// One round: the columns, then the diagonals.
#[inline(always)]
fn round<L: Lanes>(v: &mut [L; 16], m: &[L; 16]) {
    g(v, [0, 4, 8, 12], m[0], m[1]);
    g(v, [1, 5, 9, 13], m[2], m[3]);
    g(v, [2, 6, 10, 14], m[4], m[5]);
    g(v, [3, 7, 11, 15], m[6], m[7]);
    g(v, [0, 5, 10, 15], m[8], m[9]);
    g(v, [1, 6, 11, 12], m[10], m[11]);
    g(v, [2, 7, 8, 13], m[12], m[13]);
    g(v, [3, 4, 9, 14], m[14], m[15]);
}

/// The message word order of the next round (BLAKE3's fixed permutation).
#[inline(always)]
fn permute<L: Lanes>(m: &[L; 16]) -> [L; 16] {
    const P: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
    std::array::from_fn(|i| m[P[i]])
}

/// One compression of four blocks side by side, all with the same length and flags.
#[inline(always)]
fn compress4<L: Lanes>(h: &[L; 8], m: [L; 16], lo: L, hi: L, flags: u32) -> [L; 8] {
    let mut v = [
        h[0],
        h[1],
        h[2],
        h[3],
        h[4],
        h[5],
        h[6],
        h[7],
        L::splat(IV[0]),
        L::splat(IV[1]),
        L::splat(IV[2]),
        L::splat(IV[3]),
        lo,
        hi,
        L::splat(BLOCK_LEN as u32),
        L::splat(flags),
    ];
    // Seven rounds, spelled out: a loop here is left rolled, and the message then goes
    // through memory (10% slower in V8). The last permutation is dead code.
    let mut m = m;
    macro_rules! seven {
        ($($body:tt)*) => {
            $($body)* $($body)* $($body)* $($body)* $($body)* $($body)* $($body)*
        };
    }
    seven! {
        round(&mut v, &m);
        m = permute(&m);
    }
    std::array::from_fn(|i| v[i].xor(v[i + 8]))
}

/// The chaining values of four whole chunks, numbered `counter..counter + 4`, in lanes.
#[inline(always)]
fn hash4<L: Lanes>(chunks: &[u8; 4 * CHUNK_LEN], counter: u64) -> [L; 8] {
    let counters: [u64; 4] = std::array::from_fn(|i| counter + i as u64);
    let lo = L::from_array(counters.map(|c| c as u32));
    let hi = L::from_array(counters.map(|c| (c >> 32) as u32));
    let mut h = IV.map(L::splat);
    let blocks = CHUNK_LEN / BLOCK_LEN;
    for block in 0..blocks {
        let mut flags = 0;
        if block == 0 {
            flags |= CHUNK_START;
        }
        if block == blocks - 1 {
            flags |= CHUNK_END;
        }
        h = compress4(&h, L::load_block(chunks, block), lo, hi, flags);
    }
    h
}

/// Parent nodes of the pairs `(a0, a1)`, `(a2, a3)`, `(b0, b1)`, `(b2, b3)` of chaining values
/// held in lanes, in lanes.
#[inline(always)]
fn parents4<L: Lanes>(a: &[L; 8], b: &[L; 8]) -> [L; 8] {
    let m: [L; 16] = std::array::from_fn(|k| {
        if k < 8 {
            L::evens(a[k], b[k])
        } else {
            L::odds(a[k - 8], b[k - 8])
        }
    });
    let zero = L::splat(0);
    compress4(&IV.map(L::splat), m, zero, zero, PARENT)
}

/// The chaining value of the 16-chunk subtree `chunks`, numbered from `counter` (a multiple
/// of 16): the leaves and the first two levels of parents four at a time, the last two by the
/// crate.
fn hash16<L: Lanes>(chunks: &[u8; 16 * CHUNK_LEN], counter: u64) -> ChainingValue {
    let four = |i: usize| -> [L; 8] {
        let c: &[u8; 4 * CHUNK_LEN] = chunks[i * 4 * CHUNK_LEN..(i + 1) * 4 * CHUNK_LEN]
            .try_into()
            .expect("four chunks");
        hash4(c, counter + 4 * i as u64)
    };
    let pairs_low = parents4(&four(0), &four(1));
    let pairs_high = parents4(&four(2), &four(3));
    let [a, b, c, d] = L::store_cvs(parents4(&pairs_low, &pairs_high));
    merge_subtrees_non_root(
        &merge_subtrees_non_root(&a, &b, Mode::Hash),
        &merge_subtrees_non_root(&c, &d, Mode::Hash),
        Mode::Hash,
    )
}

/// The chaining value of one chunk (or the part of one that ends the input), by the crate.
fn chunk_cv(chunk: &[u8], counter: u64) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(counter * CHUNK_LEN as u64);
    h.update(chunk);
    h.finalize_non_root()
}

/// BLAKE3's tree over chunk chaining values computed four at a time by `L`.
#[derive(Clone)]
struct TreeHasher<L> {
    /// Chaining values of complete subtrees, largest first (at most one per power of two).
    stack: Vec<ChainingValue>,
    /// Chunks merged into `stack` so far.
    chunks: u64,
    /// The chunk being filled: it may be the last one, which alone is finished differently, so
    /// it is held back until more input shows it is not.
    buf: [u8; CHUNK_LEN],
    buf_len: usize,
    lanes: std::marker::PhantomData<L>,
}

impl<L: Lanes> TreeHasher<L> {
    fn new() -> Self {
        TreeHasher {
            stack: Vec::with_capacity(64),
            chunks: 0,
            buf: [0; CHUNK_LEN],
            buf_len: 0,
            lanes: std::marker::PhantomData,
        }
    }

    /// Adds the chaining value of the next `chunks` chunks (a power of two the count so far
    /// is a multiple of). Completed pairs of equal subtrees merge as they form, as in
    /// BLAKE3's reference code; the stack then holds one subtree per bit set in the count.
    fn push(&mut self, cv: ChainingValue, chunks: u64) {
        self.stack.push(cv);
        self.chunks += chunks;
        while self.stack.len() > self.chunks.count_ones() as usize {
            let (Some(right), Some(left)) = (self.stack.pop(), self.stack.pop()) else {
                break;
            };
            self.stack
                .push(merge_subtrees_non_root(&left, &right, Mode::Hash));
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.buf_len == CHUNK_LEN {
                let cv = chunk_cv(&self.buf, self.chunks);
                self.push(cv, 1);
                self.buf_len = 0;
            }
            if self.buf_len == 0 && data.len() > CHUNK_LEN {
                // Whole chunks that more input follows; the last byte stays behind.
                let whole = (data.len() - 1) / CHUNK_LEN;
                let (mut now, rest) = data.split_at(whole * CHUNK_LEN);
                while !now.is_empty() {
                    let aligned =
                        |n: u64| self.chunks % n == 0 && now.len() >= n as usize * CHUNK_LEN;
                    if aligned(16) {
                        let (group, next) = now.split_at(16 * CHUNK_LEN);
                        let cv = hash16::<L>(group.try_into().expect("16 chunks"), self.chunks);
                        self.push(cv, 16);
                        now = next;
                    } else if aligned(4) {
                        let (group, next) = now.split_at(4 * CHUNK_LEN);
                        let lanes = hash4::<L>(group.try_into().expect("4 chunks"), self.chunks);
                        for cv in L::store_cvs(lanes) {
                            self.push(cv, 1);
                        }
                        now = next;
                    } else {
                        let (one, next) = now.split_at(CHUNK_LEN);
                        let cv = chunk_cv(one, self.chunks);
                        self.push(cv, 1);
                        now = next;
                    }
                }
                data = rest;
                continue;
            }
            let take = (CHUNK_LEN - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
        }
    }

    fn finalize(&self) -> blake3::Hash {
        let tail = &self.buf[..self.buf_len];
        let Some((first, rest)) = self.stack.split_first() else {
            // One chunk at most: it is the root.
            return blake3::hash(tail);
        };
        // More than one chunk, so the held-back one is not empty.
        let mut cv = chunk_cv(tail, self.chunks);
        for left in rest.iter().rev() {
            cv = merge_subtrees_non_root(left, &cv, Mode::Hash);
        }
        merge_subtrees_root(first, &cv, Mode::Hash)
    }
}

/// Plain Rust lanes: the reference the SIMD lanes are tested against, through the same tree.
#[cfg(test)]
#[derive(Clone, Copy)]
struct Portable([u32; 4]);

#[cfg(test)]
impl Lanes for Portable {
    fn splat(x: u32) -> Self {
        Portable([x; 4])
    }
    fn from_array(x: [u32; 4]) -> Self {
        Portable(x)
    }
    fn add(self, o: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i].wrapping_add(o.0[i])))
    }
    fn xor(self, o: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] ^ o.0[i]))
    }
    fn evens(a: Self, b: Self) -> Self {
        Portable([a.0[0], a.0[2], b.0[0], b.0[2]])
    }
    fn odds(a: Self, b: Self) -> Self {
        Portable([a.0[1], a.0[3], b.0[1], b.0[3]])
    }
    fn rot16(self) -> Self {
        Portable(self.0.map(|x| x.rotate_right(16)))
    }
    fn rot12(self) -> Self {
        Portable(self.0.map(|x| x.rotate_right(12)))
    }
    fn rot8(self) -> Self {
        Portable(self.0.map(|x| x.rotate_right(8)))
    }
    fn rot7(self) -> Self {
        Portable(self.0.map(|x| x.rotate_right(7)))
    }
    fn load_block(chunks: &[u8; 4 * CHUNK_LEN], block: usize) -> [Self; 16] {
        std::array::from_fn(|k| {
            Portable(std::array::from_fn(|i| {
                let at = i * CHUNK_LEN + block * BLOCK_LEN + 4 * k;
                u32::from_le_bytes(chunks[at..at + 4].try_into().expect("4 bytes"))
            }))
        })
    }
    fn store_cvs(h: [Self; 8]) -> [ChainingValue; 4] {
        std::array::from_fn(|i| {
            let mut cv = [0u8; 32];
            for (k, w) in h.iter().enumerate() {
                cv[4 * k..4 * k + 4].copy_from_slice(&w.0[i].to_le_bytes());
            }
            cv
        })
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use super::{ChainingValue, BLOCK_LEN, CHUNK_LEN};
    use std::arch::wasm32::*;

    #[derive(Clone, Copy)]
    pub(super) struct Lanes4(v128);

    /// `[a0 b0 c0 d0] .. [a3 b3 c3 d3]` from rows `a`, `b`, `c`, `d`.
    #[inline(always)]
    fn transpose([a, b, c, d]: [v128; 4]) -> [v128; 4] {
        let ab_lo = i32x4_shuffle::<0, 4, 1, 5>(a, b);
        let ab_hi = i32x4_shuffle::<2, 6, 3, 7>(a, b);
        let cd_lo = i32x4_shuffle::<0, 4, 1, 5>(c, d);
        let cd_hi = i32x4_shuffle::<2, 6, 3, 7>(c, d);
        [
            i64x2_shuffle::<0, 2>(ab_lo, cd_lo),
            i64x2_shuffle::<1, 3>(ab_lo, cd_lo),
            i64x2_shuffle::<0, 2>(ab_hi, cd_hi),
            i64x2_shuffle::<1, 3>(ab_hi, cd_hi),
        ]
    }

    #[inline(always)]
    fn rotr<const R: u32, const L: u32>(a: v128) -> v128 {
        v128_or(u32x4_shr(a, R), u32x4_shl(a, L))
    }

    impl super::Lanes for Lanes4 {
        #[inline(always)]
        fn splat(x: u32) -> Self {
            Lanes4(u32x4_splat(x))
        }
        #[inline(always)]
        fn from_array([a, b, c, d]: [u32; 4]) -> Self {
            Lanes4(u32x4(a, b, c, d))
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            Lanes4(i32x4_add(self.0, o.0))
        }
        #[inline(always)]
        fn xor(self, o: Self) -> Self {
            Lanes4(v128_xor(self.0, o.0))
        }
        #[inline(always)]
        fn evens(a: Self, b: Self) -> Self {
            Lanes4(i32x4_shuffle::<0, 2, 4, 6>(a.0, b.0))
        }
        #[inline(always)]
        fn odds(a: Self, b: Self) -> Self {
            Lanes4(i32x4_shuffle::<1, 3, 5, 7>(a.0, b.0))
        }
        #[inline(always)]
        fn rot16(self) -> Self {
            // V8 lowers this half-word swap to pshuflw + pshufhw, no mask to build.
            Lanes4(i8x16_shuffle::<
                2,
                3,
                0,
                1,
                6,
                7,
                4,
                5,
                10,
                11,
                8,
                9,
                14,
                15,
                12,
                13,
            >(self.0, self.0))
        }
        #[inline(always)]
        fn rot12(self) -> Self {
            Lanes4(rotr::<12, 20>(self.0))
        }
        #[inline(always)]
        fn rot8(self) -> Self {
            Lanes4(rotr::<8, 24>(self.0))
        }
        #[inline(always)]
        fn rot7(self) -> Self {
            Lanes4(rotr::<7, 25>(self.0))
        }
        #[inline(always)]
        fn load_block(chunks: &[u8; 4 * CHUNK_LEN], block: usize) -> [Self; 16] {
            let row = |i: usize, q: usize| {
                let at = i * CHUNK_LEN + block * BLOCK_LEN + 16 * q;
                let bytes: &[u8; 16] = chunks[at..at + 16].try_into().expect("16 bytes");
                // SAFETY: an unaligned 16-byte load from a 16-byte array.
                unsafe { v128_load(bytes.as_ptr() as *const v128) }
            };
            let mut m = [Lanes4(u32x4_splat(0)); 16];
            for q in 0..4 {
                let t = transpose([row(0, q), row(1, q), row(2, q), row(3, q)]);
                for (k, v) in t.into_iter().enumerate() {
                    m[4 * q + k] = Lanes4(v);
                }
            }
            m
        }
        #[inline(always)]
        fn store_cvs(h: [Self; 8]) -> [ChainingValue; 4] {
            let lo = transpose([h[0].0, h[1].0, h[2].0, h[3].0]);
            let hi = transpose([h[4].0, h[5].0, h[6].0, h[7].0]);
            std::array::from_fn(|i| {
                let mut cv = [0u8; 32];
                // SAFETY: two unaligned 16-byte stores into a 32-byte array.
                unsafe {
                    v128_store(cv.as_mut_ptr() as *mut v128, lo[i]);
                    v128_store(cv.as_mut_ptr().add(16) as *mut v128, hi[i]);
                }
                cv
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    /// Lengths around every boundary the tree and the four-chunk kernel care about.
    fn lengths() -> Vec<usize> {
        let mut v = vec![0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 3071, 3072, 3073];
        for chunks in [
            4, 5, 7, 8, 9, 12, 15, 16, 17, 20, 31, 32, 33, 48, 64, 100, 259,
        ] {
            for d in [-1i64, 0, 1] {
                v.push((chunks * CHUNK_LEN as i64 + d) as usize);
            }
        }
        v.push(4 << 20);
        v.push((4 << 20) + 12345);
        v
    }

    fn check<L: Lanes>(tag: &str) {
        for len in lengths() {
            let data = input(len);
            let want = blake3::hash(&data);
            let mut whole = TreeHasher::<L>::new();
            whole.update(&data);
            assert_eq!(whole.finalize(), want, "{tag}: {len} bytes in one update");
            // Uneven pieces: the held-back chunk, partial chunks and runs of four all mix.
            for step in [1000, 1024, 3 * 1024, 4096, 5000, 17 * 1024, 70_001, 200_000] {
                let mut h = TreeHasher::<L>::new();
                for piece in data.chunks(step) {
                    h.update(piece);
                }
                assert_eq!(h.finalize(), want, "{tag}: {len} bytes in pieces of {step}");
            }
        }
    }

    #[test]
    fn portable_lanes_give_blake3() {
        check::<Portable>("portable");
    }

    #[test]
    fn public_hasher_gives_blake3() {
        let data = input(300_000);
        let mut h = Hasher::new();
        for piece in data.chunks(777) {
            h.update(piece);
        }
        assert_eq!(h.finalize(), blake3::hash(&data));
    }
}
