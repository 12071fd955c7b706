//! Stage 1: safetensors files — reading the header into a [`Model`], and writing a bf16 cast.
//!
//! The header is parsed from its own bytes (the 8-byte length prefix plus the JSON), never from
//! the whole file, so a streaming rebuild or a remote fingerprint can parse it after reading only
//! that much. Offsets are `u64` everywhere: on wasm32 `usize` stops at 4 GiB, and a model larger
//! than that must still parse there. Dtype names are those of the `safetensors` crate, whose
//! [`safetensors::Dtype`] we deserialize into, so a name the crate accepts, we accept.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use crate::error::{Error, Result};

/// Largest header the format allows (the `safetensors` crate's own limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The length of the little-endian header-size prefix.
pub const PREFIX_LEN: u64 = 8;

/// An element type of the safetensors format, with the code the delta format stores for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[allow(non_camel_case_types, missing_docs)]
pub enum DType {
    BOOL,
    F4,
    F6_E2M3,
    F6_E3M2,
    U8,
    I8,
    F8_E5M2,
    F8_E4M3,
    F8_E8M0,
    F8_E4M3FNUZ,
    F8_E5M2FNUZ,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    C64,
    F64,
    I64,
    U64,
}

/// Every dtype, indexed by its format code.
const ALL_DTYPES: [DType; 22] = [
    DType::BOOL,
    DType::F4,
    DType::F6_E2M3,
    DType::F6_E3M2,
    DType::U8,
    DType::I8,
    DType::F8_E5M2,
    DType::F8_E4M3,
    DType::F8_E8M0,
    DType::F8_E4M3FNUZ,
    DType::F8_E5M2FNUZ,
    DType::I16,
    DType::U16,
    DType::F16,
    DType::BF16,
    DType::I32,
    DType::U32,
    DType::F32,
    DType::C64,
    DType::F64,
    DType::I64,
    DType::U64,
];

