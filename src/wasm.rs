//! WebAssembly bindings (npm package `zipllm`): a thin skin over the core.
//!
//! Everything here converts between JS values and the core's types, and moves bytes between JS
//! sources (`Blob`, `Uint8Array`, `ReadableStream`, `Response`, async reader functions) and the
//! sans-I/O [`Rebuilder`] / [`Plan`]. No codec logic lives here. Errors become JS `Error`s with a
//! stable `code` (`WRONG_BASE`, `CORRUPT_DELTA`, `TRUNCATED_DELTA`, `BAD_SAFETENSORS`, …).

use std::mem::MaybeUninit;

use futures_util::stream;
use js_sys::{Function, Object, Promise, Reflect, Uint8Array};
use serde::Serialize;
use sha2::Digest as _;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::blob::BlobDecoder;
use crate::error::{Error, ErrorCode};
use crate::format::{Preamble, PREAMBLE_LEN};
use crate::model::{Model, PREFIX_LEN};
use crate::rebuild::{hex, Plan, Rebuilder, Step};
#[cfg(feature = "wasm-encode")]
use crate::{EncodeOptions, Strategy};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** Random-access bytes: a Blob/File, bytes in memory, or an async reader of `length` bytes at `offset`. */
export type ByteSource =
  | Blob
  | ArrayBuffer
  | Uint8Array
  | ((offset: number, length: number) => Uint8Array | ArrayBuffer | Promise<Uint8Array | ArrayBuffer>);

/** Sequential bytes: anything a ByteSource is, or a stream of chunks, or a fetch Response. */
export type StreamSource = ByteSource | ReadableStream<Uint8Array> | Response;

export interface Progress {
  /** "rebuilding" while bytes flow, "done" once the whole file was verified. */
  phase: "rebuilding" | "done";
  /** Delta bytes consumed so far. */
  deltaBytes: number;
  /** Output bytes handed out so far (each chunk verified before). */
  outputBytes: number;
  /** Size of the file being rebuilt. */
  totalBytes: number;
  /** Set when phase is "done": the rebuilt file's sha256 (the hub's LFS oid) and blake3. */
  sha256?: string;
  blake3?: string;
}

export interface RebuildOptions {
  /** The base model the delta was made against. */
  base: ByteSource;
  /** The base's length, when `base` is a reader function (checked against the delta's record). */
  baseSize?: number;
  /** The delta, possibly still downloading. */
  delta: StreamSource;
  /** Called after every verified chunk, and once at the end. */
  onProgress?: (p: Progress) => void;
  /**
   * Memory for the output, instead of a new Uint8Array per chunk (in Chromium that allocation
   * costs more than a quarter of a rebuild): a Uint8Array at least the file's size, which the
   * stream then yields views of, or `(offset, length) => Uint8Array` returning the buffer to
   * fill for each chunk (so two buffers can take turns).
   */
  into?: Uint8Array | ((offset: number, length: number) => Uint8Array);
  /**
   * `[k, n]`: rebuild only part k of n — the 4 MiB chunks whose index is k modulo n (part 0
   * also the header) — so n Web Workers fed the same delta rebuild the file together. Chunks
   * come out with their file offsets (use `into`); needs `fullHash: false`.
   */
  part?: [number, number];
  /**
   * Also hash the whole output (sha256, blake3) and compare with the delta's record (default
   * true). Every chunk is checked against its blake3 either way; the whole-file sha256 is what
   * ties the output to the hub's LFS oid independently of the delta's own checksums.
   */
  fullHash?: boolean;
}

export interface RangeOptions {
  base: ByteSource;
  /** Random access is needed: bytes, a Blob, or a reader (e.g. fetch with Range). */
  delta: ByteSource;
  /** First byte of the range. */
  start: number;
  /** One past the last byte. */
  end: number;
  /** The base's length, when `base` is a reader function (checked against the delta's record). */
  baseSize?: number;
}

/** As RangeOptions; the range defaults to the whole file. */
export interface RangeStreamOptions extends Omit<RangeOptions, "start" | "end"> {
  start?: number;
  end?: number;
}

export interface EncodeOptions {
  /** zstd level; this build offers those listed by `encodeLevels()`. */
  level?: number;
  /** "auto" (default), "bitx", "bitx-fields" or "best". */
  strategy?: "auto" | "bitx" | "bitx-fields" | "best";
}

export interface Summary { size: number; sha256: string; blake3: string; }

/** What a delta rebuilds and from what, read from its manifest alone (see `describe`). */
export interface Description {
  formatVersion: number;
  /** Length, sha256 (the hub's LFS oid) and blake3 of the file the delta rebuilds. */
  targetSize: number; targetSha256: string; targetBlake3: string;
  /** Length and header-region blake3 of the base it needs. */
  baseSize: number; baseHeaderBlake3: string;
  /** Length of the whole delta. */
  deltaSize: number;
  /** Number of independently decodable chunks. */
  chunks: number;
}

export interface TensorHash { name: string; dtype: string; shape: number[]; bytes: number; blake3: string; }

export interface FileHashes { size: number; sha256: string; blake3: string; }

export interface TensorHashes extends FileHashes { tensors: TensorHash[]; }

/** What a party knows of a model from its header and sampled blocks (see docs/FAMILY.md). */
export interface Fingerprint {
  version: number; file_len: number; header_len: number; arch: string; bytes_read: number;
  tensors: { name: string; canonical: string; dtype: string; shape: number[]; len: number }[];
  samples: { block: { tensor: number; offset: number; len: number }; bytes: Uint8Array }[];
}

