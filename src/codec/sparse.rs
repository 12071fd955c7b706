//! The hot path: [`Layout::SparsePlanes`](crate::codec::transform::Layout) fused with its transform.
//!
//! Encoding computes each residual word, appends it to a packed array when non-zero and sets
//! its mask bit, in one branch-free pass. Decoding works in blocks of 512 words: a block whose
//! mask is all zero is a plain copy of the base; otherwise, for 2- and 4-byte words on x86
//! (SSSE3) and wasm32 (SIMD128), each mask byte's 8 words are interleaved from the planes,
//! shuffled into the lanes the mask selects and combined with the base in registers. Elsewhere,
//! and for the last few words of a piece, a scalar loop *expands* the non-zero words into a
//! dense block that is then *applied* to the base in a loop the compiler vectorizes.

use crate::codec::transform::{check_words, stream_lengths, Layout, Transform, Word};
use crate::error::{Error, Result};

fn forward_words<W: Word>(f: impl Fn(W, W) -> W, target: &[u8], base: &[u8]) -> Vec<Vec<u8>> {
    let n = target.len() / W::BYTES;
    let mut mask = vec![0u8; n.div_ceil(8)];
    let mut packed = vec![W::default(); n + 1];
    let mut j = 0usize;
    for (i, (t, b)) in target
        .chunks_exact(W::BYTES)
        .zip(base.chunks_exact(W::BYTES))
        .enumerate()
    {
        let z = f(W::load(t), W::load(b));
        let nz = z != W::default();
        packed[j] = z;
        j += nz as usize;
        mask[i >> 3] |= (nz as u8) << (i & 7);
    }
    let mut streams = Vec::with_capacity(W::BYTES + 1);
    streams.push(mask);
    for k in 0..W::BYTES {
        streams.push(packed[..j].iter().map(|w| w.byte(k)).collect());
    }
    streams
}

/// Residual and split into [`Layout::SparsePlanes`] streams in one pass: `[mask, plane 0, …]`.
pub fn sparse_forward(
    t: Transform,
    word: usize,
    target: &[u8],
    base: &[u8],
) -> Result<Vec<Vec<u8>>> {
    check_words(word, target.len())?;
    let base = if t == Transform::None { target } else { base };
    if base.len() != target.len() {
        return Err(Error::invalid("target and base lengths differ"));
    }
    macro_rules! run {
        ($ty:ty) => {
            match t {
                Transform::None => forward_words::<$ty>(|a, _| a, target, base),
                Transform::Xor => forward_words::<$ty>(|a, b| a.xor(b), target, base),
                Transform::Diff => forward_words::<$ty>(|a, b| a.diff(b), target, base),
            }
        };
    }
    Ok(match word {
        1 => run!(u8),
        2 => run!(u16),
        4 => run!(u32),
        _ => run!(u64),
    })
}

/// Words per decoding block (a multiple of 8: one mask byte covers 8 words).
const BLOCK: usize = 512;

/// Reads non-zero word `j` from the planes.
#[inline(always)]
fn gather<W: Word>(planes: &[&[u8]], j: usize) -> W {
    let mut bytes = [0u8; 8];
    for (k, plane) in planes.iter().enumerate().take(W::BYTES) {
        bytes[k] = plane[j];
    }
    W::load(&bytes)
}

/// Expands one mask byte's 8 words from the planes, starting at non-zero word `*j`, into `z`.
#[inline(always)]
fn expand_byte<W: Word>(m: u8, planes: &[&[u8]], j: &mut usize, z: &mut [W]) {
    match m {
        0 => z[..8].fill(W::default()),
        0xFF => {
            for (i, slot) in z[..8].iter_mut().enumerate() {
                *slot = gather(planes, *j + i);
            }
            *j += 8;
        }
        _ => {
            for (bit, slot) in z[..8].iter_mut().enumerate() {
                let on = (m >> bit) & 1 != 0;
                *slot = if on { gather(planes, *j) } else { W::default() };
                *j += on as usize;
            }
        }
    }
}

/// Expands mask bytes into dense words: `z[8g + b]` is the next non-zero word when bit `b` of
/// `mask[g]` is set, else zero. The mask selects at most as many words as the planes hold.
fn expand<W: Word>(mask: &[u8], planes: &[&[u8]], j: &mut usize, z: &mut [W]) {
    for (g, &m) in mask.iter().enumerate() {
        expand_byte(m, planes, j, &mut z[8 * g..]);
    }
}

