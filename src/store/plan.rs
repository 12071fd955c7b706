//! Reading tensors back, sans-I/O: which parts a byte range of a tensor needs ([`needs`]), and
//! the bytes from those parts once fetched ([`read`]), through deltas and casts.

use std::collections::BTreeMap;
use std::ops::Range;

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
/// sources included.
pub fn needs(records: &Records, hash: &str, range: Range<u64>, out: &mut Vec<Part>) -> Result<()> {
    needs_at(records, hash, range, out, 0)
}

fn needs_at(
    records: &Records,
    hash: &str,
    range: Range<u64>,
    out: &mut Vec<Part>,
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
                out.push(p.clone());
                if p.delta {
                    let base = rec.dependency().ok_or_else(|| {
                        Error::internal(format!("tensor {hash}: a delta part without a base"))
                    })?;
                    needs_at(records, base, start..start + p.raw_len, out, depth + 1)?;
                }
            }
        }
        Encoding::Cast { source, .. } => {
            needs_at(records, source, cast_source_range(&range), out, depth + 1)?;
        }
    }
    Ok(())
}

/// Looks up a fetched part's stored bytes.
pub trait Fetched {
    /// The blob of `part`, or `None` if it was not fetched.
    fn blob(&self, part: &Part) -> Option<&[u8]>;
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
) -> Result<Vec<u8>> {
    let mut out = vec![0u8; part.raw_len as usize];
    let corrupt = |what: String| Error::store_corrupt(pack_key(&part.pack), what);
    dec.decode(blob, base, word, &mut out).map_err(|e| {
        corrupt(format!(
            "corrupt: the part at offset {} does not decode ({e})",
            part.offset
        ))
    })?;
    if check && blake3::hash(&out).to_hex().as_str() != part.blake3 {
        return Err(corrupt(format!(
            "corrupt: the part at offset {} decodes to other bytes than were stored",
            part.offset
        )));
    }
    Ok(out)
}

/// Reads `range` of tensor `hash` from fetched parts (every part [`needs`] listed), checking
/// each part's BLAKE3 with `check`.
pub fn read(
    records: &Records,
    hash: &str,
    range: Range<u64>,
    fetched: &dyn Fetched,
    dec: &mut BlobDecoder,
    check: bool,
) -> Result<Vec<u8>> {
    read_at(records, hash, range, fetched, dec, check, 0)
}

fn read_at(
    records: &Records,
    hash: &str,
    range: Range<u64>,
    fetched: &dyn Fetched,
    dec: &mut BlobDecoder,
    check: bool,
    depth: usize,
) -> Result<Vec<u8>> {
    if depth >= MAX_DEPTH {
        return Err(Error::internal(format!(
            "tensor {hash}: chain deeper than {MAX_DEPTH}"
        )));
    }
    let rec = record(records, hash)?;
    if range.end > rec.len || range.start > range.end {
        return Err(Error::internal(format!(
            "range {range:?} outside tensor {hash} of {} bytes",
            rec.len
        )));
    }
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    match &rec.encoding {
        Encoding::Raw { parts } | Encoding::Delta { parts, .. } => {
            let word = word_of(&rec.dtype);
            for (start, p) in overlapping(parts, &range) {
                let blob = fetched
                    .blob(p)
                    .ok_or_else(|| Error::internal("a part was not fetched"))?;
                let base = if p.delta {
                    let b = rec
                        .dependency()
                        .ok_or_else(|| Error::internal("a delta part without a base"))?;
                    Some(read_at(
                        records,
                        b,
                        start..start + p.raw_len,
                        fetched,
                        dec,
                        check,
                        depth + 1,
                    )?)
                } else {
                    None
                };
                let bytes = decode_part(dec, p, blob, base.as_deref(), word, check)?;
                if start == range.start && p.raw_len == range.end - range.start {
                    // The whole part: hand it over without a copy.
                    return Ok(bytes);
                }
                let lo = range.start.max(start) - start;
                let hi = range.end.min(start + p.raw_len) - start;
                out.extend_from_slice(&bytes[lo as usize..hi as usize]);
            }
        }
        Encoding::Cast { source, .. } => {
            let src_range = cast_source_range(&range);
            let src = read_at(
                records,
                source,
                src_range.clone(),
                fetched,
                dec,
                check,
                depth + 1,
            )?;
            let first = src_range.start / 2;
            let mut cast = vec![0u8; src.len() / 2];
            for (o, w) in cast.chunks_exact_mut(2).zip(src.chunks_exact(4)) {
                let bits =
                    crate::model::f32_to_bf16_bits(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
                o.copy_from_slice(&bits.to_le_bytes());
            }
            let lo = (range.start - first) as usize;
            if lo == 0 && cast.len() as u64 == range.end - range.start {
                return Ok(cast);
            }
            out.extend_from_slice(&cast[lo..lo + (range.end - range.start) as usize]);
        }
    }
    Ok(out)
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

    #[test]
    fn cast_ranges_cover_whole_elements() {
        assert_eq!(cast_source_range(&(0..2)), 0..4);
        assert_eq!(cast_source_range(&(1..3)), 0..8);
        assert_eq!(cast_source_range(&(4..6)), 8..12);
    }
}