export interface RemoteFingerprintOptions {
  /** Read at most this many bytes (the default and the ceiling: 1% of the file and 2 MiB). */
  maxBytes?: number;
  /** Range requests in flight at a time (default 8). */
  concurrency?: number;
}

export interface Verdict {
  candidate: string;
  verdict: "related" | "unrelated" | "incompatible";
  reason: string;
  bit_distance: number | null;
  normalized_distance: number | null;
  threshold: number;
  error_bound: number;
  confidence: number;
  overlap: number;
  per_dtype: Record<string, { bit_distance: number; elements: number }>;
  elements: number;
}

/** An Error from zipllm: `code` says what kind. */
export interface ZipllmError extends Error {
  code: "BAD_SAFETENSORS" | "CORRUPT_DELTA" | "TRUNCATED_DELTA" | "UNSUPPORTED_VERSION" | "WRONG_BASE" | "INVALID_INPUT" | "IO";
}
"#;

fn js_error(e: &Error) -> JsValue {
    coded(e.code(), &e.to_string())
}

fn coded(code: ErrorCode, message: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    let _ = Reflect::set(&err, &"code".into(), &code.as_str().into());
    err.into()
}

fn invalid(message: &str) -> JsValue {
    coded(ErrorCode::InvalidInput, message)
}

fn field(options: &JsValue, name: &str) -> Result<JsValue, JsValue> {
    if !options.is_object() {
        return Err(invalid("options must be an object"));
    }
    Reflect::get(options, &name.into())
}

fn to_json<T: Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| invalid(&e.to_string()))
}

/// Awaits a value if it is a promise.
async fn resolve(v: JsValue) -> Result<JsValue, JsValue> {
    match v.dyn_into::<Promise>() {
        Ok(p) => JsFuture::from(p).await,
        Err(v) => Ok(v),
    }
}

fn bytes_of(v: &JsValue) -> Option<Uint8Array> {
    if let Some(u) = v.dyn_ref::<Uint8Array>() {
        return Some(u.clone());
    }
    if v.is_instance_of::<js_sys::ArrayBuffer>() {
        return Some(Uint8Array::new(v));
    }
    None
}

/// Random-access bytes from JS.
enum Source {
    Bytes(Uint8Array),
    Blob(web_sys::Blob),
    Reader(Function),
}

impl Source {
    fn from_js(v: JsValue, what: &str) -> Result<Source, JsValue> {
        if let Some(u) = bytes_of(&v) {
            return Ok(Source::Bytes(u));
        }
        if let Some(f) = v.dyn_ref::<Function>() {
            return Ok(Source::Reader(f.clone()));
        }
        match v.dyn_into::<web_sys::Blob>() {
            Ok(b) => Ok(Source::Blob(b)),
            Err(_) => Err(invalid(&format!(
                "{what} must be a Blob, an ArrayBuffer, a Uint8Array or a function (offset, length) => bytes"
            ))),
        }
    }

    fn len(&self) -> Option<u64> {
        match self {
            Source::Bytes(u) => Some(u.length() as u64),
            Source::Blob(b) => Some(b.size() as u64),
            Source::Reader(_) => None,
        }
    }

    async fn read(&self, start: u64, end: u64) -> Result<Vec<u8>, JsValue> {
        Ok(self.read_js(start, end).await?.to_vec())
    }

    /// Bytes `start..end` as JS holds them, for the caller to copy where they are needed.
    async fn read_js(&self, start: u64, end: u64) -> Result<Uint8Array, JsValue> {
        let want = (end - start) as usize;
        let got = match self {
            Source::Bytes(u) => {
                if end > u.length() as u64 {
                    return Err(coded(
                        ErrorCode::WrongBase,
                        &format!(
                            "bytes {start}..{end} are past the end of a {}-byte source",
                            u.length()
                        ),
                    ));
                }
                return Ok(u.subarray(start as u32, end as u32));
            }
            Source::Blob(b) => {
                let part = b.slice_with_f64_and_f64(start as f64, end as f64)?;
                JsFuture::from(part.array_buffer()).await?
            }
            Source::Reader(f) => {
                resolve(f.call2(
                    &JsValue::NULL,
                    &(start as f64).into(),
                    &(want as f64).into(),
                )?)
                .await?
            }
        };
        let bytes = bytes_of(&got)
            .ok_or_else(|| invalid("a reader must return a Uint8Array or an ArrayBuffer"))?;
        if bytes.length() as usize != want {
            // A Blob ends early only when it is shorter than the file it should be; a reader
            // returning the wrong amount is an I/O fault of the adapter.
            let code = if matches!(self, Source::Blob(_)) {
                ErrorCode::WrongBase
            } else {
                ErrorCode::Io
            };
            return Err(coded(
                code,
                &format!(
                    "asked for bytes {start}..{end}, the source returned {}",
                    bytes.length()
                ),
            ));
        }
        Ok(bytes)
    }
}

/// Sequential bytes from JS: a stream, a Response, or random-access bytes read in order.
enum Sequential {
    Stream(web_sys::ReadableStreamDefaultReader),
    Source {
        source: Source,
        at: u64,
        len: Option<u64>,
    },
}

const SEQUENTIAL_READ: u64 = 1 << 20;

impl Sequential {
    fn from_js(v: JsValue, what: &str) -> Result<Sequential, JsValue> {
        let stream = if let Some(r) = v.dyn_ref::<web_sys::Response>() {
            Some(
                r.body()
                    .ok_or_else(|| invalid(&format!("{what}: the Response has no body")))?,
            )
        } else {
            v.dyn_ref::<web_sys::ReadableStream>().cloned()
        };
        if let Some(s) = stream {
            let reader = s
                .get_reader()
                .dyn_into::<web_sys::ReadableStreamDefaultReader>()?;
            return Ok(Sequential::Stream(reader));
        }
        let source = Source::from_js(v, what)?;
        let len = source.len();
        Ok(Sequential::Source { source, at: 0, len })
    }