/// Words with a SIMD kernel for the whole decode of a mask byte.
trait Fused: Word {
    /// Expands and applies in registers, writing `out` straight from the planes and `base`
    /// without the dense block in between, for as many leading mask bytes as it can (full
    /// groups of 8 words); returns how many it did. The default does none.
    fn fused(
        _t: Transform,
        _mask: &[u8],
        _planes: &[&[u8]],
        _j: &mut usize,
        _base: &[u8],
        _out: &mut [u8],
    ) -> usize {
        0
    }
}

impl Fused for u8 {}
impl Fused for u64 {}

impl Fused for u32 {
    #[cfg(target_arch = "x86_64")]
    fn fused(
        t: Transform,
        mask: &[u8],
        planes: &[&[u8]],
        j: &mut usize,
        base: &[u8],
        out: &mut [u8],
    ) -> usize {
        if t == Transform::None
            || !std::arch::is_x86_feature_detected!("ssse3")
            || !std::arch::is_x86_feature_detected!("popcnt")
        {
            return 0;
        }
        // SAFETY: SSSE3 and POPCNT are present; the function checks its own bounds.
        unsafe { x86::fused32(t == Transform::Diff, mask, planes, j, base, out) }
    }

    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    fn fused(
        t: Transform,
        mask: &[u8],
        planes: &[&[u8]],
        j: &mut usize,
        base: &[u8],
        out: &mut [u8],
    ) -> usize {
        if t == Transform::None {
            return 0;
        }
        simd128::fused32(t == Transform::Diff, mask, planes, j, base, out)
    }
}

impl Fused for u16 {
    #[cfg(target_arch = "x86_64")]
    fn fused(
        t: Transform,
        mask: &[u8],
        planes: &[&[u8]],
        j: &mut usize,
        base: &[u8],
        out: &mut [u8],
    ) -> usize {
        if t == Transform::None
            || !std::arch::is_x86_feature_detected!("ssse3")
            || !std::arch::is_x86_feature_detected!("popcnt")
        {
            return 0;
        }
        // SAFETY: SSSE3 and POPCNT are present; the function checks its own bounds.
        unsafe {
            x86::fused16(
                t == Transform::Diff,
                mask,
                planes[0],
                planes[1],
                j,
                base,
                out,
            )
        }
    }

    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    fn fused(
        t: Transform,
        mask: &[u8],
        planes: &[&[u8]],
        j: &mut usize,
        base: &[u8],
        out: &mut [u8],
    ) -> usize {
        if t == Transform::None {
            return 0;
        }
        simd128::fused16(
            t == Transform::Diff,
            mask,
            planes[0],
            planes[1],
            j,
            base,
            out,
        )
    }
}

/// The shuffle that moves packed u16 words to the lanes a mask byte selects (0x80: zero).
#[cfg_attr(
    not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )),
    allow(dead_code)
)]
const fn shuffle16_table() -> [[u8; 16]; 256] {
    let mut t = [[0x80u8; 16]; 256];
    let mut m = 0;
    while m < 256 {
        let mut idx = 0u8;
        let mut lane = 0;
        while lane < 8 {
            if m & (1 << lane) != 0 {
                t[m][2 * lane] = 2 * idx;
                t[m][2 * lane + 1] = 2 * idx + 1;
                idx += 1;
            }
            lane += 1;
        }
        m += 1;
    }
    t
}

/// For each mask nibble, the shuffle that moves packed u32 words to the set lanes (0x80: zero).
#[cfg_attr(
    not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )),
    allow(dead_code)
)]
const fn shuffle32_table() -> [[u8; 16]; 16] {
    let mut t = [[0x80u8; 16]; 16];
    let mut m = 0;
    while m < 16 {
        let mut idx = 0u8;
        let mut lane = 0;
        while lane < 4 {
            if m & (1 << lane) != 0 {
                let mut b = 0;
                while b < 4 {
                    t[m][4 * lane + b] = 4 * idx + b as u8;
                    b += 1;
                }
                idx += 1;
            }
            lane += 1;
        }
        m += 1;
    }
    t
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
/// What [`operands`] gives: the planes' bytes, the base bytes and the output bytes of a group.
type Operands<'p, 'b, 'o, const N: usize> = ([&'p [u8]; N], &'b [u8], &'o mut [u8]);

