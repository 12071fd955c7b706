//! Rebuilding: the streaming rebuild and `verify` over the [`Rebuilder`] machine, byte ranges
//! over the [`Plan`], and what a delta's manifest says (`describe`, `inspect`).

use futures_util::stream;
use js_sys::{Function, Object, Reflect, Uint8Array};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::io::{fill, OutputInto, Role, Sequential, Source};
use super::task::{panic_point, PanicPoint, Task};
use super::{field, given, invalid, js_error, outcome, to_json, whole, whole_option};
use crate::codec::blob::BlobDecoder;
use crate::codec::format::{Preamble, PREAMBLE_LEN};
use crate::codec::rebuild::{hex, Plan, Rebuilder, Step};
use crate::error::Error;

/// One streaming rebuild in progress.
struct Run {
    machine: Rebuilder,
    base: Source,
    delta: Sequential,
    progress: Option<Function>,
    into: Option<OutputInto>,
}

enum Next {
    Chunk(Uint8Array),
    End(crate::Summary),
}

impl Run {
    fn start(options: &JsValue) -> Result<Run, JsValue> {
        let base = Source::from_js(field(options, "base")?, Role::Base)?;
        let delta = Sequential::from_js(field(options, "delta")?, Role::Delta)?;
        let progress = given(options, "onProgress")?
            .map(|f| {
                f.dyn_into::<Function>()
                    .map_err(|_| invalid("onProgress must be a function"))
            })
            .transpose()?;
        let full_hash = match given(options, "fullHash")? {
            None => true,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| invalid("fullHash must be true or false"))?,
        };
        let base_size = whole_option(options, "baseSize")?;
        let into = OutputInto::from_js(given(options, "into")?)?;
        let mut machine =
            Rebuilder::new(base.len().or(base_size), full_hash).map_err(|e| js_error(&e))?;
        if let Some(part) = given(options, "part")? {
            let pair = part
                .dyn_into::<js_sys::Array>()
                .ok()
                .filter(|a| a.length() == 2)
                .ok_or_else(|| invalid("part must be [index, count]"))?;
            let k = whole(&pair.get(0), "part's index")?;
            let n = whole(&pair.get(1), "part's count")?;
            let (Ok(k), Ok(n)) = (usize::try_from(k), usize::try_from(n)) else {
                return Err(invalid("part is out of range"));
            };
            machine.set_part(k, n).map_err(|e| js_error(&e))?;
        }
        if let Some(sha) = given(options, "expectSha256")? {
            machine
                .expect_sha256(sha256_of(&sha)?)
                .map_err(|e| js_error(&e))?;
        }
        Ok(Run {
            machine,
            base,
            delta,
            progress,
            into,
        })
    }

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
            set("fullHashChecked", s.full_hash_checked.into());
        }
        let _ = f.call1(&JsValue::NULL, &p);
    }

    /// Drives the machine to its next verified chunk of output.
    async fn next(&mut self) -> Result<Next, JsValue> {
        loop {
            panic_point(PanicPoint::Rebuild);
            enum Want {
                Delta,
                Base(std::ops::Range<u64>),
                Out(Uint8Array),
                Done(crate::Summary),
            }
            let want = match self.machine.poll().map_err(|e| js_error(&e))? {
                Step::NeedDelta => Want::Delta,
                Step::NeedBase(r) => Want::Base(r),
                Step::Output { at, bytes } => Want::Out(match &self.into {
                    Some(into) => into.place(at, bytes)?,
                    None => Uint8Array::from(bytes),
                }),
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

/// `expectSha256`: 64 hex digits.
fn sha256_of(v: &JsValue) -> Result<[u8; 32], JsValue> {
    let bad = || invalid("expectSha256 must be a sha256 in 64 hex digits");
    let s = v.as_string().filter(|s| s.len() == 64).ok_or_else(bad)?;
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte =
            u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Starts a streaming rebuild: `{ value: Task }` yielding verified chunks in order (or at
/// their offsets, for a part), or `{ error }` for options that cannot work.
#[wasm_bindgen]
pub fn rebuild(options: JsValue) -> JsValue {
    outcome(Run::start(&options).map(|run| {
        let chunks = stream::unfold(run, |mut run| async move {
            match run.next().await {
                Ok(Next::Chunk(c)) => Some((Ok(JsValue::from(c)), run)),
                Ok(Next::End(_)) => None,
                Err(e) => Some((Err(e), run)),
            }
        });
        Task::stream(chunks).into()
    }))
}

/// Rebuilds and checks everything without keeping the output: the file's identity as computed
/// (`Summary`; its hashes are the delta's record only when `fullHash` is false).
#[wasm_bindgen]
pub fn verify(options: JsValue) -> Task {
    Task::once(async move {
        let mut run = Run::start(&options)?;
        loop {
            if let Next::End(summary) = run.next().await? {
                return to_json(&summary);
            }
        }
    })
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
}

impl RangeRun {
    async fn open(options: &JsValue) -> Result<RangeRun, JsValue> {
        let base = Source::from_js(field(options, "base")?, Role::Base)?;
        let delta = Source::from_js(field(options, "delta")?, Role::Delta)?;
        let (start, end) = (
            whole_option(options, "start")?,
            whole_option(options, "end")?,
        );
        let base_size = whole_option(options, "baseSize")?;
        let plan = open_plan(&delta).await?;
        let m = &plan.manifest;
        let start = start.unwrap_or(0);
        let end = end.unwrap_or(m.target_size);
        plan.check_range(&(start..end)).map_err(|e| js_error(&e))?;
        let header = base.read(0, m.base_header_len).await?;
        plan.check_base(base.len().or(base_size), &header)
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
        })
    }

    /// The next verified part of the range, or `None` at its end.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, JsValue> {
        let range = self.start..self.end;
        if std::mem::take(&mut self.header_left) {
            return Ok(Some(self.plan.header_within(&range).to_vec()));
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
        for r in self.plan.manifest.base_reads(i) {
            base_bytes.extend_from_slice(&self.base.read(r.start, r.end).await?);
        }
        self.plan
            .decode_chunk_within(
                i,
                &range,
                |b| blobs.get(&b).map(Vec::as_slice),
                &base_bytes,
                &mut self.decoder,
            )
            .map(Some)
            .map_err(|e| js_error(&e))
    }
}

/// Rebuilds bytes `[start, end)` of the fine-tuned file alone, decoding only the chunks that
/// cover them: one `Uint8Array`. The delta must allow random access.
#[wasm_bindgen(js_name = rebuildRange)]
pub fn rebuild_range(options: JsValue) -> Task {
    Task::once(async move {
        let mut run = RangeRun::open(&options).await?;
        let mut out = Vec::with_capacity((run.end - run.start) as usize);
        while let Some(part) = run.next().await? {
            out.extend_from_slice(&part);
        }
        Ok(Uint8Array::from(out.as_slice()).into())
    })
}

/// Opens bytes `[start, end)` (the whole file by default) for streaming, one verified chunk
/// at a time, with memory bounded by the chunk size: the task's value, once the base is
/// checked, is a `Task` yielding the parts.
#[wasm_bindgen(js_name = rebuildRangeStream)]
pub fn rebuild_range_stream(options: JsValue) -> Task {
    Task::once(async move {
        let run = RangeRun::open(&options).await?;
        let parts = stream::unfold(run, |mut run| async move {
            match run.next().await {
                Ok(Some(part)) => Some((Ok(Uint8Array::from(part.as_slice()).into()), run)),
                Ok(None) => None,
                Err(e) => Some((Err(e), run)),
            }
        });
        Ok(Task::stream(parts).into())
    })
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
#[wasm_bindgen]
pub fn describe(delta: JsValue) -> Task {
    Task::once(async move {
        let delta = Source::from_js(delta, Role::Delta)?;
        let plan = open_plan(&delta).await?;
        let m = &plan.manifest;
        to_json(&Description {
            format_version: crate::codec::format::VERSION,
            target_size: m.target_size,
            target_sha256: hex(&m.target_sha256),
            target_blake3: hex(&m.target_blake3),
            base_size: m.base_size,
            base_header_blake3: hex(&m.base_header_blake3),
            delta_size: plan.payload_offset + m.payload_len,
            chunks: m.chunks.len(),
        })
    })
}

/// What a delta holds: sizes before and after by tensor kind, dtype and method (the core's
/// report; the wrapper gives its fields camelCase names).
#[wasm_bindgen]
pub fn inspect(delta: JsValue) -> Task {
    Task::once(async move {
        let delta = Source::from_js(delta, Role::Delta)?;
        let plan = open_plan(&delta).await?;
        let mut heads = std::collections::BTreeMap::new();
        for b in 0..plan.manifest.blobs.len() as u32 {
            let r = plan.blob_range(b);
            // Only the blob's method (its first two bytes) is needed.
            let end = r.end.min(r.start + 2);
            heads.insert(b, delta.read(r.start, end).await?);
        }
        let report = crate::codec::inspect::report(&plan, |b| heads.get(&b).map(Vec::as_slice))
            .map_err(|e| js_error(&e))?;
        to_json(&report)
    })
}
