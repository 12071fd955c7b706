//! Stage 6: rebuilding the target — a sans-I/O core every adapter drives.
//!
//! [`Plan`] wraps a parsed manifest with what decoding needs (word sizes, blob lifetimes) and
//! decodes any chunk on its own, given the chunk's blobs and base bytes; the native adapter
//! calls it from many threads, a range request calls it for a few chunks.
//!
//! [`Rebuilder`] is the streaming machine: it is fed delta bytes in order and base bytes on
//! request, and hands out output bytes in file order, every chunk checked before it is handed
//! out. It never holds more than one chunk's output, one chunk's base bytes, the blobs of the
//! chunk being decoded and blobs a later chunk will use again (duplicated tensors), so its
//! memory does not grow with the model.

use std::mem::MaybeUninit;
use std::ops::Range;

use sha2::Digest as _;

use crate::codec::blob::BlobDecoder;
use crate::codec::format::{Manifest, PieceSource, Preamble, PREAMBLE_LEN};
use crate::error::{Error, Result};

/// A manifest prepared for decoding.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Offset of the payload in the delta.
    pub payload_offset: u64,
    piece_word: Vec<u8>,
    /// Per chunk, the blobs first used by that chunk (a contiguous index range).
    new_blobs: Vec<Range<u32>>,
    /// Per blob, the last chunk that uses it.
    last_use: Vec<u32>,
}