/// The operands of mask group `g` for words of `N` bytes: the next 8 bytes of each plane from
/// non-zero word `j`, and the group's `8 * N` base and output bytes; `None` past the end of any.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
fn operands<'p, 'b, 'o, const N: usize>(
    planes: [&'p [u8]; N],
    j: usize,
    g: usize,
    base: &'b [u8],
    out: &'o mut [u8],
) -> Option<Operands<'p, 'b, 'o, N>> {
    let io = 8 * N * g..8 * N * (g + 1);
    let mut at = [&[][..]; N];
    for (slot, plane) in at.iter_mut().zip(planes) {
        *slot = plane.get(j..j + 8)?;
    }
    Some((at, base.get(io.clone())?, out.get_mut(io)?))
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use std::arch::wasm32::*;

    static SHUFFLE16: [[u8; 16]; 256] = super::shuffle16_table();
    static SHUFFLE32: [[u8; 16]; 16] = super::shuffle32_table();

    /// The SSSE3 `fused16`'s twin: expand and apply the inverse transform in registers.
    ///
    /// Bounds are checked once per group (the planes) or once per call (base and output)
    /// rather than per slice: in V8 the four slice checks per group cost more than on x86.
    pub(super) fn fused16(
        diff: bool,
        mask: &[u8],
        lo: &[u8],
        hi: &[u8],
        j: &mut usize,
        base: &[u8],
        out: &mut [u8],
    ) -> usize {
        let one = u16x8_splat(1);
        let sign = u16x8_splat(0x8000);
        let groups = mask.len().min(base.len() / 16).min(out.len() / 16);
        let planes_len = lo.len().min(hi.len());
        for (g, &m) in mask[..groups].iter().enumerate() {
            if *j + 8 > planes_len {
                return g;
            }
            // SAFETY: `j + 8` is within both planes, and `16 * g + 16` within `base` and `out`
            // (`g < groups`); the loads and stores are unaligned.
            unsafe {
                let b = v128_load(base.as_ptr().add(16 * g) as *const v128);
                let t = if m == 0 {
                    b
                } else {
                    let l = v128_load64_zero(lo.as_ptr().add(*j) as *const u64);
                    let h = v128_load64_zero(hi.as_ptr().add(*j) as *const u64);
                    let words =
                        u8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(
                            l, h,
                        );
                    let z = u8x16_swizzle(
                        words,
                        v128_load(SHUFFLE16[m as usize].as_ptr() as *const v128),
                    );
                    if diff {
                        let d = v128_xor(u16x8_shr(z, 1), i16x8_neg(v128_and(z, one)));
                        let ob = v128_xor(b, v128_or(i16x8_shr(b, 15), sign));
                        let o = i16x8_add(ob, d);
                        v128_xor(o, v128_or(i16x8_shr(v128_not(o), 15), sign))
                    } else {
                        v128_xor(z, b)
                    }
                };
                v128_store(out.as_mut_ptr().add(16 * g) as *mut v128, t);
            }
            *j += m.count_ones() as usize;
        }
        groups
    }

    /// The SSSE3 `fused32`'s twin: 8 bytes from each of 4 planes, two halves of 4 words.
    /// Bounds are checked as in `fused16`.
    pub(super) fn fused32(
        diff: bool,
        mask: &[u8],
        planes: &[&[u8]],
        j: &mut usize,
        base: &[u8],
        out: &mut [u8],
    ) -> usize {
        let [p0, p1, p2, p3] = [planes[0], planes[1], planes[2], planes[3]];
        let one = u32x4_splat(1);
        let sign = u32x4_splat(0x8000_0000);
        let apply = |z: v128, b: v128| -> v128 {
            if diff {
                let d = v128_xor(u32x4_shr(z, 1), i32x4_neg(v128_and(z, one)));
                let ob = v128_xor(b, v128_or(i32x4_shr(b, 31), sign));
                let o = i32x4_add(ob, d);
                v128_xor(o, v128_or(i32x4_shr(v128_not(o), 31), sign))
            } else {
                v128_xor(z, b)
            }
        };
        let groups = mask.len().min(base.len() / 32).min(out.len() / 32);
        let planes_len = p0.len().min(p1.len()).min(p2.len()).min(p3.len());
        for (g, &m) in mask[..groups].iter().enumerate() {
            if *j + 8 > planes_len {
                return g;
            }
            let [a, bb, c, d] = [p0, p1, p2, p3].map(|p| p.as_ptr().wrapping_add(*j));
            let src = base.as_ptr().wrapping_add(32 * g);
            let dst = out.as_mut_ptr().wrapping_add(32 * g);
            // SAFETY: `j + 8` is within every plane, and `32 * g + 32` within `base` and `out`
            // (`g < groups`); the loads and stores are unaligned.
            unsafe {
                let b0 = v128_load(src as *const v128);
                let b1 = v128_load(src.add(16) as *const v128);
                let (t0, t1) = if m == 0 {
                    (b0, b1)
                } else {
                    let ab = u8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(
                        v128_load64_zero(a as *const u64),
                        v128_load64_zero(bb as *const u64),
                    );
                    let cd = u8x16_shuffle::<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(
                        v128_load64_zero(c as *const u64),
                        v128_load64_zero(d as *const u64),
                    );
                    let first = u16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(ab, cd);
                    let second = u16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(ab, cd);
                    let lo = (m & 0x0F) as usize;
                    // The words after the low nibble's: `first` shifted by as many words as it
                    // took, continued from `second`.
                    let upper = match lo.count_ones() {
                        0 => first,
                        1 => {
                            u8x16_shuffle::<4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19>(
                                first, second,
                            )
                        }
                        2 => u8x16_shuffle::<
                            8,
                            9,
                            10,
                            11,
                            12,
                            13,
                            14,
                            15,
                            16,
                            17,
                            18,
                            19,
                            20,
                            21,
                            22,
                            23,
                        >(first, second),
                        3 => u8x16_shuffle::<
                            12,
                            13,
                            14,
                            15,
                            16,
                            17,
                            18,
                            19,
                            20,
                            21,
                            22,
                            23,
                            24,
                            25,
                            26,
                            27,
                        >(first, second),
                        _ => second,
                    };
                    let z0 = u8x16_swizzle(first, v128_load(SHUFFLE32[lo].as_ptr() as *const v128));
                    let z1 = u8x16_swizzle(
                        upper,
                        v128_load(SHUFFLE32[(m >> 4) as usize].as_ptr() as *const v128),
                    );
                    (apply(z0, b0), apply(z1, b1))
                };
                v128_store(dst as *mut v128, t0);
                v128_store(dst.add(16) as *mut v128, t1);
            }
            *j += m.count_ones() as usize;
        }
        groups
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    static SHUFFLE16: [[u8; 16]; 256] = super::shuffle16_table();

    static SHUFFLE32: [[u8; 16]; 16] = super::shuffle32_table();

    /// Expansion and the transform's inverse in one pass: per mask byte, 8 low and 8 high
    /// plane bytes are interleaved, shuffled into the lanes the mask selects and combined with 8 base words in SSE registers (zigzag
    /// decode, value-order add, back to sign-magnitude for `diff`; XOR otherwise).
    #[target_feature(enable = "ssse3,popcnt")]
    pub(super) unsafe fn fused16(
        diff: bool,
        mask: &[u8],
        lo: &[u8],
        hi: &[u8],
        j: &mut usize,
        base: &[u8],
        out: &mut [u8],
    ) -> usize {
        let one = _mm_set1_epi16(1);
        let sign = _mm_set1_epi16(i16::MIN);
        let ones = _mm_set1_epi16(-1);
        for (g, &m) in mask.iter().enumerate() {
            let Some(([l, h], b, dst)) = super::operands([lo, hi], *j, g, base, out) else {
                return g;
            };
            // SAFETY: every slice above is exactly as long as the load or store made from it.
            unsafe {
                let b = _mm_loadu_si128(b.as_ptr() as *const __m128i);
                let t = if m == 0 {
                    b
                } else {
                    let l = _mm_loadl_epi64(l.as_ptr() as *const __m128i);
                    let h = _mm_loadl_epi64(h.as_ptr() as *const __m128i);
                    let s = _mm_loadu_si128(SHUFFLE16[m as usize].as_ptr() as *const __m128i);
                    let z = _mm_shuffle_epi8(_mm_unpacklo_epi8(l, h), s);
                    if diff {
                        // d = (z >> 1) ^ -(z & 1)
                        let d = _mm_xor_si128(
                            _mm_srli_epi16(z, 1),
                            _mm_sub_epi16(_mm_setzero_si128(), _mm_and_si128(z, one)),
                        );
                        // ord(b) = b ^ ((b >> 15 arith) | S)
                        let ob = _mm_xor_si128(b, _mm_or_si128(_mm_srai_epi16(b, 15), sign));
                        let o = _mm_add_epi16(ob, d);
                        // t = o ^ ((!o >> 15 arith) | S)
                        _mm_xor_si128(
                            o,
                            _mm_or_si128(_mm_srai_epi16(_mm_xor_si128(o, ones), 15), sign),
                        )
                    } else {
                        _mm_xor_si128(z, b)
                    }
                };
                _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, t);
            }
            *j += m.count_ones() as usize;
        }
        mask.len()
    }

    /// The u32 twin of `fused16`: 8 bytes from each of 4 planes, two halves of 4 words.
    #[target_feature(enable = "ssse3,popcnt")]
    pub(super) unsafe fn fused32(
        diff: bool,
        mask: &[u8],
        planes: &[&[u8]],
        j: &mut usize,
        base: &[u8],
        out: &mut [u8],
    ) -> usize {
        let [p0, p1, p2, p3] = [planes[0], planes[1], planes[2], planes[3]];
        let one = _mm_set1_epi32(1);
        let sign = _mm_set1_epi32(i32::MIN);
        let ones = _mm_set1_epi32(-1);
        let apply = |z: __m128i, b: __m128i| -> __m128i {
            if diff {
                let d = _mm_xor_si128(
                    _mm_srli_epi32(z, 1),
                    _mm_sub_epi32(_mm_setzero_si128(), _mm_and_si128(z, one)),
                );
                let ob = _mm_xor_si128(b, _mm_or_si128(_mm_srai_epi32(b, 31), sign));
                let o = _mm_add_epi32(ob, d);
                _mm_xor_si128(
                    o,
                    _mm_or_si128(_mm_srai_epi32(_mm_xor_si128(o, ones), 31), sign),
                )
            } else {
                _mm_xor_si128(z, b)
            }
        };
        for (g, &m) in mask.iter().enumerate() {
            let Some(([a, bb, c, d], src, dst)) =
                super::operands([p0, p1, p2, p3], *j, g, base, out)
            else {
                return g;
            };
            // SAFETY: plane slices are 8 bytes, `src` and `dst` 32; unaligned loads and stores
            // within them.
            unsafe {
                let b0 = _mm_loadu_si128(src.as_ptr() as *const __m128i);
                let b1 = _mm_loadu_si128(src.as_ptr().add(16) as *const __m128i);
                let (t0, t1) = if m == 0 {
                    (b0, b1)
                } else {
                    let ab = _mm_unpacklo_epi8(
                        _mm_loadl_epi64(a.as_ptr() as *const __m128i),
                        _mm_loadl_epi64(bb.as_ptr() as *const __m128i),
                    );
                    let cd = _mm_unpacklo_epi8(
                        _mm_loadl_epi64(c.as_ptr() as *const __m128i),
                        _mm_loadl_epi64(d.as_ptr() as *const __m128i),
                    );
                    let first = _mm_unpacklo_epi16(ab, cd);
                    let second = _mm_unpackhi_epi16(ab, cd);
                    let lo = (m & 0x0F) as usize;
                    let upper = match lo.count_ones() {
                        0 => first,
                        1 => _mm_alignr_epi8(second, first, 4),
                        2 => _mm_alignr_epi8(second, first, 8),
                        3 => _mm_alignr_epi8(second, first, 12),
                        _ => second,
                    };
                    let z0 = _mm_shuffle_epi8(
                        first,
                        _mm_loadu_si128(SHUFFLE32[lo].as_ptr() as *const __m128i),
                    );
                    let z1 = _mm_shuffle_epi8(
                        upper,
                        _mm_loadu_si128(SHUFFLE32[(m >> 4) as usize].as_ptr() as *const __m128i),
                    );
                    (apply(z0, b0), apply(z1, b1))
                };
                _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, t0);
                _mm_storeu_si128(dst.as_mut_ptr().add(16) as *mut __m128i, t1);
            }
            *j += m.count_ones() as usize;
        }
        mask.len()
    }
}

