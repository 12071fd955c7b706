//! Stage 5: the delta container — preamble, manifest, blobs. docs/FORMAT.md is the normative
//! description; this module is its reference implementation.
//!
//! ```text
//! preamble (24 B) | manifest (manifest_len B) | blake3(manifest) (32 B) | payload (blobs)
//! ```
//!
//! The manifest carries everything but the compressed streams: the target's identity and header
//! bytes, the base's identity, and four tables (tensors, blobs, pieces, chunks). Parsing checks
//! every invariant a decoder relies on, so the rebuild code can index without bounds surprises.

use std::ops::Range;

use crate::codec::entropy::Codec;
use crate::codec::transform::{Layout, Transform};
use crate::error::{Error, Result};
use crate::model::{DType, Model};

/// First 8 bytes of every delta.
pub const MAGIC: [u8; 8] = *b"\x89ZIPLLM\n";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes before the manifest: magic, version, flags, manifest length.
pub const PREAMBLE_LEN: u64 = 24;
/// Length of the manifest checksum that follows the manifest.
pub const CHECKSUM_LEN: u64 = 32;
/// Largest manifest a decoder accepts.
pub const MAX_MANIFEST_LEN: u64 = 1 << 30;
/// Largest piece a decoder accepts (encoders use 4 MiB).
pub const MAX_PIECE_LEN: u64 = 64 << 20;
/// Largest chunk a decoder accepts (encoders aim at 4 MiB).
pub const MAX_CHUNK_LEN: u64 = 256 << 20;
/// Largest base header region a decoder accepts: the 8-byte length prefix plus the largest
/// safetensors header ([`crate::model::MAX_HEADER_LEN`]). A decoder reads and hashes this many
/// base bytes before anything else, so it is bounded like every other length.
pub const MAX_BASE_HEADER_LEN: u64 = crate::model::PREFIX_LEN + crate::model::MAX_HEADER_LEN;
/// Most streams a blob has (a sparse-planes blob of 8-byte words: the mask and 8 planes).
pub const MAX_STREAMS: u64 = 9;

/// The longest blob a piece of `piece_len` bytes can need: its header with the most streams,
/// then streams whose stored lengths add up to at most their raw lengths (a stream zstd does not
/// shrink is stored), which are the piece's bytes plus a change mask of one bit per word.
/// A decoder refuses longer blobs, so no field makes it buffer more than the piece warrants.
pub fn max_blob_len(piece_len: u64) -> u64 {
    4 + 17 * MAX_STREAMS + piece_len + piece_len.div_ceil(8)
}
/// Blob index meaning "no blob".
pub const NO_BLOB: u32 = u32::MAX;

/// How a tensor of the target was encoded (informational: the pieces say how to decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TensorKind {
    /// Bit-identical to the base tensor of the same name: no payload.
    SameAsBase = 0,
    /// Encoded against the base tensor of the same name, dtype and shape.
    Delta = 1,
    /// No usable base tensor: compressed on its own.
    Standalone = 2,
    /// Identical to an earlier tensor of the target: its pieces reuse that tensor's.
    Duplicate = 3,
}

impl TensorKind {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => TensorKind::SameAsBase,
            1 => TensorKind::Delta,
            2 => TensorKind::Standalone,
            3 => TensorKind::Duplicate,
            _ => return None,
        })
    }

    /// Name for reports.
    pub fn name(self) -> &'static str {
        match self {
            TensorKind::SameAsBase => "same-as-base",
            TensorKind::Delta => "delta",
            TensorKind::Standalone => "standalone",
            TensorKind::Duplicate => "duplicate",
        }
    }
}

/// One row of the tensor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// The tensor's name in the target header.
    pub name: String,
    /// Its dtype.
    pub dtype: DType,
    /// Output byte range.
    pub out: Range<u64>,
    /// How it was encoded.
    pub kind: TensorKind,
    /// `SameAsBase`/`Delta`: the base offset of the paired tensor; `Duplicate`: the index of
    /// the tensor it repeats; `Standalone`: 0.
    pub reference: u64,
}

/// Where a piece's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceSource {
    /// Copy base bytes starting at this offset.
    Base { base_start: u64 },
    /// Decode a blob and apply it to base bytes starting at `base_start`.
    BaseAndBlob { base_start: u64, blob: u32 },
    /// Decode a blob on its own.
    Blob { blob: u32 },
}