impl DType {
    /// Every dtype the format knows.
    pub fn all() -> &'static [DType] {
        &ALL_DTYPES
    }

    /// The code stored in the delta's tensor table (see docs/FORMAT.md).
    pub fn code(self) -> u8 {
        ALL_DTYPES.iter().position(|&d| d == self).unwrap_or(0) as u8
    }

    /// The dtype with format code `code`.
    pub fn from_code(code: u8) -> Option<DType> {
        ALL_DTYPES.get(code as usize).copied()
    }

    /// The name used in safetensors headers, e.g. `"BF16"`.
    pub fn name(self) -> &'static str {
        match self {
            DType::BOOL => "BOOL",
            DType::F4 => "F4",
            DType::F6_E2M3 => "F6_E2M3",
            DType::F6_E3M2 => "F6_E3M2",
            DType::U8 => "U8",
            DType::I8 => "I8",
            DType::F8_E5M2 => "F8_E5M2",
            DType::F8_E4M3 => "F8_E4M3",
            DType::F8_E8M0 => "F8_E8M0",
            DType::F8_E4M3FNUZ => "F8_E4M3FNUZ",
            DType::F8_E5M2FNUZ => "F8_E5M2FNUZ",
            DType::I16 => "I16",
            DType::U16 => "U16",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I32 => "I32",
            DType::U32 => "U32",
            DType::F32 => "F32",
            DType::C64 => "C64",
            DType::F64 => "F64",
            DType::I64 => "I64",
            DType::U64 => "U64",
        }
    }

    /// Bits per element.
    pub fn bits(self) -> u64 {
        match self {
            DType::F4 => 4,
            DType::F6_E2M3 | DType::F6_E3M2 => 6,
            DType::BOOL
            | DType::U8
            | DType::I8
            | DType::F8_E5M2
            | DType::F8_E4M3
            | DType::F8_E8M0
            | DType::F8_E4M3FNUZ
            | DType::F8_E5M2FNUZ => 8,
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 16,
            DType::I32 | DType::U32 | DType::F32 => 32,
            DType::C64 | DType::F64 | DType::I64 | DType::U64 => 64,
        }
    }

    /// The machine word the delta transforms work on, in bytes: the element, except that packed
    /// sub-byte types are handled as bytes and a complex64 as its two f32 halves.
    pub fn word(self) -> usize {
        match self {
            DType::C64 => 4,
            d => (d.bits() as usize).div_ceil(8).max(1),
        }
    }

    /// Whether the word is an IEEE-style float with the sign in its top bit, so that ordering
    /// its bit patterns by value is a cheap bijection (the `diff` transform relies on it).
    pub fn is_signed_float(self) -> bool {
        matches!(
            self,
            DType::F8_E5M2
                | DType::F8_E4M3
                | DType::F8_E4M3FNUZ
                | DType::F8_E5M2FNUZ
                | DType::F16
                | DType::BF16
                | DType::F32
                | DType::C64
                | DType::F64
        )
    }

    fn from_crate(d: safetensors::Dtype) -> Option<DType> {
        use safetensors::Dtype as S;
        Some(match d {
            S::BOOL => DType::BOOL,
            S::F4 => DType::F4,
            S::F6_E2M3 => DType::F6_E2M3,
            S::F6_E3M2 => DType::F6_E3M2,
            S::U8 => DType::U8,
            S::I8 => DType::I8,
            S::F8_E5M2 => DType::F8_E5M2,
            S::F8_E4M3 => DType::F8_E4M3,
            S::F8_E8M0 => DType::F8_E8M0,
            S::F8_E4M3FNUZ => DType::F8_E4M3FNUZ,
            S::F8_E5M2FNUZ => DType::F8_E5M2FNUZ,
            S::I16 => DType::I16,
            S::U16 => DType::U16,
            S::F16 => DType::F16,
            S::BF16 => DType::BF16,
            S::I32 => DType::I32,
            S::U32 => DType::U32,
            S::F32 => DType::F32,
            S::C64 => DType::C64,
            S::F64 => DType::F64,
            S::I64 => DType::I64,
            S::U64 => DType::U64,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a model, with its bytes' place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    /// The tensor's key in the header.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// Absolute file offset of the first byte.
    pub start: u64,
    /// Absolute file offset one past the last byte.
    pub end: u64,
}

impl Tensor {
    /// Bytes of data.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the tensor holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// A parsed safetensors header: where every tensor lies in the file.
#[derive(Debug, Clone)]
pub struct Model {
    /// Length of the header region: the 8-byte prefix plus the JSON (and its padding).
    pub header_len: u64,
    /// Total file length the header implies (header region plus all tensor data).
    pub file_len: u64,
    /// Tensors in file order.
    pub tensors: Vec<Tensor>,
    /// The optional `__metadata__` map.
    pub metadata: Option<BTreeMap<String, String>>,
    by_name: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct RawTensor {
    dtype: safetensors::Dtype,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

impl Model {
    /// Reads the header-region length (`8 + N`) from the first 8 bytes of a file, checking the
    /// size limit and, when the file length is known, that the header fits in the file.
    pub fn header_region_len(prefix: &[u8], file_len: Option<u64>) -> Result<u64> {
        let Some(bytes) = prefix.get(..PREFIX_LEN as usize) else {
            return Err(Error::bad_safetensors(format!(
                "file is {} bytes, too short for the 8-byte header length",
                prefix.len()
            )));
        };
        let mut raw = [0u8; 8];
        raw.copy_from_slice(bytes);
        let n = u64::from_le_bytes(raw);
        if n > MAX_HEADER_LEN {
            return Err(Error::bad_safetensors(format!(
                "header length {n} exceeds the {MAX_HEADER_LEN}-byte limit"
            )));
        }
        let region = PREFIX_LEN + n;
        if let Some(len) = file_len {
            if region > len {
                return Err(Error::bad_safetensors(format!(
                    "header length {n} runs past the end of the file ({len} bytes)"
                )));
            }
        }
        Ok(region)
    }

    /// Parses a whole file held in memory.
    pub fn parse(file: &[u8]) -> Result<Model> {
        let region = Self::header_region_len(file, Some(file.len() as u64))?;
        Self::parse_header(&file[..region as usize], Some(file.len() as u64))
    }

    /// Parses the header region (prefix and JSON). With `file_len`, also checks that the tensor
    /// data ends exactly at the end of the file.
    pub fn parse_header(header: &[u8], file_len: Option<u64>) -> Result<Model> {
        let region = Self::header_region_len(header, file_len)?;
        let Some(json) = header.get(PREFIX_LEN as usize..region as usize) else {
            return Err(Error::bad_safetensors(format!(
                "header region is {region} bytes but only {} were given",
                header.len()
            )));
        };
        let text = std::str::from_utf8(json)
            .map_err(|e| Error::bad_safetensors(format!("header is not UTF-8: {e}")))?;
        let entries: BTreeMap<String, serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| Error::bad_safetensors(format!("header is not valid JSON: {e}")))?;

        let mut metadata = None;
        let mut tensors = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            if name == "__metadata__" {
                let map: BTreeMap<String, String> = serde_json::from_value(value).map_err(|e| {
                    Error::bad_safetensors(format!("__metadata__ must map strings to strings: {e}"))
                })?;
                metadata = Some(map);
                continue;
            }
            let raw: RawTensor = serde_json::from_value(value).map_err(|e| {
                Error::bad_safetensors(format!("tensor `{name}` has a bad entry: {e}"))
            })?;
            let dtype = DType::from_crate(raw.dtype).ok_or_else(|| {
                Error::bad_safetensors(format!(
                    "tensor `{name}`: unsupported dtype {:?}",
                    raw.dtype
                ))
            })?;
            let (start, end) = raw.data_offsets;
            tensors.push(Tensor {
                name,
                dtype,
                shape: raw.shape,
                start,
                end,
            });
        }

        tensors.sort_by_key(|t| (t.start, t.end));
        let mut cursor = 0u64;
        let mut previous: Option<&str> = None;
        for t in &tensors {
            let after = previous.map_or(String::new(), |p| format!(" after `{p}`"));
            if t.end < t.start {
                return Err(Error::bad_safetensors(format!(
                    "tensor `{}`: data_offsets [{}, {}] end before they start",
                    t.name, t.start, t.end
                )));
            }
            if t.start < cursor {
                return Err(Error::bad_safetensors(format!(
                    "tensor `{}`: data_offsets [{}, {}] overlap the data{after}, which ends at {cursor}",
                    t.name, t.start, t.end
                )));
            }
            if t.start > cursor {
                return Err(Error::bad_safetensors(format!(
                    "tensor `{}`: data_offsets start at {} leaving a hole of {} bytes{after}",
                    t.name,
                    t.start,
                    t.start - cursor
                )));
            }
            let elements = t
                .shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| {
                    Error::bad_safetensors(format!("tensor `{}`: shape overflows", t.name))
                })?;
            let bits = elements.checked_mul(t.dtype.bits()).ok_or_else(|| {
                Error::bad_safetensors(format!("tensor `{}`: size overflows", t.name))
            })?;
            if bits % 8 != 0 {
                return Err(Error::bad_safetensors(format!(
                    "tensor `{}`: {elements} elements of {} do not fill whole bytes",
                    t.name, t.dtype
                )));
            }
            if bits / 8 != t.len() {
                return Err(Error::bad_safetensors(format!(
                    "tensor `{}`: dtype {} and shape {:?} need {} bytes but data_offsets give {}",
                    t.name,
                    t.dtype,
                    t.shape,
                    bits / 8,
                    t.len()
                )));
            }
            cursor = t.end;
            previous = Some(&t.name);
        }

        let data_len = cursor;
        let implied = region
            .checked_add(data_len)
            .ok_or_else(|| Error::bad_safetensors("tensor data offsets overflow the file size"))?;
        if let Some(len) = file_len {
            if implied != len {
                return Err(Error::bad_safetensors(format!(
                    "the header describes {implied} bytes of file but the file has {len}"
                )));
            }
        }
        for t in &mut tensors {
            t.start += region;
            t.end += region;
        }
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Model {
            header_len: region,
            file_len: implied,
            tensors,
            metadata,
            by_name,
        })
    }

    /// The index of the tensor named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.index_of(name).map(|i| &self.tensors[i])
    }

    /// This model's counterpart of `t` (from another model): the tensor of the same name, dtype
    /// and shape, the one a delta is taken against.
    pub fn counterpart(&self, t: &Tensor) -> Option<&Tensor> {
        self.tensor(&t.name)
            .filter(|b| b.dtype == t.dtype && b.shape == t.shape)
    }
}