fn inverse_words<W: Fused>(
    t: Transform,
    f: impl Fn(W, W) -> W,
    mask: &[u8],
    planes: &[&[u8]],
    base: &[u8],
    out: &mut [u8],
) {
    let n = out.len() / W::BYTES;
    let mut z = [W::default(); BLOCK];
    let mut j = 0usize;
    let mut start = 0usize;
    while start < n {
        let words = BLOCK.min(n - start);
        let bytes = start * W::BYTES..(start + words) * W::BYTES;
        let mut block_mask = [0u8; BLOCK / 8];
        let mbytes = words.div_ceil(8);
        block_mask[..mbytes].copy_from_slice(&mask[start / 8..start / 8 + mbytes]);
        if words % 8 != 0 {
            // Bits past the last word are not part of the data; ignore whatever they hold.
            block_mask[mbytes - 1] &= (1u8 << (words % 8)) - 1;
        }
        let block_mask = &block_mask[..mbytes];
        if block_mask.iter().all(|&m| m == 0) {
            out[bytes.clone()].copy_from_slice(&base[bytes]);
        } else {
            let done = W::fused(
                t,
                block_mask,
                planes,
                &mut j,
                &base[bytes.clone()],
                &mut out[bytes.clone()],
            );
            let rest = start * W::BYTES + 8 * done * W::BYTES..bytes.end;
            if !rest.is_empty() {
                expand(&block_mask[done..], planes, &mut j, &mut z);
                let dst = out[rest.clone()].chunks_exact_mut(W::BYTES);
                let src = base[rest].chunks_exact(W::BYTES);
                for ((o, b), &zw) in dst.zip(src).zip(&z) {
                    f(zw, W::load(b)).store(o);
                }
            }
        }
        start += words;
    }
}