impl PieceSource {
    /// The blob this piece decodes, if any.
    pub fn blob(&self) -> Option<u32> {
        match *self {
            PieceSource::Base { .. } => None,
            PieceSource::BaseAndBlob { blob, .. } | PieceSource::Blob { blob } => Some(blob),
        }
    }

    /// The base offset this piece reads from, if any.
    pub fn base_start(&self) -> Option<u64> {
        match *self {
            PieceSource::Base { base_start } | PieceSource::BaseAndBlob { base_start, .. } => {
                Some(base_start)
            }
            PieceSource::Blob { .. } => None,
        }
    }
}

/// A contiguous run of output bytes within one tensor, decoded as a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// First output byte.
    pub out_start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What to decode it from.
    pub source: PieceSource,
}

impl Piece {
    /// Output byte range (saturating: a validated manifest never needs it to).
    pub fn out(&self) -> Range<u64> {
        self.out_start..self.out_start.saturating_add(self.len)
    }

    /// Base byte range read, if any (saturating: a validated manifest never needs it to).
    pub fn base(&self) -> Option<Range<u64>> {
        self.source
            .base_start()
            .map(|s| s..s.saturating_add(self.len))
    }
}

/// One row of the blob table: a byte range of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    /// Offset from the start of the payload.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// An independently decodable run of pieces, with checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// First output byte.
    pub out_start: u64,
    /// Output bytes.
    pub out_len: u64,
    /// Index of its first piece.
    pub first_piece: u32,
    /// Number of pieces.
    pub piece_count: u32,
    /// blake3 of the chunk's output bytes.
    pub out_blake3: [u8; 32],
    /// blake3 of the base bytes its pieces read, concatenated in piece order.
    pub base_blake3: [u8; 32],
}

impl Chunk {
    /// Output byte range (saturating: a validated manifest never needs it to).
    pub fn out(&self) -> Range<u64> {
        self.out_start..self.out_start.saturating_add(self.out_len)
    }

    /// Index range into the piece table. Saturating, because on 32-bit targets (wasm32) two
    /// `u32` fields can add up past `usize`; validation refuses such a chunk.
    pub fn pieces(&self) -> Range<usize> {
        let first = self.first_piece as usize;
        first..first.saturating_add(self.piece_count as usize)
    }
}

/// Everything in a delta except the compressed streams.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Length of the rebuilt file.
    pub target_size: u64,
    /// blake3 of the rebuilt file.
    pub target_blake3: [u8; 32],
    /// sha256 of the rebuilt file (the Hugging Face hub's LFS oid).
    pub target_sha256: [u8; 32],
    /// Length of the base file.
    pub base_size: u64,
    /// Length of the base's header region (prefix plus JSON).
    pub base_header_len: u64,
    /// blake3 of the base's header region.
    pub base_header_blake3: [u8; 32],
    /// The target's header region, verbatim.
    pub header: Vec<u8>,
    /// Tensor table, in file order.
    pub tensors: Vec<TensorEntry>,
    /// Blob table, in payload order.
    pub blobs: Vec<BlobEntry>,
    /// Piece table, in output order.
    pub pieces: Vec<Piece>,
    /// Chunk table, in output order.
    pub chunks: Vec<Chunk>,
    /// Payload length (sum of blob lengths).
    pub payload_len: u64,
}

/// The fixed fields in front of the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// Format version.
    pub version: u32,
    /// Manifest length in bytes.
    pub manifest_len: u64,
}

impl Preamble {
    /// Parses and checks the first [`PREAMBLE_LEN`] bytes of a delta.
    pub fn parse(bytes: &[u8]) -> Result<Preamble> {
        if bytes.len() < PREAMBLE_LEN as usize {
            if !MAGIC.starts_with(&bytes[..bytes.len().min(8)]) {
                return Err(Error::corrupt("not a zipllm delta (bad magic)"));
            }
            return Err(Error::truncated(format!(
                "{} bytes, shorter than the {PREAMBLE_LEN}-byte preamble",
                bytes.len()
            )));
        }
        if bytes[..8] != MAGIC {
            return Err(Error::corrupt("not a zipllm delta (bad magic)"));
        }
        let mut r = Reader::new(&bytes[8..PREAMBLE_LEN as usize], "preamble");
        let version = r.u32()?;
        let flags = r.u32()?;
        let manifest_len = r.u64()?;
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        if flags != 0 {
            return Err(Error::corrupt(format!(
                "unknown flags {flags:#x} in the preamble"
            )));
        }
        if manifest_len > MAX_MANIFEST_LEN {
            return Err(Error::corrupt(format!(
                "manifest length {manifest_len} exceeds the {MAX_MANIFEST_LEN}-byte limit"
            )));
        }
        Ok(Preamble {
            version,
            manifest_len,
        })
    }

