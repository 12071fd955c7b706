//! A strict reading of parts of a zstd frame (RFC 8878): the Huffman-coded literals (4.2.1.2
//! to 4.2.1.3) and the sequences section header (3.1.1.3.2.1): enough to tell whether a frame
//! on which C zstd and ruzstd disagree is a valid frame (a bug in one of them) or a frame that
//! breaks the format there, where each decoder may legitimately choose its own leniency.
//!
//! The rule checked is the format's: "The process continues up to reading the required number
//! of symbols per stream. If a bitstream is not entirely and exactly consumed, hence reaching
//! exactly its beginning position with all bits consumed, the decoding process is considered
//! faulty." With 4 streams, streams 1 to 3 regenerate `(Regenerated_Size + 3) / 4` bytes each and
//! stream 4 the rest. The Huffman table description (direct or FSE-compressed weights) is read
//! and checked as the reference decoder does.
//!
//! In the sequences section only the header is read: the number of sequences (with none, the
//! block must end there) and the reserved bits of Symbol_Compression_Modes, which must be zero.
//! A frame broken elsewhere (the sequences' FSE tables and bitstream, offsets, lengths) is not
//! reported here.

/// Why `frame` is faulty in the parts read here, or `None` when they read exactly (or the
/// frame's structure cannot be walked).
pub fn violation(frame: &[u8]) -> Option<&'static str> {
    let mut r = Bytes { b: frame, at: 0 };
    if r.le(4)? != 0xFD2F_B528 {
        return None;
    }
    let fhd = r.le(1)? as u8;
    let single_segment = fhd & 0x20 != 0;
    if !single_segment {
        r.skip(1)?;
    }
    r.skip([0, 1, 2, 4][(fhd & 3) as usize])?;
    r.skip(match fhd >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    })?;
    let mut table: Option<HufTable> = None;
    loop {
        let header = r.le(3)? as u32;
        let last = header & 1 != 0;
        let size = (header >> 3) as usize;
        match (header >> 1) & 3 {
            0 => r.skip(size)?,
            1 => r.skip(1)?,
            2 => {
                let block = r.take(size)?;
                match check_literals(block, &mut table) {
                    Err(why) => return why,
                    Ok(used) => {
                        if let Some(why) = check_sequences_header(block.get(used..)?) {
                            return Some(why);
                        }
                    }
                }
            }
            _ => return None,
        }
        if last {
            return None;
        }
    }
}

/// The sequences section header: a count of zero ends the block; otherwise the reserved bits
/// of Symbol_Compression_Modes are zero.
fn check_sequences_header(seq: &[u8]) -> Option<&'static str> {
    let b0 = *seq.first()?;
    let (count, len) = match b0 {
        0 => (0, 1),
        1..=127 => (usize::from(b0), 1),
        128..=254 => ((usize::from(b0 - 128) << 8) + usize::from(*seq.get(1)?), 2),
        255 => (usize::from(u16::from_le_bytes([*seq.get(1)?, *seq.get(2)?])) + 0x7F00, 3),
    };
    if count == 0 {
        return (seq.len() != 1).then_some("bytes after a sequences section with no sequences");
    }
    let modes = *seq.get(len)?;
    (modes & 3 != 0).then_some("reserved bits set in Symbol_Compression_Modes")
}