/// Hex of a hash, for messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Plan {
    /// Prepares a manifest, checking it first ([`Manifest::validate`]): one built by hand is
    /// held to the same invariants as one parsed from a delta.
    pub fn new(manifest: Manifest, payload_offset: u64) -> Result<Plan> {
        manifest.validate()?;
        Plan::prepare(manifest, payload_offset)
    }

    /// Prepares a manifest already validated.
    fn prepare(manifest: Manifest, payload_offset: u64) -> Result<Plan> {
        if payload_offset.checked_add(manifest.payload_len).is_none() {
            return Err(Error::corrupt("the delta's length overflows"));
        }
        let model = manifest.target_model()?;
        let mut piece_word = Vec::with_capacity(manifest.pieces.len());
        let mut t = 0usize;
        for p in &manifest.pieces {
            while model.tensors[t].end <= p.out_start {
                t += 1;
            }
            piece_word.push(model.tensors[t].dtype.word() as u8);
        }
        let mut new_blobs = Vec::with_capacity(manifest.chunks.len());
        let mut last_use = vec![0u32; manifest.blobs.len()];
        let mut next = 0u32;
        for (ci, c) in manifest.chunks.iter().enumerate() {
            let start = next;
            for p in &manifest.pieces[c.pieces()] {
                if let Some(b) = p.source.blob() {
                    if b == next {
                        next += 1;
                    }
                    last_use[b as usize] = ci as u32;
                }
            }
            new_blobs.push(start..next);
        }
        Ok(Plan {
            manifest,
            payload_offset,
            piece_word,
            new_blobs,
            last_use,
        })
    }

    /// Parses a whole delta's head: `bytes` must hold at least the preamble, manifest and
    /// checksum (the payload may follow or not).
    pub fn from_delta_head(bytes: &[u8]) -> Result<Plan> {
        let pre = Preamble::parse(bytes)?;
        let end = pre.payload_offset();
        if (bytes.len() as u64) < end {
            return Err(Error::truncated(format!(
                "the delta is {} bytes but its manifest ends at byte {end}",
                bytes.len()
            )));
        }
        let manifest = Manifest::parse(&bytes[PREAMBLE_LEN as usize..end as usize])?;
        Plan::prepare(manifest, end)
    }

    /// Total length of the delta this plan came from.
    pub fn delta_len(&self) -> u64 {
        self.payload_offset + self.manifest.payload_len
    }

    /// Checks the base's identity (length and header) before any chunk is decoded.
    pub fn check_base(&self, base_len: Option<u64>, base_header: &[u8]) -> Result<()> {
        let m = &self.manifest;
        let found_header = blake3::hash(base_header);
        let size_ok = base_len.is_none_or(|n| n == m.base_size);
        if !size_ok || found_header.as_bytes() != &m.base_header_blake3 {
            return Err(Error::wrong_base(format!(
                "delta was made against a base of {} bytes with header blake3 {}, this base is {} with header blake3 {}",
                m.base_size,
                hex(&m.base_header_blake3),
                base_len.map_or("of unknown size".to_string(), |n| format!("{n} bytes")),
                found_header.to_hex()
            )));
        }
        Ok(())
    }

    /// The base byte range holding the base's header.
    pub fn base_header_range(&self) -> Range<u64> {
        0..self.manifest.base_header_len
    }

    /// The delta byte range holding blob `index`.
    pub fn blob_range(&self, index: u32) -> Range<u64> {
        let b = self.manifest.blobs[index as usize];
        self.payload_offset + b.offset..self.payload_offset + b.offset + b.len
    }

    /// The blobs chunk `index` decodes, each once, in order.
    pub fn chunk_blobs(&self, index: usize) -> Vec<u32> {
        let mut v: Vec<u32> = self.manifest.pieces[self.manifest.chunks[index].pieces()]
            .iter()
            .filter_map(|p| p.source.blob())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The chunks that cover output bytes `range` (header bytes need no chunk).
    pub fn chunks_for(&self, range: Range<u64>) -> Range<usize> {
        let chunks = &self.manifest.chunks;
        let first = chunks.partition_point(|c| c.out_start + c.out_len <= range.start);
        let last = chunks.partition_point(|c| c.out_start < range.end);
        first..last.max(first)
    }

    /// Checks that output bytes `range` lie within the target, for a range rebuild.
    pub fn check_range(&self, range: &Range<u64>) -> Result<()> {
        let size = self.manifest.target_size;
        if range.start > range.end || range.end > size {
            return Err(Error::invalid(format!(
                "range {}..{} is outside the {size}-byte file",
                range.start, range.end
            )));
        }
        Ok(())
    }

    /// The header bytes inside output bytes `range` (checked by [`Plan::check_range`]): a range
    /// rebuild hands these out first, then the part of each chunk of [`Plan::chunks_for`]
    /// that [`Plan::decode_chunk_within`] returns.
    pub fn header_within(&self, range: &Range<u64>) -> &[u8] {
        let header = &self.manifest.header;
        let end = range.end.min(header.len() as u64) as usize;
        header.get(range.start as usize..end).unwrap_or(&[])
    }

    /// Decodes chunk `index` (one of [`Plan::chunks_for`] `range`) and returns its bytes
    /// inside `range`, checked as [`Plan::decode_chunk`] checks them.
    pub fn decode_chunk_within<'a>(
        &self,
        index: usize,
        range: &Range<u64>,
        blob: impl Fn(u32) -> Option<&'a [u8]>,
        base: &[u8],
        decoder: &mut BlobDecoder,
    ) -> Result<Vec<u8>> {
        let c = self.manifest.chunks[index];
        let mut out = vec![0u8; c.out_len as usize];
        self.decode_chunk(index, blob, base, &mut out, decoder)?;
        let from = (range.start.max(c.out_start) - c.out_start) as usize;
        let to = (range.end.min(c.out_start + c.out_len) - c.out_start) as usize;
        if to < from {
            return Err(Error::invalid(format!(
                "chunk {index} is not inside the range {}..{}",
                range.start, range.end
            )));
        }
        out.truncate(to);
        out.drain(..from);
        Ok(out)
    }

    /// Decodes chunk `index` into `out` (exactly the chunk's length). `blob(i)` returns blob
    /// `i`'s bytes; `base` is the concatenation of [`Manifest::base_reads`] for this chunk.
    /// The output is checked against the chunk's checksum; on a mismatch the base bytes are
    /// checked too, to tell a wrong base from a corrupt delta.
    pub fn decode_chunk<'a>(
        &self,
        index: usize,
        blob: impl Fn(u32) -> Option<&'a [u8]>,
        base: &[u8],
        out: &mut [u8],
        decoder: &mut BlobDecoder,
    ) -> Result<()> {
        let m = &self.manifest;
        let chunk = &m.chunks[index];
        let base_len: u64 = m.pieces[chunk.pieces()]
            .iter()
            .filter_map(|p| p.base())
            .map(|r| r.end - r.start)
            .sum();
        if out.len() as u64 != chunk.out_len || base.len() as u64 != base_len {
            return Err(Error::invalid(format!("chunk {index}: wrong buffer sizes")));
        }
        let mut at_base = 0usize;
        let mut hasher = crate::hash::Hasher::new();
        for (k, p) in m.pieces[chunk.pieces()].iter().enumerate() {
            let word = self.piece_word[chunk.first_piece as usize + k] as usize;
            let o = (p.out_start - chunk.out_start) as usize;
            let dst = &mut out[o..o + p.len as usize];
            let mut base_slice = || {
                let s = &base[at_base..at_base + p.len as usize];
                at_base += p.len as usize;
                s
            };
            let get = |b: u32| {
                blob(b).ok_or_else(|| {
                    Error::invalid(format!("chunk {index}: blob {b} was not supplied"))
                })
            };
            let result = match p.source {
                PieceSource::Base { .. } => {
                    dst.copy_from_slice(base_slice());
                    Ok(())
                }
                PieceSource::BaseAndBlob { blob, .. } => {
                    decoder.decode(get(blob)?, Some(base_slice()), word, dst)
                }
                PieceSource::Blob { blob } => decoder.decode(get(blob)?, None, word, dst),
            };
            result.map_err(|e| match e {
                Error::CorruptDelta { what } => Error::corrupt(format!("chunk {index}: {what}")),
                other => other,
            })?;
            // Hash each piece while it is still in cache.
            hasher.update(dst);
        }
        if hasher.finalize().as_bytes() != &chunk.out_blake3 {
            if blake3::hash(base).as_bytes() != &chunk.base_blake3 {
                return Err(Error::wrong_base(format!(
                    "chunk {index} (output bytes {}..{}) reads base bytes that differ from those of the base the delta was made against",
                    chunk.out_start,
                    chunk.out_start + chunk.out_len
                )));
            }
            return Err(Error::corrupt(format!(
                "chunk {index} (output bytes {}..{}) fails its checksum",
                chunk.out_start,
                chunk.out_start + chunk.out_len
            )));
        }
        Ok(())
    }
}