/// Rounds an f32 bit pattern to bf16 as PyTorch does: round to nearest, ties to even, and every
/// NaN to the canonical quiet NaN `0x7FC0`.
#[inline(always)]
pub fn f32_to_bf16_bits(u: u32) -> u16 {
    // Branch-free (a select), so that loops over it vectorize.
    let rounded = (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16;
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        0x7fc0
    } else {
        rounded
    }
}

/// Casts little-endian F32 words in `src` to BF16 words in `dst` (half as long), as
/// [`f32_to_bf16_bits`] does each one.
///
/// # Panics
/// If `dst` is not exactly half of `src`, or `src` is not whole words.
pub fn cast_f32_bytes_to_bf16(src: &[u8], dst: &mut [u8]) {
    assert!(src.len() % 4 == 0 && dst.len() * 2 == src.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn avx2(src: &[u8], dst: &mut [u8]) {
            cast_blocks(src, dst)
        }
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { avx2(src, dst) };
    }
    cast_blocks(src, dst)
}

#[inline(always)]
fn cast_blocks(src: &[u8], dst: &mut [u8]) {
    // Blocks of fixed size let the compiler keep the loop body in vector registers.
    const B: usize = 64;
    let mut s = src.chunks_exact(4 * B);
    let mut d = dst.chunks_exact_mut(2 * B);
    for (s, d) in (&mut s).zip(&mut d) {
        let s: &[u8; 4 * B] = s.try_into().expect("a whole block");
        let d: &mut [u8; 2 * B] = d.try_into().expect("a whole block");
        for k in 0..B {
            let u = u32::from_le_bytes([s[4 * k], s[4 * k + 1], s[4 * k + 2], s[4 * k + 3]]);
            let b = f32_to_bf16_bits(u).to_le_bytes();
            d[2 * k] = b[0];
            d[2 * k + 1] = b[1];
        }
    }
    for (s, d) in s
        .remainder()
        .chunks_exact(4)
        .zip(d.into_remainder().chunks_exact_mut(2))
    {
        let u = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        d.copy_from_slice(&f32_to_bf16_bits(u).to_le_bytes());
    }
}

