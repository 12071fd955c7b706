//! Stage 3: from a fine-tuned piece and its base to byte streams an entropy coder likes, and back.
//!
//! Two steps, each recorded per blob in the delta:
//!
//! * [`Transform`] makes a *residual* the size of the piece: nothing (`None`, no base), BitX's
//!   word XOR (`Xor`), or the difference of the two words read as order-preserving integers,
//!   zigzag-coded (`Diff`). A fine-tune moves most weights by a few units in the last place:
//!   as a difference that is ±1, ±2…; as an XOR it is 1, 3, 7, 15… depending on the base's
//!   trailing bits, which costs an entropy coder about two more bits per changed element.
//! * [`Layout`] splits the residual into streams: one stream (`Bytes`), byte planes (`Planes`),
//!   the paper's sign/exponent/mantissa fields (`Fields`), or a change mask plus byte planes of
//!   only the changed words (`SparsePlanes`), so runs of unchanged weights cost one bit each and
//!   the planes hold no zeros that would dilute their statistics.
//!
//! Everything is little-endian words of 1, 2, 4 or 8 bytes.

use crate::error::{Error, Result};

/// How a residual is computed from target and base words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// The residual is the target itself (no base).
    None = 0,
    /// BitX: target XOR base.
    Xor = 1,
    /// zigzag(ord(target) − ord(base)), `ord` mapping a sign-magnitude float to an unsigned
    /// integer in value order (see docs/FORMAT.md).
    Diff = 2,
}

impl Transform {
    /// The transform with format code `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Transform::None,
            1 => Transform::Xor,
            2 => Transform::Diff,
            _ => return None,
        })
    }

    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Transform::None => "none",
            Transform::Xor => "xor",
            Transform::Diff => "diff",
        }
    }
}

/// How a residual is split into streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// One stream: the residual bytes.
    Bytes = 0,
    /// `word` streams; stream k holds byte k of every word.
    Planes = 1,
    /// The paper's field split, for 2-byte (bf16) and 4-byte (f32) words: stream 0 holds the
    /// 8-bit exponents, the others the sign and mantissa bits (1 byte for bf16, 3 for f32).
    Fields = 2,
    /// Stream 0 is a bitmap, bit i (LSB first) set when word i is non-zero; streams 1..=word
    /// hold byte k of every non-zero word.
    SparsePlanes = 3,
}

impl Layout {
    /// The layout with format code `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Layout::Bytes,
            1 => Layout::Planes,
            2 => Layout::Fields,
            3 => Layout::SparsePlanes,
            _ => return None,
        })
    }

    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Bytes => "bytes",
            Layout::Planes => "planes",
            Layout::Fields => "fields",
            Layout::SparsePlanes => "sparse-planes",
        }
    }

    /// How many streams this layout makes for words of `word` bytes, or `None` if the
    /// combination is not defined.
    pub fn stream_count(self, word: usize) -> Option<usize> {
        if !matches!(word, 1 | 2 | 4 | 8) {
            return None;
        }
        match self {
            Layout::Bytes => Some(1),
            Layout::Planes => Some(word),
            Layout::Fields => match word {
                2 => Some(2),
                4 => Some(4),
                _ => None,
            },
            Layout::SparsePlanes => Some(word + 1),
        }
    }
}

/// A machine word of 1, 2, 4 or 8 bytes.
pub(crate) trait Word: Copy + Default + Eq + Send + Sync + 'static {
    const BYTES: usize;
    fn load(b: &[u8]) -> Self;
    fn store(self, out: &mut [u8]);
    fn xor(self, b: Self) -> Self;
    /// zigzag(ord(self) − ord(b)).
    fn diff(self, b: Self) -> Self;
    /// The inverse of [`Word::diff`]: the word whose diff against `b` is `self`.
    fn undiff(self, b: Self) -> Self;
    fn byte(self, k: usize) -> u8;
}