/// `Err(Some(reason))`: faulty; `Err(None)`: cannot tell; `Ok(n)`: this literals section is
/// fine and takes `n` bytes.
fn check_literals(block: &[u8], table: &mut Option<HufTable>) -> Result<usize, Option<&'static str>> {
    let b0 = *block.first().ok_or(None)?;
    let kind = b0 & 3;
    if kind < 2 {
        // Raw or RLE literals: only their length matters here.
        let b = |i: usize| block.get(i).map(|&x| usize::from(x)).ok_or(None);
        let (header, regenerated) = match (b0 >> 2) & 3 {
            0 | 2 => (1, usize::from(b0 >> 3)),
            1 => (2, usize::from(b0 >> 4) + (b(1)? << 4)),
            _ => (3, usize::from(b0 >> 4) + (b(1)? << 4) + (b(2)? << 12)),
        };
        return Ok(header + if kind == 0 { regenerated } else { 1 });
    }
    let size_format = (b0 >> 2) & 3;
    let (header_len, bits) = match size_format {
        0 | 1 => (3, 10),
        2 => (4, 14),
        _ => (5, 18),
    };
    let mut h = [0u8; 8];
    h[..header_len].copy_from_slice(block.get(..header_len).ok_or(None)?);
    let h = u64::from_le_bytes(h) >> 4;
    let regenerated = (h & ((1 << bits) - 1)) as usize;
    let compressed = ((h >> bits) & ((1 << bits) - 1)) as usize;
    let data = block
        .get(header_len..header_len + compressed)
        .ok_or(Some("literals run past their block"))?;
    let streams = if kind == 2 {
        let (t, used) = read_table(data)?;
        *table = Some(t);
        &data[used..]
    } else {
        data
    };
    let t = table.as_ref().ok_or(Some("treeless literals without a table"))?;
    if size_format == 0 {
        check_stream(t, streams, regenerated).map_err(Some)?;
        return Ok(header_len + compressed);
    }
    if streams.len() < 6 {
        return Err(Some("no room for the jump table"));
    }
    let s1 = u16::from_le_bytes([streams[0], streams[1]]) as usize;
    let s2 = u16::from_le_bytes([streams[2], streams[3]]) as usize;
    let s3 = u16::from_le_bytes([streams[4], streams[5]]) as usize;
    let rest = &streams[6..];
    if s1 + s2 + s3 > rest.len() {
        return Err(Some("jump table past the streams"));
    }
    let segment = regenerated.div_ceil(4);
    let last = regenerated
        .checked_sub(3 * segment)
        .ok_or(Some("too few literals for 4 streams"))?;
    let cuts = [
        (&rest[..s1], segment),
        (&rest[s1..s1 + s2], segment),
        (&rest[s1 + s2..s1 + s2 + s3], segment),
        (&rest[s1 + s2 + s3..], last),
    ];
    for (stream, count) in cuts {
        check_stream(t, stream, count).map_err(Some)?;
    }
    Ok(header_len + compressed)
}

struct HufTable {
    max_bits: u32,
    /// Per state: bits consumed by the symbol it decodes (the symbol itself does not matter).
    nb_bits: Vec<u8>,
}

/// Decodes exactly `count` symbols and requires the bitstream to end exactly there.
fn check_stream(t: &HufTable, s: &[u8], count: usize) -> Result<(), &'static str> {
    let last = *s.last().ok_or("an empty Huffman stream")?;
    if last == 0 {
        return Err("a Huffman stream's last byte has no end marker");
    }
    let mut bits = BackBits::new(s, last);
    let max = t.max_bits;
    let mask = (1u32 << max) - 1;
    let mut state = bits.read(max) as u32;
    for _ in 0..count {
        let nb = u32::from(t.nb_bits[state as usize]);
        let rest = bits.read(nb) as u32;
        state = ((state << nb) + rest) & mask;
        if bits.offset < -(max as i64) {
            return Err("a Huffman stream is shorter than its symbols");
        }
    }
    if bits.offset != -(max as i64) {
        return Err("a Huffman stream does not end with its last symbol");
    }
    Ok(())
}