/// Writes `file` with every F32 tensor cast to BF16 (round to nearest even), other tensors
/// unchanged. The header is written by this crate in file order, `__metadata__` first, padded
/// with spaces to a multiple of 8 — deterministic, so a bf16 base made here is the same file on
/// every machine, and a delta made against it decodes against any other copy made here.
pub fn cast_f32_to_bf16(file: &[u8], out: &mut (impl std::io::Write + ?Sized)) -> Result<()> {
    let model = Model::parse(file)?;
    let mut json = String::from("{");
    let mut first = true;
    if let Some(meta) = &model.metadata {
        let text = serde_json::to_string(meta)
            .map_err(|e| Error::invalid(format!("cannot write __metadata__: {e}")))?;
        json.push_str("\"__metadata__\":");
        json.push_str(&text);
        first = false;
    }
    let mut offset = 0u64;
    for t in &model.tensors {
        let (dtype, len) = if t.dtype == DType::F32 {
            (DType::BF16, t.len() / 2)
        } else {
            (t.dtype, t.len())
        };
        if !first {
            json.push(',');
        }
        first = false;
        let name = serde_json::to_string(&t.name)
            .map_err(|e| Error::invalid(format!("cannot write tensor name: {e}")))?;
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        json.push_str(&format!(
            "{name}:{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            shape.join(","),
            offset + len
        ));
        offset += len;
    }
    json.push('}');
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let io = |e| Error::io("writing the bf16 cast", e);
    out.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(json.as_bytes()).map_err(io)?;
    let mut buf = Vec::new();
    for t in &model.tensors {
        let data = &file[t.start as usize..t.end as usize];
        if t.dtype == DType::F32 {
            buf.resize(data.len() / 2, 0);
            cast_f32_bytes_to_bf16(data, &mut buf);
            out.write_all(&buf).map_err(io)?;
        } else {
            out.write_all(data).map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data_len: usize) -> Vec<u8> {
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        f.resize(f.len() + data_len, 7);
        f
    }

    #[test]
    fn dtype_codes_round_trip() {
        for &d in DType::all() {
            assert_eq!(DType::from_code(d.code()), Some(d));
        }
        assert_eq!(DType::from_code(200), None);
    }

    #[test]
    fn parses_in_offset_order() {
        let h = r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#;
        let m = Model::parse(&file(h, 12)).unwrap();
        assert_eq!(m.tensors[0].name, "a");
        assert_eq!(m.tensors[1].start, 8 + h.len() as u64 + 4);
        assert_eq!(m.file_len, 8 + h.len() as u64 + 12);
    }

    #[test]
    fn bf16_rounding_matches_torch() {
        assert_eq!(f32_to_bf16_bits(0x3f80_0000), 0x3f80);
        assert_eq!(f32_to_bf16_bits(0x3f80_8000), 0x3f80);
        assert_eq!(f32_to_bf16_bits(0x3f81_8000), 0x3f82);
        assert_eq!(f32_to_bf16_bits(0x7fc0_0001), 0x7fc0);
        assert_eq!(f32_to_bf16_bits(0xff80_0001), 0x7fc0);
        assert_eq!(f32_to_bf16_bits(0x7f7f_ffff), 0x7f80);
        assert_eq!(f32_to_bf16_bits(0xff80_0000), 0xff80);
    }

    #[test]
    fn slice_cast_matches_the_scalar_one() {
        // Across the kernel's 64-word blocks, with NaNs, infinities, ties and overflow.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut words: Vec<u32> = (0..64 * 7 + 5)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u32
            })
            .collect();
        words[..8].copy_from_slice(&[
            0x7fc0_0001,
            0xff80_0001,
            0x7f80_0000,
            0x7f7f_ffff,
            0x3f80_8000,
            0x3f81_8000,
            0,
            0x8000_0000,
        ]);
        let src: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut dst = vec![0u8; src.len() / 2];
        cast_f32_bytes_to_bf16(&src, &mut dst);
        for (w, d) in words.iter().zip(dst.chunks_exact(2)) {
            assert_eq!(
                u16::from_le_bytes([d[0], d[1]]),
                f32_to_bf16_bits(*w),
                "{w:#x}"
            );
        }
    }
}