macro_rules! impl_word {
    ($ty:ty, $signed:ty, $n:expr) => {
        impl Word for $ty {
            const BYTES: usize = $n;
            #[inline(always)]
            fn load(b: &[u8]) -> Self {
                let mut a = [0u8; $n];
                a.copy_from_slice(&b[..$n]);
                <$ty>::from_le_bytes(a)
            }
            #[inline(always)]
            fn store(self, out: &mut [u8]) {
                out[..$n].copy_from_slice(&self.to_le_bytes());
            }
            #[inline(always)]
            fn xor(self, b: Self) -> Self {
                self ^ b
            }
            #[inline(always)]
            fn diff(self, b: Self) -> Self {
                let d = ord(self).wrapping_sub(ord(b));
                (d << 1) ^ ((d as $signed) >> (<$ty>::BITS - 1)) as $ty
            }
            #[inline(always)]
            fn undiff(self, b: Self) -> Self {
                let d = (self >> 1) ^ (0 as $ty).wrapping_sub(self & 1);
                let o = ord(b).wrapping_add(d);
                // unord: flip the sign bit of a value-ordered word, and every other bit too
                // when it was negative.
                o ^ ((((!o) as $signed) >> (<$ty>::BITS - 1)) as $ty | (1 << (<$ty>::BITS - 1)))
            }
            #[inline(always)]
            fn byte(self, k: usize) -> u8 {
                (self >> (8 * k)) as u8
            }
        }

        /// Maps a sign-magnitude float's bits to an unsigned integer in value order.
        #[inline(always)]
        fn ord(u: $ty) -> $ty {
            u ^ (((u as $signed) >> (<$ty>::BITS - 1)) as $ty | (1 << (<$ty>::BITS - 1)))
        }
    };
}

mod w8 {
    use super::Word;
    impl_word!(u8, i8, 1);
}
mod w16 {
    use super::Word;
    impl_word!(u16, i16, 2);
}
mod w32 {
    use super::Word;
    impl_word!(u32, i32, 4);
}
mod w64 {
    use super::Word;
    impl_word!(u64, i64, 8);
}

/// Applies `f` word by word: `out[i] = f(a[i], b[i])`.
fn map_words<W: Word>(f: impl Fn(W, W) -> W, a: &[u8], b: &[u8], out: &mut [u8]) {
    let words = a
        .chunks_exact(W::BYTES)
        .zip(b.chunks_exact(W::BYTES))
        .zip(out.chunks_exact_mut(W::BYTES));
    for ((x, y), o) in words {
        f(W::load(x), W::load(y)).store(o);
    }
}

fn forward_words<W: Word>(t: Transform, target: &[u8], base: &[u8], out: &mut [u8]) {
    match t {
        Transform::None => out.copy_from_slice(target),
        Transform::Xor => map_words::<W>(|a, b| a.xor(b), target, base, out),
        Transform::Diff => map_words::<W>(|a, b| a.diff(b), target, base, out),
    }
}

fn inverse_words<W: Word>(t: Transform, residual: &[u8], base: &[u8], out: &mut [u8]) {
    match t {
        Transform::None => out.copy_from_slice(residual),
        Transform::Xor => map_words::<W>(|r, b| r.xor(b), residual, base, out),
        Transform::Diff => map_words::<W>(|r, b| r.undiff(b), residual, base, out),
    }
}

pub(crate) fn check_words(word: usize, len: usize) -> Result<()> {
    if !matches!(word, 1 | 2 | 4 | 8) || len % word != 0 {
        return Err(Error::corrupt(format!(
            "a piece of {len} bytes cannot be split into {word}-byte words"
        )));
    }
    Ok(())
}

/// Writes the residual of `target` against `base` into `out` (all three the same length).
/// `base` is ignored for [`Transform::None`].
pub fn forward(
    t: Transform,
    word: usize,
    target: &[u8],
    base: &[u8],
    out: &mut [u8],
) -> Result<()> {
    check_words(word, target.len())?;
    if out.len() != target.len() || (t != Transform::None && base.len() != target.len()) {
        return Err(Error::invalid("target, base and residual lengths differ"));
    }
    let base = if t == Transform::None { target } else { base };
    match word {
        1 => forward_words::<u8>(t, target, base, out),
        2 => forward_words::<u16>(t, target, base, out),
        4 => forward_words::<u32>(t, target, base, out),
        _ => forward_words::<u64>(t, target, base, out),
    }
    Ok(())
}