    /// The next bytes, or `None` at the end.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, JsValue> {
        Ok(self.next_js().await?.map(|b| b.to_vec()))
    }

    /// The next bytes as JS holds them, or `None` at the end.
    async fn next_js(&mut self) -> Result<Option<Uint8Array>, JsValue> {
        match self {
            Sequential::Stream(reader) => {
                let result = JsFuture::from(reader.read()).await?;
                if Reflect::get(&result, &"done".into())?.is_truthy() {
                    return Ok(None);
                }
                let value = Reflect::get(&result, &"value".into())?;
                let bytes = bytes_of(&value)
                    .ok_or_else(|| invalid("the stream must yield Uint8Array chunks"))?;
                Ok(Some(bytes))
            }
            Sequential::Source { source, at, len } => {
                let Some(len) = *len else {
                    return Err(invalid(
                        "a reader function needs a known length: pass a stream instead",
                    ));
                };
                if *at >= len {
                    return Ok(None);
                }
                let end = (*at + SEQUENTIAL_READ).min(len);
                let bytes = source.read_js(*at, end).await?;
                *at = end;
                Ok(Some(bytes))
            }
        }
    }
}

/// Copies `bytes` into `spare`, the machine's buffer. Growing that buffer may grow wasm memory,
/// which detaches a view of it: if `bytes` was one, nothing is copied and the machine reports
/// the short fill as an error (`copy_to_uninit` would panic).
fn fill<'a>(bytes: &Uint8Array, spare: &'a mut [MaybeUninit<u8>]) -> &'a mut [u8] {
    if bytes.length() as usize != spare.len() {
        return &mut [];
    }
    bytes.copy_to_uninit(spare)
}

/// One streaming rebuild in progress.
struct Run {
    machine: Rebuilder,
    base: Source,
    delta: Sequential,
    progress: Option<Function>,
    into: Option<OutputInto>,
    finished: bool,
}

/// Where output goes when the caller provides the memory (`into`): allocating a fresh
/// ArrayBuffer per 4 MiB chunk is the largest cost of a rebuild in Chromium.
enum OutputInto {
    /// One buffer for the whole file; chunks are views of it.
    Whole(Uint8Array),
    /// `(offset, length) => Uint8Array` returns the buffer for each chunk.
    Each(Function),
}

impl OutputInto {
    fn from_js(v: JsValue) -> Result<Option<OutputInto>, JsValue> {
        if v.is_undefined() || v.is_null() {
            return Ok(None);
        }
        if let Some(f) = v.dyn_ref::<Function>() {
            return Ok(Some(OutputInto::Each(f.clone())));
        }
        v.dyn_into::<Uint8Array>()
            .map(|u| Some(OutputInto::Whole(u)))
            .map_err(|_| {
                invalid("into must be a Uint8Array or a function (offset, length) => Uint8Array")
            })
    }

    /// The chunk's bytes, copied once from wasm memory into the caller's.
    fn place(&self, at: u64, bytes: &[u8]) -> Result<Uint8Array, JsValue> {
        let len = bytes.len() as u32;
        let dst = match self {
            OutputInto::Whole(u) => {
                let end = at + bytes.len() as u64;
                if end > u.length() as u64 {
                    return Err(invalid(&format!(
                        "into holds {} bytes; the file is longer (at least {end})",
                        u.length()
                    )));
                }
                u.subarray(at as u32, end as u32)
            }
            OutputInto::Each(f) => f
                .call2(&JsValue::NULL, &(at as f64).into(), &len.into())?
                .dyn_into::<Uint8Array>()
                .ok()
                .filter(|u| u.length() == len)
                .ok_or_else(|| {
                    invalid(&format!(
                        "into({at}, {len}) must return a Uint8Array of {len} bytes"
                    ))
                })?,
        };
        dst.copy_from(bytes);
        Ok(dst)
    }
}

enum Next {
    Chunk(Uint8Array),
    End(crate::Summary),
}

impl Run {
    fn report(&self, summary: Option<&crate::Summary>) {
        let Some(f) = &self.progress else { return };
        let total = self.machine.plan().map_or(0, |p| p.manifest.target_size);
        let p = Object::new();
        let set = |k: &str, v: JsValue| {
            let _ = Reflect::set(&p, &k.into(), &v);
        };
        set(
            "phase",
            if summary.is_some() {
                "done"
            } else {
                "rebuilding"
            }
            .into(),
        );
        set("deltaBytes", (self.machine.delta_consumed() as f64).into());
        set("outputBytes", (self.machine.written() as f64).into());
        set("totalBytes", (total as f64).into());
        if let Some(s) = summary {
            set("sha256", s.sha256.clone().into());
            set("blake3", s.blake3.clone().into());
        }
        let _ = f.call1(&JsValue::NULL, &p);
    }