impl Summary {
    /// The summary of a rebuild of `m`'s target that wrote `size` bytes. With `computed`, the
    /// output's sha256 and blake3, they (and the size) must be the delta's record: a mismatch
    /// means the delta's own checksums lie, so it is corrupt. Without, the record is reported
    /// and `full_hash_checked` says so.
    pub(crate) fn of(
        m: &Manifest,
        size: u64,
        computed: Option<([u8; 32], blake3::Hash)>,
    ) -> Result<Summary> {
        let mut summary = Summary {
            size,
            sha256: hex(&m.target_sha256),
            blake3: hex(&m.target_blake3),
            full_hash_checked: false,
        };
        if let Some((sha, blake)) = computed {
            if sha != m.target_sha256
                || blake.as_bytes() != &m.target_blake3
                || size != m.target_size
            {
                return Err(Error::corrupt(format!(
                    "the rebuilt file has sha256 {} but the delta promises {}",
                    hex(&sha),
                    hex(&m.target_sha256)
                )));
            }
            summary.sha256 = hex(&sha);
            summary.blake3 = blake.to_hex().to_string();
            summary.full_hash_checked = true;
        }
        Ok(summary)
    }
}

/// Fails unless the delta rebuilds the file the caller pinned.
pub(crate) fn check_expected(promised: &[u8; 32], expected: &[u8; 32]) -> Result<()> {
    if promised != expected {
        return Err(Error::UnexpectedTarget {
            what: format!(
                "the delta rebuilds the file with sha256 {}, not the expected {}",
                hex(promised),
                hex(expected)
            ),
        });
    }
    Ok(())
}

/// Delta bytes `r` out of `buffered`, which holds the delta from offset `offset` on.
fn delta_bytes(buffered: &[u8], offset: u64, r: Range<u64>) -> &[u8] {
    &buffered[(r.start - offset) as usize..(r.end - offset) as usize]
}