/// Rebuilds the target from its residual and `base` into `out` (all the same length).
pub fn inverse(
    t: Transform,
    word: usize,
    residual: &[u8],
    base: &[u8],
    out: &mut [u8],
) -> Result<()> {
    check_words(word, residual.len())?;
    if out.len() != residual.len() || (t != Transform::None && base.len() != residual.len()) {
        return Err(Error::corrupt("residual and base lengths differ"));
    }
    let base = if t == Transform::None { residual } else { base };
    match word {
        1 => inverse_words::<u8>(t, residual, base, out),
        2 => inverse_words::<u16>(t, residual, base, out),
        4 => inverse_words::<u32>(t, residual, base, out),
        _ => inverse_words::<u64>(t, residual, base, out),
    }
    Ok(())
}

/// Splits a residual into the layout's streams.
pub fn split(layout: Layout, word: usize, residual: &[u8]) -> Result<Vec<Vec<u8>>> {
    check_words(word, residual.len())?;
    let n = residual.len() / word;
    match layout {
        Layout::Bytes => Ok(vec![residual.to_vec()]),
        Layout::Planes => {
            let mut planes = vec![vec![0u8; n]; word];
            for (i, w) in residual.chunks_exact(word).enumerate() {
                for (k, &b) in w.iter().enumerate() {
                    planes[k][i] = b;
                }
            }
            Ok(planes)
        }
        Layout::Fields => {
            let mut streams = vec![vec![0u8; n]; word];
            match word {
                2 => {
                    for (i, w) in residual.chunks_exact(2).enumerate() {
                        let x = u16::from_le_bytes([w[0], w[1]]);
                        streams[0][i] = (x >> 7) as u8;
                        streams[1][i] = ((x >> 8) as u8 & 0x80) | (x as u8 & 0x7f);
                    }
                }
                4 => {
                    for (i, w) in residual.chunks_exact(4).enumerate() {
                        let x = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                        let sm = (x & 0x007f_ffff) | ((x >> 8) & 0x0080_0000);
                        streams[0][i] = (x >> 23) as u8;
                        streams[1][i] = sm as u8;
                        streams[2][i] = (sm >> 8) as u8;
                        streams[3][i] = (sm >> 16) as u8;
                    }
                    streams.truncate(4);
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "the fields layout is defined for 2- and 4-byte words, not {word}"
                    )))
                }
            }
            Ok(streams)
        }
        Layout::SparsePlanes => {
            let mut mask = vec![0u8; n.div_ceil(8)];
            let mut planes = vec![vec![0u8; n]; word];
            let mut nnz = 0usize;
            for (i, w) in residual.chunks_exact(word).enumerate() {
                if w.iter().any(|&b| b != 0) {
                    mask[i >> 3] |= 1 << (i & 7);
                    for (k, &b) in w.iter().enumerate() {
                        planes[k][nnz] = b;
                    }
                    nnz += 1;
                }
            }
            let mut streams = Vec::with_capacity(word + 1);
            streams.push(mask);
            for mut p in planes {
                p.truncate(nnz);
                streams.push(p);
            }
            Ok(streams)
        }
    }
}

/// The length each stream of a layout must have for a residual of `len` bytes, given the
/// decoded first stream (the mask, for `SparsePlanes`; ignored otherwise).
pub fn stream_lengths(
    layout: Layout,
    word: usize,
    len: usize,
    mask: Option<&[u8]>,
) -> Result<Vec<usize>> {
    check_words(word, len)?;
    let n = len / word;
    let count = layout.stream_count(word).ok_or_else(|| {
        Error::corrupt(format!(
            "layout {} is not defined for {word}-byte words",
            layout.name()
        ))
    })?;
    Ok(match layout {
        Layout::Bytes => vec![len],
        Layout::Planes | Layout::Fields => vec![n; count],
        Layout::SparsePlanes => {
            let mut v = vec![n.div_ceil(8)];
            if let Some(mask) = mask {
                if mask.len() != n.div_ceil(8) {
                    return Err(Error::corrupt("change mask has the wrong length"));
                }
                let nnz = count_set(mask, n);
                v.extend(std::iter::repeat_n(nnz, word));
            }
            v
        }
    })
}