    /// Drives the machine to its next verified chunk of output.
    async fn next(&mut self) -> Result<Next, JsValue> {
        loop {
            enum Want {
                Delta,
                Base(std::ops::Range<u64>),
                Out(Uint8Array),
                Done(crate::Summary),
            }
            let want = match self.machine.poll().map_err(|e| js_error(&e))? {
                Step::NeedDelta => Want::Delta,
                Step::NeedBase(r) => Want::Base(r),
                Step::Output { at, bytes } => {
                    let chunk = match &self.into {
                        Some(into) => into.place(at, bytes)?,
                        None => Uint8Array::from(bytes),
                    };
                    Want::Out(chunk)
                }
                Step::Done(s) => Want::Done(s),
            };
            match want {
                // Copied once, from JS straight into the machine's buffers.
                Want::Delta => match self.delta.next_js().await? {
                    Some(bytes) => self
                        .machine
                        .push_delta_with(bytes.length() as usize, |spare| fill(&bytes, spare))
                        .map_err(|e| js_error(&e))?,
                    None => self.machine.end_delta(),
                },
                Want::Base(r) => {
                    let bytes = self.base.read_js(r.start, r.end).await?;
                    self.machine
                        .provide_base_with(bytes.length() as usize, |spare| fill(&bytes, spare))
                        .map_err(|e| js_error(&e))?;
                }
                Want::Out(chunk) => {
                    self.report(None);
                    return Ok(Next::Chunk(chunk));
                }
                Want::Done(summary) => {
                    self.report(Some(&summary));
                    return Ok(Next::End(summary));
                }
            }
        }
    }
}

fn start_run(options: &JsValue) -> Result<Run, JsValue> {
    let base = Source::from_js(field(options, "base")?, "base")?;
    let delta = Sequential::from_js(field(options, "delta")?, "delta")?;
    let progress = field(options, "onProgress")?.dyn_into::<Function>().ok();
    let full_hash = field(options, "fullHash")?.as_bool().unwrap_or(true);
    let base_len = base.len().or_else(|| {
        field(options, "baseSize")
            .ok()
            .and_then(|v| v.as_f64())
            .map(|n| n as u64)
    });
    let into = OutputInto::from_js(field(options, "into")?)?;
    let mut machine = Rebuilder::new(base_len, full_hash).map_err(|e| js_error(&e))?;
    let part = field(options, "part")?;
    if !part.is_undefined() {
        let pair = js_sys::Array::from(&part);
        let (k, n) = (pair.get(0).as_f64(), pair.get(1).as_f64());
        let (Some(k), Some(n), 2) = (k, n, pair.length()) else {
            return Err(invalid("part must be [index, count]"));
        };
        machine
            .set_part(k as usize, n as usize)
            .map_err(|e| js_error(&e))?;
    }
    Ok(Run {
        machine,
        base,
        delta,
        progress,
        into,
        finished: false,
    })
}

/// Rebuilds the fine-tuned file from `base` and a `delta` that may still be arriving. The
/// stream yields the file in order, each 4 MiB chunk only after its checksum passed, and errors
/// (with a coded `Error`) on a wrong base or a corrupt delta instead of yielding bad bytes.
#[wasm_bindgen(js_name = rebuild, unchecked_return_type = "ReadableStream<Uint8Array>")]
pub fn rebuild(
    #[wasm_bindgen(unchecked_param_type = "RebuildOptions")] options: JsValue,
) -> Result<web_sys::ReadableStream, JsValue> {
    let run = start_run(&options)?;
    let chunks = stream::unfold(run, |mut run| async move {
        if run.finished {
            return None;
        }
        match run.next().await {
            Ok(Next::Chunk(c)) => Some((Ok(JsValue::from(c)), run)),
            Ok(Next::End(_)) => None,
            Err(e) => {
                run.finished = true;
                Some((Err(e), run))
            }
        }
    });
    Ok(wasm_streams::ReadableStream::from_stream(chunks).into_raw())
}

/// Rebuilds and checks everything without keeping the output; resolves to the file's identity.
#[wasm_bindgen(js_name = verify, unchecked_return_type = "Promise<Summary>")]
pub async fn verify(
    #[wasm_bindgen(unchecked_param_type = "RebuildOptions")] options: JsValue,
) -> Result<JsValue, JsValue> {
    let mut run = start_run(&options)?;
    loop {
        if let Next::End(summary) = run.next().await? {
            return to_json(&summary);
        }
    }
}

async fn open_plan(delta: &Source) -> Result<Plan, JsValue> {
    let head = delta
        .read(0, PREAMBLE_LEN.min(delta.len().unwrap_or(PREAMBLE_LEN)))
        .await?;
    let pre = Preamble::parse(&head).map_err(|e| js_error(&e))?;
    if let Some(len) = delta.len() {
        if len < pre.payload_offset() {
            return Err(js_error(&Error::TruncatedDelta {
                what: format!(
                    "the delta is {len} bytes but its manifest ends at byte {}",
                    pre.payload_offset()
                ),
            }));
        }
    }
    let head = delta.read(0, pre.payload_offset()).await?;
    Plan::from_delta_head(&head).map_err(|e| js_error(&e))
}

/// Bytes `[start, end)` of the fine-tuned file, decoded chunk by chunk from random-access
/// sources: what `rebuildRange` collects and `rebuildRangeStream` streams.
struct RangeRun {
    plan: Plan,
    base: Source,
    delta: Source,
    decoder: BlobDecoder,
    start: u64,
    end: u64,
    /// Whether the range's part of the header is still to hand out (it goes first).
    header_left: bool,
    /// The chunks covering the range still to decode, in order.
    chunks: std::ops::Range<usize>,
    finished: bool,
}

