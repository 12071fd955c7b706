//! Reading tensors back, sans-I/O: which parts a byte range of a tensor needs ([`needs`]), and
//! the bytes from those parts once fetched ([`read`]), through deltas and casts.

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::Bytes;

use crate::codec::blob::BlobDecoder;
use crate::error::{Error, Result};
use crate::model::DType;
use crate::store::layout::{pack_key, Encoding, Part, TensorRecord, MAX_DEPTH};

/// Records by tensor hash (a manifest's `tensors`, or the union of several).
pub type Records = BTreeMap<String, TensorRecord>;

/// The word size for a record's dtype name (1 for bytes and unknown names).
pub fn word_of(dtype: &str) -> usize {
    DType::all()
        .iter()
        .find(|d| d.name() == dtype)
        .map_or(1, |d| d.word().max(1))
}

fn record<'a>(records: &'a Records, hash: &str) -> Result<&'a TensorRecord> {
    records
        .get(hash)
        .ok_or_else(|| Error::internal(format!("no record for tensor {hash}")))
}

/// The parts of `parts` overlapping `range`, each with its start in the tensor.
pub fn overlapping<'a>(parts: &'a [Part], range: &Range<u64>) -> Vec<(u64, &'a Part)> {
    let mut out = Vec::new();
    if range.start >= range.end {
        return out;
    }
    let mut at = 0u64;
    for p in parts {
        let end = at + p.raw_len;
        if end > range.start && at < range.end {
            out.push((at, p));
        }
        if at >= range.end {
            break;
        }
        at = end;
    }
    out
}

/// The bytes a cast's source must provide for `range` of the cast: each BF16 element is one
/// F32 element, so the range doubles, widened to whole elements.
fn cast_source_range(range: &Range<u64>) -> Range<u64> {
    (range.start & !1) * 2..range.end.div_ceil(2) * 4
}

/// Adds to `out` every part that reading `range` of tensor `hash` needs, bases and cast
/// sources included. A part for which `kept` says yes (it is at hand decoded) is left out, and
/// so is what it would have needed.
pub fn needs(
    records: &Records,
    hash: &str,
    range: Range<u64>,
    out: &mut Vec<Part>,
    kept: &mut dyn FnMut(&Part) -> bool,
) -> Result<()> {
    needs_at(records, hash, range, out, kept, 0)
}

fn needs_at(
    records: &Records,
    hash: &str,
    range: Range<u64>,
    out: &mut Vec<Part>,
    kept: &mut dyn FnMut(&Part) -> bool,
    depth: usize,
) -> Result<()> {
    if depth >= MAX_DEPTH {
        return Err(Error::internal(format!(
            "tensor {hash}: chain deeper than {MAX_DEPTH}"
        )));
    }
    let rec = record(records, hash)?;
    match &rec.encoding {
        Encoding::Raw { parts } | Encoding::Delta { parts, .. } => {
            for (start, p) in overlapping(parts, &range) {
                if kept(p) {
                    continue;
                }
                out.push(p.clone());
                if p.delta {
                    let base = rec.dependency().ok_or_else(|| {
                        Error::internal(format!("tensor {hash}: a delta part without a base"))
                    })?;
                    needs_at(
                        records,
                        base,
                        start..start + p.raw_len,
                        out,
                        kept,
                        depth + 1,
                    )?;
                }
            }
        }
        Encoding::Cast { source, .. } => {
            needs_at(
                records,
                source,
                cast_source_range(&range),
                out,
                kept,
                depth + 1,
            )?;
        }
    }
    Ok(())
}

/// Parts at hand: fetched blobs, and parts kept decoded (see [`crate::store::decoded`]).
pub trait Fetched {
    /// The blob of `part`, or `None` if it was not fetched.
    fn blob(&self, part: &Part) -> Option<&[u8]>;

    /// The decoded bytes of `part`, if at hand (checked against its BLAKE3, with `check`).
    fn decoded(&self, _part: &Part, _check: bool) -> Option<Bytes> {
        None
    }

    /// Offers `part`'s freshly decoded bytes for keeping (`checked`: against its BLAKE3).
    fn keep(&self, _part: &Part, _bytes: &Bytes, _checked: bool) {}
}