    /// Offset of the payload from the start of the delta.
    pub fn payload_offset(&self) -> u64 {
        PREAMBLE_LEN + self.manifest_len + CHECKSUM_LEN
    }
}

/// Little-endian reader over a byte slice that turns running out into a typed error.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader {
            bytes,
            pos: 0,
            what,
        }
    }

    pub(crate) fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let end = (self.pos as u64)
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len() as u64)
            .ok_or_else(|| Error::corrupt(format!("{} ends early", self.what)))?;
        let s = &self.bytes[self.pos..end as usize];
        self.pos = end as usize;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    pub(crate) fn hash(&mut self) -> Result<[u8; 32]> {
        let mut b = [0u8; 32];
        b.copy_from_slice(self.take(32)?);
        Ok(b)
    }

    /// A count of records of `record` bytes each, checked against the bytes left so a corrupt
    /// count cannot make the parser allocate more than the manifest holds.
    pub(crate) fn count(&mut self, record: u64) -> Result<usize> {
        let n = self.u32()? as u64;
        if n.saturating_mul(record) > (self.bytes.len() - self.pos) as u64 {
            return Err(Error::corrupt(format!(
                "{} declares {n} records but is too short",
                self.what
            )));
        }
        Ok(n as usize)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn len_u32(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::invalid(format!("too many {what} for the format ({n})")))
}

impl Manifest {
    /// Serializes the preamble, manifest and manifest checksum (everything before the payload).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut m = Vec::with_capacity(self.header.len() + 64 * self.pieces.len() + 4096);
        put_u64(&mut m, self.target_size);
        m.extend_from_slice(&self.target_blake3);
        m.extend_from_slice(&self.target_sha256);
        put_u64(&mut m, self.base_size);
        put_u64(&mut m, self.base_header_len);
        m.extend_from_slice(&self.base_header_blake3);
        put_u64(&mut m, self.header.len() as u64);
        m.extend_from_slice(&self.header);
        put_u32(&mut m, len_u32(self.tensors.len(), "tensors")?);
        for t in &self.tensors {
            put_u32(&mut m, len_u32(t.name.len(), "name bytes")?);
            m.extend_from_slice(t.name.as_bytes());
            m.push(t.dtype.code());
            m.push(t.kind as u8);
            put_u64(&mut m, t.out.start);
            put_u64(&mut m, t.out.end);
            put_u64(&mut m, t.reference);
        }
        put_u32(&mut m, len_u32(self.blobs.len(), "blobs")?);
        for b in &self.blobs {
            put_u64(&mut m, b.offset);
            put_u64(&mut m, b.len);
        }
        put_u32(&mut m, len_u32(self.pieces.len(), "pieces")?);
        for p in &self.pieces {
            let (kind, base_start, blob) = match p.source {
                PieceSource::Base { base_start } => (0u8, base_start, NO_BLOB),
                PieceSource::BaseAndBlob { base_start, blob } => (1, base_start, blob),
                PieceSource::Blob { blob } => (2, 0, blob),
            };
            m.push(kind);
            put_u64(&mut m, p.out_start);
            put_u64(&mut m, p.len);
            put_u64(&mut m, base_start);
            put_u32(&mut m, blob);
        }
        put_u32(&mut m, len_u32(self.chunks.len(), "chunks")?);
        for c in &self.chunks {
            put_u64(&mut m, c.out_start);
            put_u64(&mut m, c.out_len);
            put_u32(&mut m, c.first_piece);
            put_u32(&mut m, c.piece_count);
            m.extend_from_slice(&c.out_blake3);
            m.extend_from_slice(&c.base_blake3);
        }
        put_u64(&mut m, self.payload_len);
        if m.len() as u64 > MAX_MANIFEST_LEN {
            return Err(Error::invalid(format!(
                "the manifest would be {} bytes, more than the {MAX_MANIFEST_LEN} decoders accept",
                m.len()
            )));
        }