impl RangeRun {
    async fn open(options: &JsValue) -> Result<RangeRun, JsValue> {
        let base = Source::from_js(field(options, "base")?, "base")?;
        let delta = Source::from_js(field(options, "delta")?, "delta")?;
        let number = |name: &str| -> Result<Option<u64>, JsValue> {
            let v = field(options, name)?;
            if v.is_undefined() {
                return Ok(None);
            }
            let n = v
                .as_f64()
                .filter(|n| *n >= 0.0 && n.fract() == 0.0)
                .ok_or_else(|| invalid(&format!("{name} must be a whole number of bytes")))?;
            Ok(Some(n as u64))
        };
        let (start, end) = (number("start")?, number("end")?);
        let plan = open_plan(&delta).await?;
        let m = &plan.manifest;
        let start = start.unwrap_or(0);
        let end = end.unwrap_or(m.target_size);
        if start > end || end > m.target_size {
            return Err(invalid(&format!(
                "range {start}..{end} is outside the {}-byte file",
                m.target_size
            )));
        }
        let base_len = base.len().or(number("baseSize")?);
        let header = base.read(0, m.base_header_len).await?;
        plan.check_base(base_len, &header)
            .map_err(|e| js_error(&e))?;
        let chunks = plan.chunks_for(start..end);
        Ok(RangeRun {
            header_left: start < m.header.len() as u64,
            decoder: BlobDecoder::new().map_err(|e| js_error(&e))?,
            plan,
            base,
            delta,
            start,
            end,
            chunks,
            finished: false,
        })
    }

    /// The next verified part of the range, or `None` at its end.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, JsValue> {
        let m = &self.plan.manifest;
        let h = m.header.len() as u64;
        if std::mem::take(&mut self.header_left) {
            return Ok(Some(
                m.header[self.start as usize..self.end.min(h) as usize].to_vec(),
            ));
        }
        let Some(i) = self.chunks.next() else {
            return Ok(None);
        };
        let mut blobs = std::collections::BTreeMap::new();
        for b in self.plan.chunk_blobs(i) {
            let r = self.plan.blob_range(b);
            blobs.insert(b, self.delta.read(r.start, r.end).await?);
        }
        let mut base_bytes = Vec::new();
        for r in m.base_reads(i) {
            base_bytes.extend_from_slice(&self.base.read(r.start, r.end).await?);
        }
        let c = m.chunks[i];
        let mut chunk = vec![0u8; c.out_len as usize];
        self.plan
            .decode_chunk(
                i,
                |b| blobs.get(&b).map(Vec::as_slice),
                &base_bytes,
                &mut chunk,
                &mut self.decoder,
            )
            .map_err(|e| js_error(&e))?;
        let from = (self.start.max(c.out_start) - c.out_start) as usize;
        let to = (self.end.min(c.out_start + c.out_len) - c.out_start) as usize;
        if from != 0 || to != chunk.len() {
            chunk.truncate(to);
            chunk.drain(..from);
        }
        Ok(Some(chunk))
    }
}

/// Rebuilds bytes `[start, end)` of the fine-tuned file alone, decoding only the chunks that
/// cover them. The delta must allow random access.
#[wasm_bindgen(js_name = rebuildRange, unchecked_return_type = "Promise<Uint8Array>")]
pub async fn rebuild_range(
    #[wasm_bindgen(unchecked_param_type = "RangeOptions")] options: JsValue,
) -> Result<JsValue, JsValue> {
    let mut run = RangeRun::open(&options).await?;
    let mut out = Vec::with_capacity((run.end - run.start) as usize);
    while let Some(part) = run.next().await? {
        out.extend_from_slice(&part);
    }
    Ok(Uint8Array::from(out.as_slice()).into())
}

/// Streams bytes `[start, end)` of the fine-tuned file (the whole file by default), one verified
/// chunk at a time, with memory bounded by the chunk size whatever the range's length: the way
/// to serve large HTTP ranges. Opening the stream checks the base; the stream errors with a
/// coded `Error` on a corrupt delta or a wrong base.
#[wasm_bindgen(
    js_name = rebuildRangeStream,
    unchecked_return_type = "Promise<ReadableStream<Uint8Array>>"
)]
pub async fn rebuild_range_stream(
    #[wasm_bindgen(unchecked_param_type = "RangeStreamOptions")] options: JsValue,
) -> Result<JsValue, JsValue> {
    let run = RangeRun::open(&options).await?;
    let parts = stream::unfold(run, |mut run| async move {
        if run.finished {
            return None;
        }
        match run.next().await {
            Ok(Some(part)) => Some((Ok(JsValue::from(Uint8Array::from(part.as_slice()))), run)),
            Ok(None) => None,
            Err(e) => {
                run.finished = true;
                Some((Err(e), run))
            }
        }
    });
    Ok(wasm_streams::ReadableStream::from_stream(parts)
        .into_raw()
        .into())
}

/// What a delta promises, from its manifest alone (two small reads): the rebuilt file's size
/// and hashes and the base it needs. What a server needs for `Content-Length` and `ETag`
/// before it rebuilds anything.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Description {
    format_version: u32,
    target_size: u64,
    target_sha256: String,
    target_blake3: String,
    base_size: u64,
    base_header_blake3: String,
    delta_size: u64,
    chunks: usize,
}

/// Reads a delta's manifest (not its payload) and says what it rebuilds and from what.
#[wasm_bindgen(js_name = describe, unchecked_return_type = "Promise<Description>")]
pub async fn describe(
    #[wasm_bindgen(unchecked_param_type = "ByteSource")] delta: JsValue,
) -> Result<JsValue, JsValue> {
    let delta = Source::from_js(delta, "delta")?;
    let plan = open_plan(&delta).await?;
    let m = &plan.manifest;
    to_json(&Description {
        format_version: crate::format::VERSION,
        target_size: m.target_size,
        target_sha256: hex(&m.target_sha256),
        target_blake3: hex(&m.target_blake3),
        base_size: m.base_size,
        base_header_blake3: hex(&m.base_header_blake3),
        delta_size: plan.payload_offset + m.payload_len,
        chunks: m.chunks.len(),
    })
}