/// Appends `len` bytes to `v`, written in place by `fill`.
fn append_with(
    v: &mut Vec<u8>,
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<u8>]) -> &mut [u8],
) -> Result<()> {
    if v.is_empty() {
        crate::codec::blob::reserve_scratch(v, len);
    }
    v.reserve(len);
    let spare = &mut v.spare_capacity_mut()[..len];
    let at = spare.as_ptr() as *const u8;
    let filled = fill(spare);
    if filled.as_ptr() != at || filled.len() != len {
        return Err(Error::invalid("a fill must return the bytes it was given"));
    }
    // SAFETY: `filled`, a `&mut [u8]` and so initialized, is exactly the first `len` bytes of
    // the spare capacity.
    unsafe { v.set_len(v.len() + len) };
    Ok(())
}

/// What the [`Rebuilder`] wants next, or has for you.
#[derive(Debug)]
pub enum Step<'a> {
    /// Feed more delta bytes with [`Rebuilder::push_delta`] (or [`Rebuilder::end_delta`]).
    NeedDelta,
    /// Answer with exactly these base bytes through [`Rebuilder::provide_base`].
    NeedBase(Range<u64>),
    /// The next output bytes, already verified, and their offset in the file (in file order;
    /// not contiguous for a machine rebuilding a part); valid until the next call.
    Output { at: u64, bytes: &'a [u8] },
    /// Everything was written and the whole-file hashes matched.
    Done(Summary),
}

/// The identity of a finished rebuild.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Bytes written.
    pub size: u64,
    /// sha256 of the output, hex: computed over the bytes written when `full_hash_checked`,
    /// else the value the delta records (every chunk was still checked against its blake3).
    pub sha256: String,
    /// blake3 of the output, hex; computed or recorded as `sha256` is.
    pub blake3: String,
    /// Whether `sha256` and `blake3` were computed over the output and found equal to the
    /// delta's record, rather than copied from it.
    pub full_hash_checked: bool,
}

enum Phase {
    Preamble,
    Manifest { payload_offset: u64 },
    BaseHeader,
    Header,
    Chunk { index: usize },
    Finished,
    Failed,
}

/// The streaming rebuild machine. Drive it with [`Rebuilder::poll`].
pub struct Rebuilder {
    phase: Phase,
    base_len: Option<u64>,
    verify_whole: bool,
    /// Delta bytes received; the first `input_head` are consumed, and dropped once they are
    /// half the buffer (dropping them at every chunk moved the read-ahead each time).
    input: Vec<u8>,
    input_head: usize,
    /// Delta offset of `input[input_head]`.
    input_offset: u64,
    delta_ended: bool,
    plan: Option<Plan>,
    /// Blobs kept for later chunks, by index.
    kept: std::collections::BTreeMap<u32, Vec<u8>>,
    /// The kept blobs by (last chunk using it, blob), so retiring a chunk drops the blobs it
    /// used last without scanning every kept blob.
    expiry: std::collections::BTreeSet<(u32, u32)>,
    /// The base reads of the current chunk; those before `base_next` were answered.
    base_reads: Vec<Range<u64>>,
    base_next: usize,
    base_buf: Vec<u8>,
    /// The sha256 the caller expects of the output (the hub's LFS oid), if pinned.
    expected_sha256: Option<[u8; 32]>,
    out: Vec<u8>,
    decoder: BlobDecoder,
    sha: sha2::Sha256,
    blake: crate::hash::Hasher,
    written: u64,
    /// File offset of the bytes of the last [`Step::Output`].
    out_offset: u64,
    /// This machine decodes the chunks whose index is `part` modulo `parts`.
    part: usize,
    parts: usize,
    summary: Option<Summary>,
}

impl Rebuilder {
    /// A machine for a base of `base_len` bytes (`None` if unknown: the header check then
    /// stands alone). With `verify_whole`, the whole output's sha256 and blake3 are checked
    /// at the end as well as every chunk's checksum.
    pub fn new(base_len: Option<u64>, verify_whole: bool) -> Result<Self> {
        Ok(Rebuilder {
            phase: Phase::Preamble,
            base_len,
            verify_whole,
            input: Vec::new(),
            input_head: 0,
            input_offset: 0,
            delta_ended: false,
            plan: None,
            kept: Default::default(),
            expiry: Default::default(),
            base_reads: Vec::new(),
            base_next: 0,
            base_buf: Vec::new(),
            expected_sha256: None,
            out: Vec::new(),
            decoder: BlobDecoder::new()?,
            sha: sha2::Sha256::new(),
            blake: crate::hash::Hasher::new(),
            written: 0,
            out_offset: 0,
            part: 0,
            parts: 1,
            summary: None,
        })
    }