        let mut out = Vec::with_capacity(m.len() + 64);
        out.extend_from_slice(&MAGIC);
        put_u32(&mut out, VERSION);
        put_u32(&mut out, 0);
        put_u64(&mut out, m.len() as u64);
        out.extend_from_slice(&m);
        out.extend_from_slice(blake3::hash(&m).as_bytes());
        Ok(out)
    }

    /// Parses and validates a manifest. `bytes` is the manifest plus its 32-byte checksum.
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        if bytes.len() < CHECKSUM_LEN as usize {
            return Err(Error::truncated("the manifest is cut short"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN as usize);
        if blake3::hash(body).as_bytes() != sum {
            return Err(Error::corrupt("manifest checksum mismatch"));
        }
        let mut r = Reader::new(body, "manifest");
        let target_size = r.u64()?;
        let target_blake3 = r.hash()?;
        let target_sha256 = r.hash()?;
        let base_size = r.u64()?;
        let base_header_len = r.u64()?;
        let base_header_blake3 = r.hash()?;
        let header_len = r.u64()?;
        let header = r.take(header_len)?.to_vec();

        let n = r.count(4 + 1 + 1 + 24)?;
        let mut tensors = Vec::with_capacity(n);
        for _ in 0..n {
            let name_len = r.u32()? as u64;
            let name = std::str::from_utf8(r.take(name_len)?)
                .map_err(|_| Error::corrupt("a tensor name is not UTF-8"))?
                .to_owned();
            let dtype = DType::from_code(r.u8()?).ok_or_else(|| {
                Error::corrupt(format!("tensor `{name}` has an unknown dtype code"))
            })?;
            let kind = TensorKind::from_code(r.u8()?)
                .ok_or_else(|| Error::corrupt(format!("tensor `{name}` has an unknown kind")))?;
            let start = r.u64()?;
            let end = r.u64()?;
            let reference = r.u64()?;
            tensors.push(TensorEntry {
                name,
                dtype,
                out: start..end,
                kind,
                reference,
            });
        }
        let n = r.count(16)?;
        let mut blobs = Vec::with_capacity(n);
        for _ in 0..n {
            blobs.push(BlobEntry {
                offset: r.u64()?,
                len: r.u64()?,
            });
        }
        let n = r.count(29)?;
        let mut pieces = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = r.u8()?;
            let out_start = r.u64()?;
            let len = r.u64()?;
            let base_start = r.u64()?;
            let blob = r.u32()?;
            let source = match kind {
                0 => PieceSource::Base { base_start },
                1 => PieceSource::BaseAndBlob { base_start, blob },
                2 => PieceSource::Blob { blob },
                k => return Err(Error::corrupt(format!("unknown piece kind {k}"))),
            };
            pieces.push(Piece {
                out_start,
                len,
                source,
            });
        }
        let n = r.count(88)?;
        let mut chunks = Vec::with_capacity(n);
        for _ in 0..n {
            chunks.push(Chunk {
                out_start: r.u64()?,
                out_len: r.u64()?,
                first_piece: r.u32()?,
                piece_count: r.u32()?,
                out_blake3: r.hash()?,
                base_blake3: r.hash()?,
            });
        }
        let payload_len = r.u64()?;
        if !r.is_empty() {
            return Err(Error::corrupt("trailing bytes after the manifest tables"));
        }
        let m = Manifest {
            target_size,
            target_blake3,
            target_sha256,
            base_size,
            base_header_len,
            base_header_blake3,
            header,
            tensors,
            blobs,
            pieces,
            chunks,
            payload_len,
        };
        m.validate()?;
        Ok(m)
    }

    /// The target header, parsed.
    pub fn target_model(&self) -> Result<Model> {
        Model::parse_header(&self.header, Some(self.target_size))
            .map_err(|e| Error::corrupt(format!("the target header in the delta is invalid: {e}")))
    }

    /// Checks every invariant the decoder relies on (docs/FORMAT.md, "Invariants a decoder
    /// checks"). [`Manifest::parse`] calls it; a manifest built by hand is checked by
    /// [`crate::Plan::new`]. Every sum of fields is checked, in `u64` and against the limits,
    /// so no field can make a decoder wrap, index out of bounds or allocate past the limits,
    /// on 64-bit and 32-bit (wasm32) targets alike.
    pub fn validate(&self) -> Result<()> {
        let model = self.target_model()?;
        if model.header_len != self.header.len() as u64 {
            return Err(Error::corrupt(
                "target header length disagrees with its prefix",
            ));
        }
        if model.tensors.len() != self.tensors.len() {
            return Err(Error::corrupt("tensor table and target header disagree"));
        }
        for (i, (t, e)) in model.tensors.iter().zip(&self.tensors).enumerate() {
            if t.name != e.name
                || t.dtype != e.dtype
                || t.start != e.out.start
                || t.end != e.out.end
            {
                return Err(Error::corrupt(format!(
                    "tensor table row {i} disagrees with the target header"
                )));
            }
            if e.kind == TensorKind::Duplicate && e.reference >= i as u64 {
                return Err(Error::corrupt(format!(
                    "tensor `{}` duplicates a later tensor",
                    e.name
                )));
            }
        }
        if self.base_header_len > self.base_size {
            return Err(Error::corrupt("base header is longer than the base"));
        }
        if self.base_header_len > MAX_BASE_HEADER_LEN {
            return Err(Error::corrupt(format!(
                "base header length {} exceeds the {MAX_BASE_HEADER_LEN}-byte limit",
                self.base_header_len
            )));
        }

        let mut offset = 0u64;
        for (i, b) in self.blobs.iter().enumerate() {
            if b.offset != offset {
                return Err(Error::corrupt(format!(
                    "blob {i} is not where the table puts it"
                )));
            }
            offset = offset
                .checked_add(b.len)
                .ok_or_else(|| Error::corrupt("blob lengths overflow"))?;
        }
        if offset != self.payload_len {
            return Err(Error::corrupt("blob table and payload length disagree"));
        }
        // Blob ranges are the payload's offset in the delta plus these: keep the sum a number.
        if self
            .payload_len
            .checked_add(PREAMBLE_LEN + MAX_MANIFEST_LEN + CHECKSUM_LEN)
            .is_none()
        {
            return Err(Error::corrupt("payload length overflows"));
        }

        // Pieces tile the data region in order, each within one tensor, and read the base only
        // past its header. The longest piece using each blob bounds the blob's length.
        let mut blob_need = vec![0u64; self.blobs.len()];
        let mut cursor = model.header_len;
        let mut tensor = 0usize;
        for (i, p) in self.pieces.iter().enumerate() {
            if p.out_start != cursor || p.len == 0 || p.len > MAX_PIECE_LEN {
                return Err(Error::corrupt(format!(
                    "piece {i} does not continue the output"
                )));
            }
            while tensor < model.tensors.len() && model.tensors[tensor].end <= p.out_start {
                tensor += 1;
            }
            let Some(t) = model.tensors.get(tensor) else {
                return Err(Error::corrupt(format!(
                    "piece {i} lies past the last tensor"
                )));
            };
            // out_start is at most the file length and len at most 64 MiB: no overflow.
            let end = p.out_start + p.len;
            if end > t.end {
                return Err(Error::corrupt(format!(
                    "piece {i} crosses the end of tensor `{}`",
                    t.name
                )));
            }
            if (p.out_start - t.start) % t.dtype.word() as u64 != 0
                || p.len % t.dtype.word() as u64 != 0
            {
                return Err(Error::corrupt(format!(
                    "piece {i} splits a word of tensor `{}`",
                    t.name
                )));
            }
            if let Some(base_start) = p.source.base_start() {
                let inside = base_start
                    .checked_add(p.len)
                    .is_some_and(|base_end| base_end <= self.base_size);
                if base_start < self.base_header_len || !inside {
                    return Err(Error::corrupt(format!(
                        "piece {i} reads outside the base's tensor data"
                    )));
                }
            }
            if let Some(b) = p.source.blob() {
                let Some(need) = blob_need.get_mut(b as usize) else {
                    return Err(Error::corrupt(format!(
                        "piece {i} names a blob that does not exist"
                    )));
                };
                *need = (*need).max(p.len);
            }
            cursor = end;
        }
        if cursor != self.target_size {
            return Err(Error::corrupt("pieces do not cover the whole target"));
        }
        for (i, (b, &need)) in self.blobs.iter().zip(&blob_need).enumerate() {
            if b.len > max_blob_len(need) {
                return Err(Error::corrupt(format!(
                    "blob {i} is {} bytes, more than a {need}-byte piece can need",
                    b.len
                )));
            }
        }

        let mut piece = 0u64;
        let mut out = model.header_len;
        for (i, c) in self.chunks.iter().enumerate() {
            let end = c.first_piece as u64 + c.piece_count as u64;
            if c.first_piece as u64 != piece || c.piece_count == 0 || end > self.pieces.len() as u64
            {
                return Err(Error::corrupt(format!(
                    "chunk {i} does not continue the piece table"
                )));
            }
            // Within the piece table, so each bound fits in usize; pieces are at most 64 MiB.
            let len: u64 = self.pieces[piece as usize..end as usize]
                .iter()
                .map(|p| p.len)
                .sum();
            if c.out_start != out || c.out_len != len || len > MAX_CHUNK_LEN {
                return Err(Error::corrupt(format!(
                    "chunk {i} has the wrong output range"
                )));
            }
            piece = end;
            out += len;
        }
        if piece != self.pieces.len() as u64 {
            return Err(Error::corrupt("chunks do not cover every piece"));
        }
        // Blobs are stored in order of first use, so a streaming decoder finds each blob at or
        // before the chunk that first needs it.
        let mut next = 0u32;
        for p in &self.pieces {
            if let Some(b) = p.source.blob() {
                if b > next {
                    return Err(Error::corrupt("blobs are not stored in order of first use"));
                }
                if b == next {
                    next += 1;
                }
            }
        }
        if next as usize != self.blobs.len() {
            return Err(Error::corrupt("the payload holds blobs no piece uses"));
        }
        Ok(())
    }

    /// The base byte ranges chunk `index` reads, in piece order, adjacent ranges merged.
    pub fn base_reads(&self, index: usize) -> Vec<Range<u64>> {
        let mut reads: Vec<Range<u64>> = Vec::new();
        for p in &self.pieces[self.chunks[index].pieces()] {
            if let Some(r) = p.base() {
                match reads.last_mut() {
                    Some(last) if last.end == r.start => last.end = r.end,
                    _ => reads.push(r),
                }
            }
        }
        reads
    }
}