/// What a delta holds: sizes before and after by tensor kind, dtype and method.
#[wasm_bindgen(js_name = inspect, unchecked_return_type = "Promise<object>")]
pub async fn inspect(
    #[wasm_bindgen(unchecked_param_type = "ByteSource")] delta: JsValue,
) -> Result<JsValue, JsValue> {
    let delta = Source::from_js(delta, "delta")?;
    let plan = open_plan(&delta).await?;
    let mut heads = std::collections::BTreeMap::new();
    for b in 0..plan.manifest.blobs.len() as u32 {
        let r = plan.blob_range(b);
        // Only the blob's method (its first two bytes) is needed.
        let end = r.end.min(r.start + 2);
        heads.insert(b, delta.read(r.start, end).await?);
    }
    let report = crate::inspect::report(&plan, |b| heads.get(&b).map(Vec::as_slice))
        .map_err(|e| js_error(&e))?;
    to_json(&report)
}

/// The zstd levels `encode` offers in this build (none in a decoder-only build).
#[cfg(feature = "wasm-encode")]
#[wasm_bindgen(js_name = encodeLevels)]
pub fn encode_levels() -> Vec<i32> {
    crate::entropy::supported_levels().collect()
}

/// Makes a delta that rebuilds `target` from `base` (both whole files in memory).
#[cfg(feature = "wasm-encode")]
#[wasm_bindgen(js_name = encode)]
pub fn encode(
    base: &[u8],
    target: &[u8],
    #[wasm_bindgen(unchecked_param_type = "EncodeOptions | undefined")] options: JsValue,
) -> Result<Vec<u8>, JsValue> {
    let mut opts = EncodeOptions::default();
    if options.is_object() {
        if let Some(level) = field(&options, "level")?.as_f64() {
            opts.level = level as i32;
        }
        if let Some(name) = field(&options, "strategy")?.as_string() {
            opts.strategy = Strategy::from_name(&name)
                .ok_or_else(|| invalid(&format!("unknown strategy `{name}`")))?;
        }
    }
    let delta = crate::encode(base, target, &opts, &|_| {}).map_err(|e| js_error(&e))?;
    delta.to_bytes().map_err(|e| js_error(&e))
}

#[derive(Serialize)]
struct FileHashes {
    size: u64,
    sha256: String,
    blake3: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tensors: Option<Vec<TensorHash>>,
}

#[derive(Serialize)]
struct TensorHash {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    bytes: u64,
    blake3: String,
}

/// Hashes a file as it streams past: sha256 (the hub's LFS oid) and blake3.
#[wasm_bindgen(js_name = hashFile, unchecked_return_type = "Promise<FileHashes>")]
pub async fn hash_file(
    #[wasm_bindgen(unchecked_param_type = "StreamSource")] source: JsValue,
) -> Result<JsValue, JsValue> {
    let mut input = Sequential::from_js(source, "source")?;
    let mut sha = sha2::Sha256::new();
    let mut blake = crate::hash::Hasher::new();
    let mut size = 0u64;
    while let Some(bytes) = input.next().await? {
        sha.update(&bytes);
        blake.update(&bytes);
        size += bytes.len() as u64;
    }
    to_json(&FileHashes {
        size,
        sha256: hex(&sha.finalize()),
        blake3: blake.finalize().to_hex().to_string(),
        tensors: None,
    })
}

/// Hashes a safetensors file tensor by tensor (blake3 of each tensor's bytes, the key the
/// encoder deduplicates on) and as a whole, streaming.
#[wasm_bindgen(js_name = hashTensors, unchecked_return_type = "Promise<TensorHashes>")]
pub async fn hash_tensors(
    #[wasm_bindgen(unchecked_param_type = "StreamSource")] source: JsValue,
) -> Result<JsValue, JsValue> {
    let mut input = Sequential::from_js(source, "source")?;
    let mut sha = sha2::Sha256::new();
    let mut blake = crate::hash::Hasher::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut offset = 0u64;
    let mut model: Option<Model> = None;
    let mut tensors = Vec::new();
    let mut current = 0usize;
    let mut tensor_hasher = crate::hash::Hasher::new();
    loop {
        let next = input.next().await?;
        if let Some(bytes) = &next {
            sha.update(bytes);
            blake.update(bytes);
            pending.extend_from_slice(bytes);
        }
        if model.is_none() {
            if pending.len() < PREFIX_LEN as usize && next.is_some() {
                continue;
            }
            let region = Model::header_region_len(&pending, None).map_err(|e| js_error(&e))?;
            if (pending.len() as u64) < region {
                if next.is_none() {
                    return Err(js_error(&Error::BadSafetensors {
                        what: format!(
                            "header length {} runs past the end of the file",
                            region - PREFIX_LEN
                        ),
                    }));
                }
                continue;
            }
            model = Some(
                Model::parse_header(&pending[..region as usize], None).map_err(|e| js_error(&e))?,
            );
        }
        let Some(m) = &model else { continue };
        // Hash tensor bytes as they arrive; tensors are contiguous in file order.
        let mut at = 0usize;
        while at < pending.len() {
            let pos = offset + at as u64;
            if pos < m.header_len {
                at += ((m.header_len - pos) as usize).min(pending.len() - at);
                continue;
            }
            let Some(t) = m.tensors.get(current) else {
                return Err(js_error(&Error::BadSafetensors {
                    what: "bytes after the last tensor".into(),
                }));
            };
            let take = ((t.end - pos) as usize).min(pending.len() - at);
            tensor_hasher.update(&pending[at..at + take]);
            at += take;
            if pos + take as u64 == t.end {
                tensors.push(TensorHash {
                    name: t.name.clone(),
                    dtype: t.dtype.name().into(),
                    shape: t.shape.clone(),
                    bytes: t.len(),
                    blake3: std::mem::take(&mut tensor_hasher)
                        .finalize()
                        .to_hex()
                        .to_string(),
                });
                current += 1;
            }
        }
        while let Some(t) = m.tensors.get(current).filter(|t| t.is_empty()) {
            tensors.push(TensorHash {
                name: t.name.clone(),
                dtype: t.dtype.name().into(),
                shape: t.shape.clone(),
                bytes: 0,
                blake3: blake3::hash(&[]).to_hex().to_string(),
            });
            current += 1;
        }
        offset += pending.len() as u64;
        pending.clear();
        if next.is_none() {
            break;
        }
    }
    let m = model.ok_or_else(|| {
        js_error(&Error::BadSafetensors {
            what: "the file is empty".into(),
        })
    })?;
    if offset != m.file_len || current != m.tensors.len() {
        return Err(js_error(&Error::BadSafetensors {
            what: format!(
                "the header describes {} bytes but the file has {offset}",
                m.file_len
            ),
        }));
    }
    to_json(&FileHashes {
        size: offset,
        sha256: hex(&sha.finalize()),
        blake3: blake.finalize().to_hex().to_string(),
        tensors: Some(tensors),
    })
}