    /// Makes this machine rebuild only part `part` of `parts`: the chunks whose index is `part`
    /// modulo `parts` (part 0 also the header). `parts` machines fed the same delta (and their
    /// own base readers) rebuild the file together, one core each; every chunk is still
    /// checked. Must be called before the first poll, and not with the whole-file hashes,
    /// which need every byte.
    pub fn set_part(&mut self, part: usize, parts: usize) -> Result<()> {
        if parts == 0 || part >= parts {
            return Err(Error::invalid(format!(
                "there is no part {part} of {parts}"
            )));
        }
        if parts > 1 && self.verify_whole {
            return Err(Error::invalid(
                "a machine rebuilding part of the file cannot check the whole file's hashes",
            ));
        }
        if !matches!(self.phase, Phase::Preamble) {
            return Err(Error::invalid("the part is set before the rebuild starts"));
        }
        self.part = part;
        self.parts = parts;
        Ok(())
    }

    /// Pins the sha256 the output must have (the hub's LFS oid): a delta whose manifest
    /// promises another file fails with [`crate::ErrorCode::UnexpectedTarget`] before any
    /// chunk is decoded, and the whole output is hashed and compared at the end. Needs
    /// `verify_whole`; must be called before the first poll.
    pub fn expect_sha256(&mut self, sha256: [u8; 32]) -> Result<()> {
        if !self.verify_whole {
            return Err(Error::invalid(
                "an expected sha256 needs the whole-file hash (do not turn it off)",
            ));
        }
        if !matches!(self.phase, Phase::Preamble) {
            return Err(Error::invalid(
                "the expected sha256 is set before the rebuild starts",
            ));
        }
        self.expected_sha256 = Some(sha256);
        Ok(())
    }

    fn selected(&self, chunk: usize) -> bool {
        chunk % self.parts == self.part
    }