/// Joins [`Layout::SparsePlanes`] streams and applies the transform in one pass.
/// `streams[0]` is the mask, the others the planes.
pub fn sparse_inverse(
    t: Transform,
    word: usize,
    streams: &[&[u8]],
    base: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let mask = streams.first().copied().unwrap_or(&[]);
    let want = stream_lengths(Layout::SparsePlanes, word, out.len(), Some(mask))?;
    if streams.len() != want.len() || streams.iter().zip(&want).any(|(s, &w)| s.len() != w) {
        return Err(Error::corrupt(
            "sparse-planes streams have the wrong lengths",
        ));
    }
    let zeros;
    let base: &[u8] = if t == Transform::None {
        // Without a base, a zero residual is a zero word: walk a zeroed "base".
        zeros = vec![0u8; out.len()];
        &zeros
    } else if base.len() == out.len() {
        base
    } else {
        return Err(Error::corrupt("residual and base lengths differ"));
    };
    let planes = &streams[1..];
    macro_rules! run {
        ($ty:ty) => {
            match t {
                Transform::None => inverse_words::<$ty>(t, |z, _| z, mask, planes, base, out),
                Transform::Xor => inverse_words::<$ty>(t, |z, b| z.xor(b), mask, planes, base, out),
                Transform::Diff => {
                    inverse_words::<$ty>(t, |z, b| z.undiff(b), mask, planes, base, out)
                }
            }
        };
    }
    match word {
        1 => run!(u8),
        2 => run!(u16),
        4 => run!(u32),
        _ => run!(u64),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ord_and_diff_agree_with_the_reference() {
        for word in [1usize, 2, 4, 8] {
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            let mut target = Vec::new();
            let mut base = Vec::new();
            for i in 0..(64 * word + 3 * word) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                target.push(x as u8);
                base.push(if i % 7 < 4 { x as u8 } else { (x >> 8) as u8 });
            }
            for t in [Transform::None, Transform::Xor, Transform::Diff] {
                let mut residual = vec![0; target.len()];
                crate::codec::transform::forward(t, word, &target, &base, &mut residual).unwrap();
                let reference =
                    crate::codec::transform::split(Layout::SparsePlanes, word, &residual).unwrap();
                let fused = sparse_forward(t, word, &target, &base).unwrap();
                assert_eq!(fused, reference, "{t:?} word {word}");
                let refs: Vec<&[u8]> = fused.iter().map(Vec::as_slice).collect();
                let mut back = vec![0xEE; target.len()];
                sparse_inverse(t, word, &refs, &base, &mut back).unwrap();
                assert_eq!(back, target, "{t:?} word {word}");
            }
        }
    }

    #[test]
    fn stray_mask_bits_past_the_end_are_ignored() {
        // 3 words, mask says words 0 and 5 changed: bit 5 is past the end.
        let base = [1u8, 0, 2, 0, 3, 0];
        let mask = [0b0010_0001u8];
        let lo = [7u8];
        let hi = [0u8];
        let mut out = [0u8; 6];
        sparse_inverse(Transform::Xor, 2, &[&mask, &lo, &hi], &base, &mut out).unwrap();
        assert_eq!(out, [6, 0, 2, 0, 3, 0]);
    }
}