/// Reads the Huffman tree description; returns the table and the bytes it used.
fn read_table(data: &[u8]) -> Result<(HufTable, usize), Option<&'static str>> {
    let header = *data.first().ok_or(Some("no Huffman table description"))? as usize;
    let mut weights: Vec<u8>;
    let used;
    if header >= 128 {
        let n = header - 127;
        let bytes = data.get(1..1 + n.div_ceil(2)).ok_or(Some("weights past the literals"))?;
        weights = (0..n)
            .map(|i| if i % 2 == 0 { bytes[i / 2] >> 4 } else { bytes[i / 2] & 15 })
            .collect();
        used = 1 + n.div_ceil(2);
    } else {
        let fse = data.get(1..1 + header).ok_or(Some("weights past the literals"))?;
        weights = fse_weights(fse).map_err(Some)?;
        used = 1 + header;
    }
    if weights.len() > 255 {
        return Err(Some("too many Huffman weights"));
    }
    let mut total = 0u64;
    for &w in &weights {
        if w > 12 {
            return Err(Some("a Huffman weight above 12"));
        }
        if w > 0 {
            total += 1 << (w - 1);
        }
    }
    if total == 0 {
        return Err(Some("Huffman weights sum to zero"));
    }
    let max_bits = 64 - total.leading_zeros(); // highest set bit + 1
    if max_bits > 12 {
        return Err(Some("a Huffman table deeper than 12 bits"));
    }
    let left = (1u64 << max_bits) - total;
    if !left.is_power_of_two() {
        return Err(Some("Huffman weights do not complete a power of two"));
    }
    weights.push(left.trailing_zeros() as u8 + 1);
    if weights.iter().filter(|&&w| w == 1).count() < 2 {
        return Err(Some("fewer than two symbols of weight 1"));
    }
    // States by code: symbols sorted by weight (then symbol), lowest weight first.
    let size = 1usize << max_bits;
    let mut nb_bits = Vec::with_capacity(size);
    for w in 1..=max_bits as u8 {
        let n = weights.iter().filter(|&&x| x == w).count();
        let nb = (max_bits + 1 - u32::from(w)) as u8;
        nb_bits.extend(std::iter::repeat_n(nb, n << (w - 1)));
    }
    if nb_bits.len() != size {
        return Err(Some("Huffman codes do not fill the table"));
    }
    Ok((HufTable { max_bits, nb_bits }, used))
}

/// FSE-compressed Huffman weights: the distribution (accuracy log at most 6), then two
/// interleaved states read until the bitstream overflows.
fn fse_weights(src: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut f = FwdBits { b: src, bit: 0 };
    let log = 5 + f.read(4).ok_or("FSE header past its bytes")? as u32;
    if log > 6 {
        return Err("FSE accuracy log above 6 for Huffman weights");
    }
    let mut remaining: i32 = 1 << log;
    let mut probs: Vec<i32> = Vec::new();
    while remaining > 0 && probs.len() < 256 {
        let bits = 32 - ((remaining + 1) as u32).leading_zeros(); // highest set bit + 1
        let mut v = f.read(bits).ok_or("FSE header past its bytes")? as i32;
        let low_mask = (1i32 << (bits - 1)) - 1;
        let threshold = (1i32 << bits) - 1 - (remaining + 1);
        if (v & low_mask) < threshold {
            f.bit -= 1;
            v &= low_mask;
        } else if v > low_mask {
            v -= threshold;
        }
        let p = v - 1;
        remaining -= p.abs();
        probs.push(p);
        if p == 0 {
            loop {
                let repeat = f.read(2).ok_or("FSE header past its bytes")?;
                for _ in 0..repeat {
                    if probs.len() < 256 {
                        probs.push(0);
                    }
                }
                if repeat != 3 {
                    break;
                }
            }
        }
    }
    if remaining != 0 || probs.len() >= 256 {
        return Err("an FSE distribution that does not sum to its table");
    }
    let stream = src.get(f.bit.div_ceil(8)..).ok_or("FSE header past its bytes")?;
    let table = fse_table(&probs, log)?;
    let last = *stream.last().ok_or("no FSE bitstream for the weights")?;
    if last == 0 {
        return Err("the weights' bitstream has no end marker");
    }
    let mut bits = BackBits::new(stream, last);
    let first = bits.read(log) as usize;
    let mut states = [first, bits.read(log) as usize];
    let mut out = Vec::new();
    loop {
        for k in 0..2 {
            let (sym, nb, base) = table[states[k]];
            out.push(sym);
            states[k] = base as usize + bits.read(u32::from(nb)) as usize;
            if out.len() > 255 {
                return Err("too many Huffman weights");
            }
            if bits.offset < 0 {
                out.push(table[states[1 - k]].0);
                return Ok(out);
            }
        }
    }
}