/// `part`'s decoded bytes: at hand, or decoded from its fetched blob (on `base`, which
/// `base_of` gives only when a decode needs it) and offered for keeping.
pub fn part_bytes(
    fetched: &dyn Fetched,
    dec: &mut BlobDecoder,
    part: &Part,
    word: usize,
    check: bool,
    base_of: impl FnOnce(&mut BlobDecoder) -> Result<Option<Bytes>>,
) -> Result<Bytes> {
    if let Some(b) = fetched.decoded(part, check) {
        return Ok(b);
    }
    let blob = fetched
        .blob(part)
        .ok_or_else(|| Error::internal("a part was not fetched"))?;
    let base = base_of(dec)?;
    let bytes = decode_part(dec, part, blob, base.as_deref(), word, check)?;
    fetched.keep(part, &bytes, check);
    Ok(bytes)
}

/// Decodes one part and, with `check`, checks it against its recorded hash (a caller that
/// checks the whole output against a digest anyway may skip it, and look again with checks on
/// to name the damaged object if that digest fails).
pub fn decode_part(
    dec: &mut BlobDecoder,
    part: &Part,
    blob: &[u8],
    base: Option<&[u8]>,
    word: usize,
    check: bool,
) -> Result<Bytes> {
    crate::native::lent_bytes(part.raw_len as usize, |out| {
        dec.decode(blob, base, word, out)
            .map_err(|e| undecodable(part, e))?;
        if check && blake3::hash(out).to_hex().as_str() != part.blake3 {
            return Err(Error::store_corrupt(
                pack_key(&part.pack),
                format!(
                    "corrupt: the part at offset {} decodes to other bytes than were stored",
                    part.offset
                ),
            ));
        }
        Ok(())
    })
}

/// The error for a part whose blob does not decode: its pack is corrupt.
fn undecodable(part: &Part, e: Error) -> Error {
    Error::store_corrupt(
        pack_key(&part.pack),
        format!(
            "corrupt: the part at offset {} does not decode ({e})",
            part.offset
        ),
    )
}

/// Reads `range` of tensor `hash` from the parts at hand (every part [`needs`] listed),
/// checking each part's BLAKE3 with `check`.
pub fn read(
    records: &Records,
    hash: &str,
    range: Range<u64>,
    fetched: &dyn Fetched,
    dec: &mut BlobDecoder,
    check: bool,
) -> Result<Bytes> {
    let walk = Walk {
        records,
        fetched,
        check,
    };
    walk.bytes(hash, range, dec, 0)
}

/// One read's walk down records: where they are, the parts at hand, whether each part decoded
/// is checked against its BLAKE3.
struct Walk<'a> {
    records: &'a Records,
    fetched: &'a dyn Fetched,
    check: bool,
}