fn fetch_fn() -> Result<Function, JsValue> {
    Reflect::get(&js_sys::global(), &"fetch".into())?
        .dyn_into::<Function>()
        .map_err(|_| coded(ErrorCode::Io, "no global fetch in this environment"))
}

/// Fetches bytes `[start, end)` of `url` with a Range request; `Err` unless the server sends
/// exactly those bytes, or with `to_eof` those up to the end of a shorter file (a server that
/// ignores Range is not read past its headers).
async fn fetch_range(
    fetch: &Function,
    url: &str,
    start: u64,
    end: u64,
) -> Result<(Vec<u8>, Option<u64>), JsValue> {
    fetch_range_upto(fetch, url, start, end, false).await
}

async fn fetch_range_upto(
    fetch: &Function,
    url: &str,
    start: u64,
    end: u64,
    to_eof: bool,
) -> Result<(Vec<u8>, Option<u64>), JsValue> {
    let init = Object::new();
    let headers = Object::new();
    Reflect::set(
        &headers,
        &"Range".into(),
        &format!("bytes={start}-{}", end - 1).into(),
    )?;
    Reflect::set(&init, &"headers".into(), &headers)?;
    let response: web_sys::Response = resolve(fetch.call2(&JsValue::NULL, &url.into(), &init)?)
        .await?
        .dyn_into()?;
    if response.status() != 206 {
        if let Some(body) = response.body() {
            let _ = body.cancel();
        }
        return Err(coded(
            ErrorCode::Io,
            &format!(
                "{url} answered {} to a Range request: the server must support HTTP Range",
                response.status()
            ),
        ));
    }
    let total = response.headers().get("content-range")?.and_then(|v| {
        v.rsplit('/')
            .next()
            .and_then(|n| n.trim().parse::<u64>().ok())
    });
    let bytes = Uint8Array::new(&JsFuture::from(response.array_buffer()?).await?).to_vec();
    let expected = match total {
        Some(t) if to_eof => end.min(t).saturating_sub(start),
        _ => end - start,
    };
    if bytes.len() as u64 != expected {
        return Err(coded(
            ErrorCode::Io,
            &format!(
                "{url} sent {} bytes for the range {start}..{end}",
                bytes.len()
            ),
        ));
    }
    Ok((bytes, total))
}

fn fingerprint_to_js(fp: &crate::family::Fingerprint) -> Result<JsValue, JsValue> {
    fp.serialize(
        &serde_wasm_bindgen::Serializer::new()
            .serialize_maps_as_objects(true)
            .serialize_large_number_types_as_bigints(false),
    )
    .map_err(|e| invalid(&e.to_string()))
}

/// How much of the file the first request of `fingerprintRemote` asks for: the 8-byte prefix
/// and, for most models, the whole header with it, saving a round trip.
const REMOTE_HEAD: u64 = 16 << 10;