/// (symbol, bits to read, next-state base) per state.
fn fse_table(probs: &[i32], log: u32) -> Result<Vec<(u8, u8, u16)>, &'static str> {
    let size = 1usize << log;
    let mut symbol = vec![0u8; size];
    let mut next = vec![0u32; probs.len()];
    let mut high = size;
    for (s, &p) in probs.iter().enumerate() {
        if p == -1 {
            high -= 1;
            symbol[high] = s as u8;
            next[s] = 1;
        }
    }
    let step = (size >> 1) + (size >> 3) + 3;
    let mut pos = 0usize;
    for (s, &p) in probs.iter().enumerate() {
        if p <= 0 {
            continue;
        }
        next[s] = p as u32;
        for _ in 0..p {
            symbol[pos] = s as u8;
            loop {
                pos = (pos + step) & (size - 1);
                if pos < high {
                    break;
                }
            }
        }
    }
    if pos != 0 {
        return Err("an FSE table that does not spread");
    }
    Ok(symbol
        .iter()
        .map(|&s| {
            let d = next[s as usize];
            next[s as usize] += 1;
            let nb = log - (31 - d.leading_zeros());
            (s, nb as u8, ((d << nb) as usize - size) as u16)
        })
        .collect())
}

/// A backward bitstream (zstd's): read from the end, zeros past the beginning.
struct BackBits<'a> {
    b: &'a [u8],
    /// Bits left before the beginning (negative once reads run past it).
    offset: i64,
}

impl<'a> BackBits<'a> {
    fn new(b: &'a [u8], last: u8) -> Self {
        let padding = 8 - (7 - last.leading_zeros() as i64);
        BackBits {
            b,
            offset: b.len() as i64 * 8 - padding,
        }
    }

    fn read(&mut self, n: u32) -> u64 {
        self.offset -= i64::from(n);
        let mut v = 0u64;
        for i in (0..i64::from(n)).rev() {
            let at = self.offset + i;
            let bit = if at >= 0 {
                (self.b[(at / 8) as usize] >> (at % 8)) & 1
            } else {
                0
            };
            v = (v << 1) | u64::from(bit);
        }
        v
    }
}

/// A forward little-endian bitstream (FSE distributions).
struct FwdBits<'a> {
    b: &'a [u8],
    bit: usize,
}

impl FwdBits<'_> {
    fn read(&mut self, n: u32) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..n as usize {
            let at = self.bit + i;
            let byte = *self.b.get(at / 8)?;
            v |= u64::from((byte >> (at % 8)) & 1) << i;
        }
        self.bit += n as usize;
        Some(v)
    }
}

struct Bytes<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn le(&mut self, n: usize) -> Option<u64> {
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(self.take(n)?);
        Some(u64::from_le_bytes(v))
    }
}

#[cfg(test)]
mod tests {
    use super::violation;

    fn frames(dir: &str) -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()[3..].to_vec()))
            .collect();
        v.sort();
        v
    }

    /// Every frame the encoders wrote (the zstd_diff seeds) reads exactly.
    #[test]
    fn real_frames_read_exactly() {
        for (name, frame) in frames("corpus/zstd_diff") {
            assert_eq!(violation(&frame), None, "{name}");
        }
    }

    /// The frames on which C zstd and ruzstd disagreed break the format.
    #[test]
    fn divergent_frames_are_faulty() {
        for (name, frame) in frames("artifacts/zstd_diff") {
            if name.contains("invalid-frame") {
                assert!(violation(&frame).is_some(), "{name}");
            }
        }
    }
}