    /// The plan, once the manifest has been read.
    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }

    /// Output bytes handed out so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Delta bytes consumed so far.
    pub fn delta_consumed(&self) -> u64 {
        self.input_offset
    }

    /// Appends delta bytes (in order).
    pub fn push_delta(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// Appends `len` delta bytes that `fill` writes straight into the machine's buffer, which
    /// saves a copy when they come from elsewhere (JS memory): `fill` gets `len` uninitialized
    /// bytes and returns them initialized.
    pub fn push_delta_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [MaybeUninit<u8>]) -> &mut [u8],
    ) -> Result<()> {
        append_with(&mut self.input, len, fill)
    }

    /// Says the delta has no more bytes.
    pub fn end_delta(&mut self) {
        self.delta_ended = true;
    }

    /// The next base read not answered yet.
    fn pending_base(&self) -> Option<&Range<u64>> {
        self.base_reads.get(self.base_next)
    }

    fn check_base_len(&self, got: usize) -> Result<()> {
        let Some(r) = self.pending_base() else {
            return Err(Error::invalid(
                "base bytes were given but none were asked for",
            ));
        };
        if got as u64 != r.end - r.start {
            return Err(Error::invalid(format!(
                "asked for base bytes {}..{} ({} bytes), got {got}",
                r.start,
                r.end,
                r.end - r.start
            )));
        }
        Ok(())
    }

    /// Answers the last [`Step::NeedBase`] with base bytes.
    pub fn provide_base(&mut self, bytes: &[u8]) -> Result<()> {
        self.check_base_len(bytes.len())?;
        self.base_buf.extend_from_slice(bytes);
        self.base_next += 1;
        Ok(())
    }

    /// [`Rebuilder::provide_base`] with the `len` bytes written by `fill`, as in
    /// [`Rebuilder::push_delta_with`].
    pub fn provide_base_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [MaybeUninit<u8>]) -> &mut [u8],
    ) -> Result<()> {
        self.check_base_len(len)?;
        append_with(&mut self.base_buf, len, fill)?;
        self.base_next += 1;
        Ok(())
    }

    /// Delta bytes received and not consumed yet, from `input_offset`.
    fn buffered(&self) -> &[u8] {
        &self.input[self.input_head..]
    }

    /// Consumes input bytes up to delta offset `to`.
    fn consume_to(&mut self, to: u64) {
        self.input_head += (to - self.input_offset) as usize;
        self.input_offset = to;
        if self.input_head > self.input.len() / 2 {
            self.input.drain(..self.input_head);
            self.input_head = 0;
        }
    }

    /// Whether delta bytes up to `end` are buffered; errors if the delta ended before.
    fn have(&self, end: u64, what: &str) -> Result<bool> {
        if self.input_offset + self.buffered().len() as u64 >= end {
            return Ok(true);
        }
        if self.delta_ended {
            return Err(Error::truncated(format!(
                "the delta ends at byte {} but {what} needs bytes up to {end}",
                self.input_offset + self.buffered().len() as u64
            )));
        }
        Ok(false)
    }

    /// Advances as far as it can and says what it needs or has.
    pub fn poll(&mut self) -> Result<Step<'_>> {
        let r = self.advance();
        if r.is_err() {
            self.phase = Phase::Failed;
        }
        match r? {
            Some(Advance::NeedDelta) => Ok(Step::NeedDelta),
            Some(Advance::NeedBase(r)) => Ok(Step::NeedBase(r)),
            Some(Advance::Output) => Ok(Step::Output {
                at: self.out_offset,
                bytes: &self.out,
            }),
            None => Ok(Step::Done(self.summary.clone().unwrap_or_else(|| {
                Summary {
                    size: self.written,
                    sha256: String::new(),
                    blake3: String::new(),
                    full_hash_checked: false,
                }
            }))),
        }
    }

    fn emit(&mut self) {
        if self.verify_whole {
            self.sha.update(&self.out);
            self.blake.update(&self.out);
        }
        self.written += self.out.len() as u64;
    }

    fn advance(&mut self) -> Result<Option<Advance>> {
        loop {
            match self.phase {
                Phase::Preamble => {
                    // A wrong magic is reported as soon as the first bytes show it, even when
                    // the delta is shorter than the preamble.
                    let pre = match Preamble::parse(self.buffered()) {
                        Ok(pre) => pre,
                        Err(Error::TruncatedDelta { .. }) if !self.delta_ended => {
                            return Ok(Some(Advance::NeedDelta));
                        }
                        Err(e) => return Err(e),
                    };
                    self.phase = Phase::Manifest {
                        payload_offset: pre.payload_offset(),
                    };
                }
                Phase::Manifest { payload_offset } => {
                    if !self.have(payload_offset, "the manifest")? {
                        return Ok(Some(Advance::NeedDelta));
                    }
                    let plan = Plan::from_delta_head(&self.buffered()[..payload_offset as usize])?;
                    if let Some(expected) = self.expected_sha256 {
                        check_expected(&plan.manifest.target_sha256, &expected)?;
                    }
                    self.consume_to(payload_offset);
                    let header = plan.base_header_range();
                    self.base_reads = vec![header.clone()];
                    self.base_next = 0;
                    self.base_buf.clear();
                    self.plan = Some(plan);
                    self.phase = Phase::BaseHeader;
                    return Ok(Some(Advance::NeedBase(header)));
                }
                Phase::BaseHeader => {
                    if let Some(r) = self.pending_base() {
                        return Ok(Some(Advance::NeedBase(r.clone())));
                    }
                    let plan = self
                        .plan
                        .as_ref()
                        .ok_or_else(|| Error::internal("no plan"))?;
                    plan.check_base(self.base_len, &self.base_buf)?;
                    self.phase = Phase::Header;
                    if self.part != 0 {
                        continue;
                    }
                    self.out.clear();
                    self.out.extend_from_slice(&plan.manifest.header);
                    self.out_offset = 0;
                    self.emit();
                    return Ok(Some(Advance::Output));
                }
                Phase::Header => {
                    self.start_chunk(0);
                }
                Phase::Chunk { index } => {
                    let plan = self
                        .plan
                        .as_ref()
                        .ok_or_else(|| Error::internal("no plan"))?;
                    if index == plan.manifest.chunks.len() {
                        let end = plan.delta_len();
                        let buffered = self.input_offset + self.buffered().len() as u64;
                        if buffered > end {
                            return Err(Error::corrupt(format!(
                                "{} unexpected bytes after the end of the delta",
                                buffered - end
                            )));
                        }
                        if !self.delta_ended {
                            return Ok(Some(Advance::NeedDelta));
                        }
                        self.finish()?;
                        continue;
                    }
                    if let Some(r) = self.pending_base() {
                        return Ok(Some(Advance::NeedBase(r.clone())));
                    }
                    let out_start = plan.manifest.chunks[index].out_start;
                    let new = plan.new_blobs[index].clone();
                    let needed_end = if new.is_empty() {
                        self.input_offset
                    } else {
                        plan.blob_range(new.end - 1).end
                    };
                    if !self.have(needed_end, &format!("chunk {index}"))? {
                        return Ok(Some(Advance::NeedDelta));
                    }
                    if !self.selected(index) {
                        self.retire(index);
                        self.start_chunk(index + 1);
                        continue;
                    }
                    self.decode_current(index)?;
                    self.out_offset = out_start;
                    self.emit();
                    self.start_chunk(index + 1);
                    return Ok(Some(Advance::Output));
                }
                Phase::Finished => return Ok(None),
                Phase::Failed => return Err(Error::invalid("the rebuild already failed")),
            }
        }
    }

    fn start_chunk(&mut self, index: usize) {
        self.base_buf.clear();
        self.base_next = 0;
        self.base_reads = match &self.plan {
            Some(plan) if index < plan.manifest.chunks.len() && self.selected(index) => {
                plan.manifest.base_reads(index)
            }
            _ => Vec::new(),
        };
        self.phase = Phase::Chunk { index };
    }

    fn decode_current(&mut self, index: usize) -> Result<()> {
        let plan = self
            .plan
            .as_ref()
            .ok_or_else(|| Error::internal("no plan"))?;
        let new = plan.new_blobs[index].clone();
        let (input, input_offset) = (&self.input[self.input_head..], self.input_offset);
        let kept = &self.kept;
        let lookup = |b: u32| -> Option<&[u8]> {
            if new.contains(&b) {
                // Blobs first used here sit at the front of the buffered input.
                Some(delta_bytes(input, input_offset, plan.blob_range(b)))
            } else {
                kept.get(&b).map(Vec::as_slice)
            }
        };
        // The buffer is reused without zeroing: the chunk's pieces tile it, so every byte is
        // written, and the checksum would catch one that was not.
        crate::codec::blob::resize_scratch(
            &mut self.out,
            plan.manifest.chunks[index].out_len as usize,
        );
        plan.decode_chunk(
            index,
            lookup,
            &self.base_buf,
            &mut self.out,
            &mut self.decoder,
        )?;

        self.retire(index);
        Ok(())
    }

    /// After chunk `index` (decoded or skipped): keeps the blobs it read first that later
    /// chunks use, drops those it used last, and consumes its input.
    fn retire(&mut self, index: usize) {
        let Some(plan) = self.plan.as_ref() else {
            return;
        };
        let new = plan.new_blobs[index].clone();
        for b in new.clone() {
            let last = plan.last_use[b as usize];
            if last as usize > index {
                let bytes = delta_bytes(self.buffered(), self.input_offset, plan.blob_range(b));
                self.kept.insert(b, bytes.to_vec());
                self.expiry.insert((last, b));
            }
        }
        while let Some(&(last, b)) = self.expiry.first() {
            if last as usize > index {
                break;
            }
            self.expiry.pop_first();
            self.kept.remove(&b);
        }
        if !new.is_empty() {
            let end = plan.blob_range(new.end - 1).end;
            self.consume_to(end);
        }
    }

    fn finish(&mut self) -> Result<()> {
        let plan = self
            .plan
            .as_ref()
            .ok_or_else(|| Error::internal("no plan"))?;
        let computed = self.verify_whole.then(|| {
            let sha: [u8; 32] = std::mem::take(&mut self.sha).finalize().into();
            (sha, self.blake.finalize())
        });
        let summary = Summary::of(&plan.manifest, self.written, computed)?;
        self.summary = Some(summary);
        self.phase = Phase::Finished;
        Ok(())
    }
}

enum Advance {
    NeedDelta,
    NeedBase(Range<u64>),
    Output,
}