pub(crate) fn count_set(mask: &[u8], n: usize) -> usize {
    let full = n / 8;
    let words = mask[..full].chunks_exact(8);
    let tail = words.remainder();
    let mut c: usize = words
        .map(|w| {
            u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]).count_ones()
                as usize
        })
        .sum();
    c += tail.iter().map(|b| b.count_ones() as usize).sum::<usize>();
    if n % 8 != 0 {
        c += (mask[full] & ((1u8 << (n % 8)) - 1)).count_ones() as usize;
    }
    c
}

/// Joins streams back into a residual of `out.len()` bytes. Stream lengths are checked
/// against the layout, so a corrupt blob cannot make this read or write out of bounds.
pub fn join(layout: Layout, word: usize, streams: &[&[u8]], out: &mut [u8]) -> Result<()> {
    let mask = if layout == Layout::SparsePlanes {
        streams.first().copied()
    } else {
        None
    };
    let want = stream_lengths(layout, word, out.len(), mask)?;
    if streams.len() != want.len() || streams.iter().zip(&want).any(|(s, &w)| s.len() != w) {
        return Err(Error::corrupt(format!(
            "{} layout needs streams of {:?} bytes, the blob has {:?}",
            layout.name(),
            want,
            streams.iter().map(|s| s.len()).collect::<Vec<_>>()
        )));
    }
    match layout {
        Layout::Bytes => out.copy_from_slice(streams[0]),
        Layout::Planes => kernels::join_planes(word, streams, out),
        Layout::Fields => kernels::join_fields(word, streams, out),
        Layout::SparsePlanes => {
            let mask = streams[0];
            let planes = &streams[1..];
            let mut j = 0usize;
            for (byte_index, chunk) in out.chunks_mut(8 * word).enumerate() {
                let m = mask[byte_index];
                if m == 0 {
                    chunk.fill(0);
                    continue;
                }
                for (bit, w) in chunk.chunks_exact_mut(word).enumerate() {
                    if m & (1 << bit) != 0 {
                        for (k, b) in w.iter_mut().enumerate() {
                            *b = planes[k][j];
                        }
                        j += 1;
                    } else {
                        w.fill(0);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Casts elements `elems` of F32 words held as four byte planes (a standalone blob's streams,
/// lengths checked) to BF16 in `out` (two bytes an element), rounding as
/// [`crate::model::f32_to_bf16_bits`] does, without joining the words first.
pub fn planes_to_bf16(planes: [&[u8]; 4], elems: std::ops::Range<usize>, out: &mut [u8]) {
    kernels::planes_to_bf16(planes.map(|p| &p[elems.clone()]), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 {
                    0
                } else {
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn every_transform_and_layout_round_trips() {
        // Lengths below, at and across the join kernels' 64-word blocks.
        for (word, n) in [1usize, 2, 4, 8]
            .into_iter()
            .flat_map(|w| [(w, 101), (w, 128), (w, 64 * 5 + 7)])
        {
            let target = sample(word * n, 1);
            let mut base = target.clone();
            for (i, b) in base.iter_mut().enumerate() {
                if i % 5 == 0 {
                    *b = b.wrapping_add(1);
                }
            }
            for t in [Transform::None, Transform::Xor, Transform::Diff] {
                let mut residual = vec![0; target.len()];
                forward(t, word, &target, &base, &mut residual).unwrap();
                for layout in [
                    Layout::Bytes,
                    Layout::Planes,
                    Layout::Fields,
                    Layout::SparsePlanes,
                ] {
                    if layout.stream_count(word).is_none() {
                        continue;
                    }
                    let streams = split(layout, word, &residual).unwrap();
                    let refs: Vec<&[u8]> = streams.iter().map(Vec::as_slice).collect();
                    let mut joined = vec![0xAA; residual.len()];
                    join(layout, word, &refs, &mut joined).unwrap();
                    assert_eq!(joined, residual, "{t:?} {layout:?} word {word}");
                }
                let mut back = vec![0; target.len()];
                inverse(t, word, &residual, &base, &mut back).unwrap();
                assert_eq!(back, target, "{t:?} word {word}");
            }
        }
    }

    #[test]
    fn diff_of_one_ulp_is_small() {
        let base = 1.0f32.to_bits();
        for (t, want) in [(base + 1, 2u32), (base - 1, 1), (base, 0)] {
            let mut r = [0u8; 4];
            forward(
                Transform::Diff,
                4,
                &t.to_le_bytes(),
                &base.to_le_bytes(),
                &mut r,
            )
            .unwrap();
            assert_eq!(u32::from_le_bytes(r), want);
        }
        // Across zero: +0.0 and -0.0 are neighbours in value order.
        let mut r = [0u8; 4];
        forward(
            Transform::Diff,
            4,
            &(0x8000_0000u32).to_le_bytes(),
            &0u32.to_le_bytes(),
            &mut r,
        )
        .unwrap();
        assert_eq!(u32::from_le_bytes(r), 1);
    }

    #[test]
    fn join_rejects_wrong_stream_lengths() {
        let mut out = vec![0u8; 16];
        let mask = [0xFFu8];
        let short = [0u8; 3];
        let err = join(Layout::SparsePlanes, 2, &[&mask, &short, &short], &mut out).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::CorruptDelta);
    }
}

/// The join loops, written in fixed-size blocks (no bounds checks inside, so they vectorize)
/// and compiled twice on x86-64: for the baseline and for AVX2, chosen at run time.
mod kernels {
    /// Words per block.
    const B: usize = 64;

    #[inline(always)]
    fn fields4_block(e: &[u8; B], s0: &[u8; B], s1: &[u8; B], s2: &[u8; B], out: &mut [u8; 4 * B]) {
        for k in 0..B {
            let sm = s0[k] as u32 | (s1[k] as u32) << 8 | (s2[k] as u32) << 16;
            let x = ((sm & 0x0080_0000) << 8) | ((e[k] as u32) << 23) | (sm & 0x007f_ffff);
            out[4 * k..4 * k + 4].copy_from_slice(&x.to_le_bytes());
        }
    }

    #[inline(always)]
    fn fields2_block(e: &[u8; B], sm: &[u8; B], out: &mut [u8; 2 * B]) {
        for k in 0..B {
            let (e, sm) = (e[k] as u16, sm[k] as u16);
            let x = ((sm & 0x80) << 8) | (e << 7) | (sm & 0x7f);
            out[2 * k..2 * k + 2].copy_from_slice(&x.to_le_bytes());
        }
    }

    /// Byte `k` of word `i` is `streams[k][i]`, for words of `W` bytes.
    #[inline(always)]
    fn planes_block<const W: usize>(streams: [&[u8; B]; W], out: &mut [u8]) {
        for k in 0..B {
            for (p, s) in streams.iter().enumerate() {
                out[W * k + p] = s[k];
            }
        }
    }

    fn block(s: &[u8], i: usize) -> &[u8; B] {
        s[i * B..(i + 1) * B].try_into().expect("a whole block")
    }

    #[inline(always)]
    fn fields(word: usize, streams: &[&[u8]], out: &mut [u8]) {
        let n = out.len() / word;
        let blocks = n / B;
        if word == 2 {
            let (e, sm) = (streams[0], streams[1]);
            for (i, o) in out.chunks_exact_mut(2 * B).enumerate() {
                fields2_block(
                    block(e, i),
                    block(sm, i),
                    o.try_into().expect("a whole block"),
                );
            }
            for i in blocks * B..n {
                let (e, sm) = (e[i] as u16, sm[i] as u16);
                let x = ((sm & 0x80) << 8) | (e << 7) | (sm & 0x7f);
                out[2 * i..2 * i + 2].copy_from_slice(&x.to_le_bytes());
            }
        } else {
            let (e, s0, s1, s2) = (streams[0], streams[1], streams[2], streams[3]);
            for (i, o) in out.chunks_exact_mut(4 * B).enumerate() {
                fields4_block(
                    block(e, i),
                    block(s0, i),
                    block(s1, i),
                    block(s2, i),
                    o.try_into().expect("a whole block"),
                );
            }
            for i in blocks * B..n {
                let sm = s0[i] as u32 | (s1[i] as u32) << 8 | (s2[i] as u32) << 16;
                let x = ((sm & 0x0080_0000) << 8) | ((e[i] as u32) << 23) | (sm & 0x007f_ffff);
                out[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
            }
        }
    }

    #[inline(always)]
    fn planes_w<const W: usize>(streams: &[&[u8]], out: &mut [u8]) {
        let n = out.len() / W;
        for (i, o) in out.chunks_exact_mut(W * B).enumerate() {
            planes_block::<W>(std::array::from_fn(|p| block(streams[p], i)), o);
        }
        for i in n / B * B..n {
            for (p, s) in streams.iter().enumerate() {
                out[W * i + p] = s[i];
            }
        }
    }

    #[inline(always)]
    fn planes(word: usize, streams: &[&[u8]], out: &mut [u8]) {
        match word {
            2 => planes_w::<2>(streams, out),
            4 => planes_w::<4>(streams, out),
            8 => planes_w::<8>(streams, out),
            _ => {
                for (i, w) in out.chunks_exact_mut(word).enumerate() {
                    for (k, b) in w.iter_mut().enumerate() {
                        *b = streams[k][i];
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn fields_avx2(word: usize, streams: &[&[u8]], out: &mut [u8]) {
        fields(word, streams, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn planes_avx2(word: usize, streams: &[&[u8]], out: &mut [u8]) {
        planes(word, streams, out)
    }

    #[inline(always)]
    fn planes_bf16_block(p: [&[u8; B]; 4], out: &mut [u8; 2 * B]) {
        for k in 0..B {
            let u = u32::from_le_bytes([p[0][k], p[1][k], p[2][k], p[3][k]]);
            let b = crate::model::f32_to_bf16_bits(u).to_le_bytes();
            out[2 * k] = b[0];
            out[2 * k + 1] = b[1];
        }
    }

    #[inline(always)]
    fn planes_bf16(p: [&[u8]; 4], out: &mut [u8]) {
        let n = out.len() / 2;
        for (i, o) in out.chunks_exact_mut(2 * B).enumerate() {
            let o = o.try_into().expect("a whole block");
            planes_bf16_block(std::array::from_fn(|k| block(p[k], i)), o);
        }
        for i in n / B * B..n {
            let u = u32::from_le_bytes([p[0][i], p[1][i], p[2][i], p[3][i]]);
            out[2 * i..2 * i + 2].copy_from_slice(&crate::model::f32_to_bf16_bits(u).to_le_bytes());
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn planes_bf16_avx2(p: [&[u8]; 4], out: &mut [u8]) {
        planes_bf16(p, out)
    }

    /// [`super::planes_to_bf16`]: four planes of `out.len() / 2` bytes each.
    pub(super) fn planes_to_bf16(p: [&[u8]; 4], out: &mut [u8]) {
        debug_assert!(p.iter().all(|s| 2 * s.len() == out.len()));
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { planes_bf16_avx2(p, out) };
        }
        planes_bf16(p, out)
    }

    /// [`super::join`]'s `Fields` case; stream lengths already checked.
    pub(super) fn join_fields(word: usize, streams: &[&[u8]], out: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { fields_avx2(word, streams, out) };
        }
        fields(word, streams, out)
    }

    /// [`super::join`]'s `Planes` case; stream lengths already checked.
    pub(super) fn join_planes(word: usize, streams: &[&[u8]], out: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { planes_avx2(word, streams, out) };
        }
        planes(word, streams, out)
    }
}