/// The self-describing header at the start of every blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobHeader {
    /// The residual transform.
    pub transform: Transform,
    /// The stream layout.
    pub layout: Layout,
    /// Word size in bytes.
    pub word: u8,
    /// Per stream: codec, decoded length, stored length.
    pub streams: Vec<(Codec, u64, u64)>,
}

impl BlobHeader {
    /// Bytes the header occupies.
    pub fn encoded_len(&self) -> usize {
        4 + 17 * self.streams.len()
    }

    /// Appends the header.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(self.transform as u8);
        out.push(self.layout as u8);
        out.push(self.word);
        out.push(self.streams.len() as u8);
        for &(codec, raw, stored) in &self.streams {
            out.push(codec as u8);
            put_u64(out, raw);
            put_u64(out, stored);
        }
    }

    /// Parses a blob's header; returns it and the offset of the first stream.
    pub fn parse(blob: &[u8]) -> Result<(BlobHeader, usize)> {
        let mut r = Reader::new(blob, "blob header");
        let transform =
            Transform::from_code(r.u8()?).ok_or_else(|| Error::corrupt("unknown transform"))?;
        let layout = Layout::from_code(r.u8()?).ok_or_else(|| Error::corrupt("unknown layout"))?;
        let word = r.u8()?;
        let n = r.u8()? as usize;
        if layout.stream_count(word as usize) != Some(n) {
            return Err(Error::corrupt(format!(
                "a {} blob of {word}-byte words cannot have {n} streams",
                layout.name()
            )));
        }
        let mut streams = Vec::with_capacity(n);
        let mut total = 0u64;
        for _ in 0..n {
            let codec =
                Codec::from_code(r.u8()?).ok_or_else(|| Error::corrupt("unknown stream codec"))?;
            let raw = r.u64()?;
            let stored = r.u64()?;
            if codec == Codec::Stored && raw != stored {
                return Err(Error::corrupt("a stored stream's lengths differ"));
            }
            total = total.saturating_add(stored);
            streams.push((codec, raw, stored));
        }
        let header = BlobHeader {
            transform,
            layout,
            word,
            streams,
        };
        let start = header.encoded_len();
        if total != (blob.len() - start) as u64 {
            return Err(Error::corrupt("blob streams do not fill the blob"));
        }
        Ok((header, start))
    }
}