impl Walk<'_> {
    /// `range` of tensor `hash` in one piece: a view of a part when it lies within one.
    fn bytes(
        &self,
        hash: &str,
        range: Range<u64>,
        dec: &mut BlobDecoder,
        depth: usize,
    ) -> Result<Bytes> {
        let mut chunks = Vec::new();
        self.each(hash, range.clone(), dec, depth, &mut |c| {
            chunks.push(c);
            Ok(())
        })?;
        if chunks.len() == 1 {
            return Ok(chunks.remove(0));
        }
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for c in chunks {
            out.extend_from_slice(&c);
        }
        Ok(Bytes::from(out))
    }

    /// Casts `src_range` of the F32 tensor `source` to BF16 in `out` straight from its
    /// standalone blobs, when nothing is checked on the way (a part's BLAKE3 is of its F32
    /// bytes) and the tensor is stored whole (not a delta): a part kept decoded is cast from
    /// its bytes, any other is decoded to BF16 at once, with no F32 copy in between. `false`
    /// (nothing written) when the source is not such a tensor.
    fn cast_from_blobs(
        &self,
        source: &str,
        src_range: &Range<u64>,
        dec: &mut BlobDecoder,
        out: &mut [u8],
    ) -> Result<bool> {
        let rec = record(self.records, source)?;
        let Encoding::Raw { parts } = &rec.encoding else {
            return Ok(false);
        };
        if self.check || rec.dtype != "F32" || src_range.end > rec.len {
            return Ok(false);
        }
        let mut at = 0usize;
        for (start, p) in overlapping(parts, src_range) {
            let lo = (src_range.start.max(start) - start) as usize;
            let hi = (src_range.end.min(start + p.raw_len) - start) as usize;
            if lo % 4 != 0 || hi % 4 != 0 {
                return Err(Error::internal("a cast source off its element grid"));
            }
            let n = (hi - lo) / 2;
            let dst = out
                .get_mut(at..at + n)
                .ok_or_else(|| Error::internal("a cast source came out long"))?;
            at += n;
            if self.fetched.decoded(p, false).is_none() {
                if let Some(blob) = self.fetched.blob(p) {
                    let cast = dec.decode_bf16_cast(blob, p.raw_len as usize, lo / 4..hi / 4, dst);
                    if cast.map_err(|e| undecodable(p, e))? {
                        continue;
                    }
                }
            }
            let bytes = part_bytes(self.fetched, dec, p, 4, false, |_| Ok(None))?;
            crate::model::cast_f32_bytes_to_bf16(&bytes[lo..hi], dst);
        }
        if at != out.len() {
            return Err(Error::internal("a cast source came out short"));
        }
        Ok(true)
    }

    /// `range` of tensor `hash` as consecutive chunks handed to `each` (views of decoded parts,
    /// or of a cast of them), so that a caller can use them without joining them first.
    fn each(
        &self,
        hash: &str,
        range: Range<u64>,
        dec: &mut BlobDecoder,
        depth: usize,
        each: &mut dyn FnMut(Bytes) -> Result<()>,
    ) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(Error::internal(format!(
                "tensor {hash}: chain deeper than {MAX_DEPTH}"
            )));
        }
        let rec = record(self.records, hash)?;
        if range.end > rec.len || range.start > range.end {
            return Err(Error::internal(format!(
                "range {range:?} outside tensor {hash} of {} bytes",
                rec.len
            )));
        }
        match &rec.encoding {
            Encoding::Raw { parts } | Encoding::Delta { parts, .. } => {
                let word = word_of(&rec.dtype);
                for (start, p) in overlapping(parts, &range) {
                    let bytes = part_bytes(self.fetched, dec, p, word, self.check, |dec| {
                        if !p.delta {
                            return Ok(None);
                        }
                        let b = rec
                            .dependency()
                            .ok_or_else(|| Error::internal("a delta part without a base"))?;
                        let r = start..start + p.raw_len;
                        self.bytes(b, r, dec, depth + 1).map(Some)
                    })?;
                    let lo = (range.start.max(start) - start) as usize;
                    let hi = (range.end.min(start + p.raw_len) - start) as usize;
                    each(bytes.slice(lo..hi))?;
                }
                Ok(())
            }
            Encoding::Cast { source, .. } => {
                // Each stretch of the F32 source is cast straight into one buffer (source
                // parts start on whole elements: parts are multiples of 4 bytes, and the range
                // is widened to whole elements).
                let src_range = cast_source_range(&range);
                let first = src_range.start / 2;
                let len = ((src_range.end - src_range.start) / 2) as usize;
                let cast = crate::native::lent_bytes(len, |out| {
                    if self.cast_from_blobs(source, &src_range, dec, out)? {
                        return Ok(());
                    }
                    let mut at = 0usize;
                    self.each(source, src_range.clone(), dec, depth + 1, &mut |c| {
                        let n = c.len() / 2;
                        if c.len() % 4 != 0 || at + n > out.len() {
                            return Err(Error::internal("a cast source off its element grid"));
                        }
                        crate::model::cast_f32_bytes_to_bf16(&c, &mut out[at..at + n]);
                        at += n;
                        Ok(())
                    })?;
                    if at != out.len() {
                        return Err(Error::internal("a cast source came out short"));
                    }
                    Ok(())
                })?;
                let lo = (range.start - first) as usize;
                each(cast.slice(lo..lo + (range.end - range.start) as usize))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(raw_len: u64) -> Part {
        Part {
            pack: "0".repeat(64),
            offset: 0,
            len: 1,
            raw_len,
            blake3: "0".repeat(64),
            delta: false,
        }
    }

    #[test]
    fn overlapping_parts() {
        let parts = vec![part(10), part(10), part(5)];
        let starts = |r: Range<u64>| -> Vec<u64> {
            overlapping(&parts, &r)
                .into_iter()
                .map(|(s, _)| s)
                .collect()
        };
        assert_eq!(starts(0..25), vec![0, 10, 20]);
        assert_eq!(starts(10..20), vec![10]);
        assert_eq!(starts(9..11), vec![0, 10]);
        assert_eq!(starts(24..25), vec![20]);
        assert!(starts(5..5).is_empty());
    }

    /// Parts handed over decoded, by offset.
    struct Decoded(std::collections::HashMap<u64, Bytes>);

    impl Fetched for Decoded {
        fn blob(&self, _: &Part) -> Option<&[u8]> {
            None
        }
        fn decoded(&self, part: &Part, _: bool) -> Option<Bytes> {
            self.0.get(&part.offset).cloned()
        }
    }

    #[test]
    fn casts_read_across_source_parts() {
        // An F32 tensor of three parts (40, 40 and 24 bytes) and its BF16 cast, read at every
        // range: each must be the cast of the matching source elements.
        let words: Vec<u32> = (0..26u32).map(|i| 0x3f80_0000 + i * 0x1_8001).collect();
        let src: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut parts = Vec::new();
        let mut at_hand = std::collections::HashMap::new();
        for (i, r) in [0..40usize, 40..80, 80..104].into_iter().enumerate() {
            let mut p = part(r.len() as u64);
            p.offset = i as u64;
            at_hand.insert(p.offset, Bytes::copy_from_slice(&src[r]));
            parts.push(p);
        }
        let mut records = Records::new();
        let f32_rec = TensorRecord {
            len: 104,
            dtype: "F32".into(),
            encoding: Encoding::Raw { parts },
            bf16_cast: None,
        };
        records.insert("f".into(), f32_rec);
        let cast_rec = TensorRecord {
            len: 52,
            dtype: "BF16".into(),
            encoding: Encoding::Cast {
                source: "f".into(),
                from: "F32".into(),
                to: "BF16".into(),
            },
            bf16_cast: None,
        };
        records.insert("c".into(), cast_rec);
        let mut want = vec![0u8; 52];
        crate::model::cast_f32_bytes_to_bf16(&src, &mut want);
        let fetched = Decoded(at_hand);
        let mut dec = BlobDecoder::new().expect("decoder");
        for a in 0..52u64 {
            for b in a..=52 {
                let got = read(&records, "c", a..b, &fetched, &mut dec, false).expect("read");
                assert_eq!(&got[..], &want[a as usize..b as usize], "{a}..{b}");
            }
        }
        let whole = read(&records, "f", 0..104, &fetched, &mut dec, false).expect("read");
        assert_eq!(&whole[..], &src[..]);
    }

    #[test]
    fn a_cast_of_parts_off_the_element_grid_is_an_error() {
        // F32 parts of 6 bytes (a damaged or hostile manifest): refused, never a panic.
        let mut parts = Vec::new();
        let mut at_hand = std::collections::HashMap::new();
        for i in 0..2u64 {
            let mut p = part(6);
            p.offset = i;
            at_hand.insert(i, Bytes::from(vec![0u8; 6]));
            parts.push(p);
        }
        let mut records = Records::new();
        let f32_rec = TensorRecord {
            len: 12,
            dtype: "F32".into(),
            encoding: Encoding::Raw { parts },
            bf16_cast: None,
        };
        records.insert("f".into(), f32_rec);
        let cast_rec = TensorRecord {
            len: 6,
            dtype: "BF16".into(),
            encoding: Encoding::Cast {
                source: "f".into(),
                from: "F32".into(),
                to: "BF16".into(),
            },
            bf16_cast: None,
        };
        records.insert("c".into(), cast_rec);
        let mut dec = BlobDecoder::new().expect("decoder");
        let got = read(&records, "c", 0..6, &Decoded(at_hand), &mut dec, false);
        assert!(got.is_err());
    }

    #[test]
    fn cast_ranges_cover_whole_elements() {
        assert_eq!(cast_source_range(&(0..2)), 0..4);
        assert_eq!(cast_source_range(&(1..3)), 0..8);
        assert_eq!(cast_source_range(&(4..6)), 8..12);
    }
}