/// Fingerprints a remote safetensors file reading only its header and sampled blocks with
/// HTTP Range requests: by default at most 1% of the file and 2 MiB in total (`maxBytes` lowers
/// that: fewer blocks, from the largest tensors), adjacent blocks coalesced, `concurrency`
/// requests in flight (default 8).
#[wasm_bindgen(js_name = fingerprintRemote, unchecked_return_type = "Promise<Fingerprint>")]
pub async fn fingerprint_remote(
    url: String,
    #[wasm_bindgen(unchecked_param_type = "RemoteFingerprintOptions")] options: Option<Object>,
) -> Result<JsValue, JsValue> {
    use futures_util::StreamExt as _;
    let options: JsValue = options
        .map(Into::into)
        .unwrap_or_else(|| Object::new().into());
    let number = |name: &str| -> Result<Option<f64>, JsValue> {
        let v = field(&options, name)?;
        if v.is_undefined() {
            return Ok(None);
        }
        v.as_f64()
            .filter(|n| *n >= 1.0)
            .map(Some)
            .ok_or_else(|| invalid(&format!("{name} must be a positive number")))
    };
    let max_bytes = number("maxBytes")?;
    let concurrency = number("concurrency")?.unwrap_or(8.0).min(64.0) as usize;
    let fetch = fetch_fn()?;
    let (mut header, total) = fetch_range_upto(&fetch, &url, 0, REMOTE_HEAD, true).await?;
    let total = total.ok_or_else(|| {
        coded(
            ErrorCode::Io,
            "the server sent no file length in Content-Range",
        )
    })?;
    let mut fetched = header.len() as u64;
    let region = Model::header_region_len(&header, Some(total)).map_err(|e| js_error(&e))?;
    if region > fetched {
        let (rest, _) = fetch_range(&fetch, &url, fetched, region).await?;
        fetched += rest.len() as u64;
        header.extend_from_slice(&rest);
    }
    header.truncate(region as usize);
    let model = Model::parse_header(&header, Some(total)).map_err(|e| js_error(&e))?;
    let cap = ((total as f64 * 0.01) as u64)
        .min(2 << 20)
        .min(max_bytes.map_or(u64::MAX, |n| n as u64))
        .saturating_sub(fetched.saturating_sub(region));
    let plan = crate::family::SamplePlan::with_budget(&model, cap, 1.0);
    let bytes: Vec<Vec<u8>> = futures_util::stream::iter(
        plan.ranges
            .iter()
            .map(|r| fetch_range(&fetch, &url, r.start, r.end)),
    )
    .buffered(concurrency.max(1))
    .map(|r| r.map(|(b, _)| b))
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;
    let mut fp = plan.fingerprint(&model, &bytes).map_err(|e| js_error(&e))?;
    // What was fetched: the plan's header and blocks, plus the first read's overshoot.
    fp.bytes_read += fetched.saturating_sub(region);
    fingerprint_to_js(&fp)
}

/// Fingerprints a local file (Blob, bytes, reader) the same way.
#[wasm_bindgen(js_name = fingerprint, unchecked_return_type = "Promise<Fingerprint>")]
pub async fn fingerprint(
    #[wasm_bindgen(unchecked_param_type = "ByteSource")] source: JsValue,
) -> Result<JsValue, JsValue> {
    let source = Source::from_js(source, "source")?;
    let model = read_model(&source).await?;
    let plan = crate::family::SamplePlan::with_budget(&model, 2 << 20, 0.01);
    let mut bytes = Vec::with_capacity(plan.ranges.len());
    for r in &plan.ranges {
        bytes.push(source.read(r.start, r.end).await?);
    }
    fingerprint_to_js(&plan.fingerprint(&model, &bytes).map_err(|e| js_error(&e))?)
}

async fn read_model(source: &Source) -> Result<Model, JsValue> {
    let len = source.len();
    let prefix = source.read(0, PREFIX_LEN).await.map_err(|_| {
        js_error(&Error::BadSafetensors {
            what: "file is too short for the 8-byte header length".into(),
        })
    })?;
    let region = Model::header_region_len(&prefix, len).map_err(|e| js_error(&e))?;
    let header = source.read(0, region).await?;
    Model::parse_header(&header, len).map_err(|e| js_error(&e))
}

/// Ranks locally held bases for a fingerprint (from `fingerprintRemote` or `fingerprint`):
/// each gets a verdict — `related`, `unrelated` or `incompatible` (with the reason) — with
/// its bit distance, the threshold and a confidence. Only the sampled blocks of each base are
/// read. `bases` holds ByteSources or `{ name, source }` objects.
#[wasm_bindgen(js_name = matchFamily, unchecked_return_type = "Promise<Verdict[]>")]
pub async fn match_family(
    #[wasm_bindgen(unchecked_param_type = "Fingerprint")] fingerprint: JsValue,
    #[wasm_bindgen(
        unchecked_param_type = "Array<ByteSource | { name: string; source: ByteSource }>"
    )]
    bases: JsValue,
) -> Result<JsValue, JsValue> {
    let fp: crate::family::Fingerprint = serde_wasm_bindgen::from_value(fingerprint)
        .map_err(|e| invalid(&format!("not a fingerprint: {e}")))?;
    let bases = bases
        .dyn_into::<js_sys::Array>()
        .map_err(|_| invalid("bases must be an array"))?;
    let mut verdicts = Vec::new();
    for (i, item) in bases.iter().enumerate() {
        let named = item.is_object() && Reflect::has(&item, &"source".into()).unwrap_or(false);
        let (name, source) = if named {
            let name = Reflect::get(&item, &"name".into())?
                .as_string()
                .unwrap_or_else(|| i.to_string());
            (name, Reflect::get(&item, &"source".into())?)
        } else {
            (i.to_string(), item)
        };
        let source = Source::from_js(source, "base")?;
        let model = read_model(&source).await?;
        let mut fetched = std::collections::HashMap::new();
        for (t, off, len) in crate::family::reads_needed(&fp, &model).map_err(|e| js_error(&e))? {
            let start = model.tensors[t].start + off;
            fetched.insert((t, off), source.read(start, start + len).await?);
        }
        let v = crate::family::compare(&name, &fp, &model, |t, off, _| {
            fetched
                .remove(&(t, off))
                .ok_or_else(|| Error::InvalidInput {
                    what: "sample not fetched".into(),
                })
        })
        .map_err(|e| js_error(&e))?;
        verdicts.push(v);
    }
    crate::family::rank(&mut verdicts);
    to_json(&verdicts)
}

/// Bytes of linear memory this module holds now (it only grows, so this is also the peak):
/// lets tests and dashboards check that rebuilding stays within bounds.
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .map(|m| {
            m.buffer()
                .unchecked_into::<js_sys::ArrayBuffer>()
                .byte_length() as f64
        })
        .unwrap_or(0.0)
}

/// The delta format version this build reads and writes.
#[wasm_bindgen(js_name = formatVersion)]
pub fn format_version() -> u32 {
    crate::format::VERSION
}
