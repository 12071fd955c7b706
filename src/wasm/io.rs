//! Bytes from JS: random-access sources, sequential ones, and output memory the caller gives.

use std::mem::MaybeUninit;

use js_sys::{Function, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::task::{resolve, settled};
use super::{coded, invalid};
use crate::error::ErrorCode;

pub(super) fn bytes_of(v: &JsValue) -> Option<Uint8Array> {
    if let Some(u) = v.dyn_ref::<Uint8Array>() {
        return Some(u.clone());
    }
    if v.is_instance_of::<js_sys::ArrayBuffer>() {
        return Some(Uint8Array::new(v));
    }
    None
}

/// What a source is to the operation reading it, which decides what a source too short for a
/// read means.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The base of a rebuild: shorter than the delta's record means another base.
    Base,
    /// A delta: shorter than its manifest says means truncated.
    Delta,
    /// A model file being hashed, fingerprinted or compared: shorter than its header says
    /// means a malformed file.
    Model,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Base => "base",
            Role::Delta => "delta",
            Role::Model => "source",
        }
    }

    fn too_short(self, message: &str) -> JsValue {
        let code = match self {
            Role::Base => ErrorCode::WrongBase,
            Role::Delta => ErrorCode::TruncatedDelta,
            Role::Model => ErrorCode::BadSafetensors,
        };
        coded(code, &format!("{}: {message}", self.name()))
    }
}

/// Random-access bytes from JS.
pub(super) struct Source {
    kind: SourceKind,
    role: Role,
}

enum SourceKind {
    Bytes(Uint8Array),
    Blob(web_sys::Blob),
    Reader(Function),
}

impl Source {
    pub(super) fn from_js(v: JsValue, role: Role) -> Result<Source, JsValue> {
        let kind = if let Some(u) = bytes_of(&v) {
            SourceKind::Bytes(u)
        } else if let Some(f) = v.dyn_ref::<Function>() {
            SourceKind::Reader(f.clone())
        } else {
            SourceKind::Blob(v.dyn_into::<web_sys::Blob>().map_err(|_| {
                invalid(&format!(
                    "{} must be a Blob, an ArrayBuffer, a Uint8Array or a function (offset, length) => bytes",
                    role.name()
                ))
            })?)
        };
        Ok(Source { kind, role })
    }

    pub(super) fn len(&self) -> Option<u64> {
        match &self.kind {
            SourceKind::Bytes(u) => Some(u.length() as u64),
            SourceKind::Blob(b) => Some(b.size() as u64),
            SourceKind::Reader(_) => None,
        }
    }

    pub(super) async fn read(&self, start: u64, end: u64) -> Result<Vec<u8>, JsValue> {
        Ok(self.read_js(start, end).await?.to_vec())
    }

    /// Bytes `start..end` as JS holds them, for the caller to copy where they are needed.
    pub(super) async fn read_js(&self, start: u64, end: u64) -> Result<Uint8Array, JsValue> {
        let want = end - start;
        let got = match &self.kind {
            SourceKind::Bytes(u) => {
                if end > u.length() as u64 {
                    return Err(self.role.too_short(&format!(
                        "bytes {start}..{end} are past the end of its {} bytes",
                        u.length()
                    )));
                }
                return Ok(u.subarray(start as u32, end as u32));
            }
            SourceKind::Blob(b) => {
                let part = b.slice_with_f64_and_f64(start as f64, end as f64)?;
                settled(part.array_buffer()).await?
            }
            SourceKind::Reader(f) => {
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
        if bytes.length() as u64 != want {
            let message = format!(
                "asked for bytes {start}..{end}, the source returned {}",
                bytes.length()
            );
            // A Blob ends early only when it is shorter than the file it should be; a reader
            // returning the wrong amount is an I/O fault of the adapter.
            return Err(match self.kind {
                SourceKind::Blob(_) => self.role.too_short(&message),
                _ => coded(ErrorCode::Io, &message),
            });
        }
        Ok(bytes)
    }
}

/// Sequential bytes from JS: a stream, a Response, or random-access bytes read in order.
pub(super) enum Sequential {
    Stream(web_sys::ReadableStreamDefaultReader),
    Source {
        source: Source,
        at: u64,
        len: Option<u64>,
    },
}

const SEQUENTIAL_READ: u64 = 1 << 20;

impl Sequential {
    pub(super) fn from_js(v: JsValue, role: Role) -> Result<Sequential, JsValue> {
        let stream =
            if let Some(r) = v.dyn_ref::<web_sys::Response>() {
                Some(r.body().ok_or_else(|| {
                    invalid(&format!("{}: the Response has no body", role.name()))
                })?)
            } else {
                v.dyn_ref::<web_sys::ReadableStream>().cloned()
            };
        if let Some(s) = stream {
            let reader = s
                .get_reader()
                .dyn_into::<web_sys::ReadableStreamDefaultReader>()?;
            return Ok(Sequential::Stream(reader));
        }
        let source = Source::from_js(v, role)?;
        let len = source.len();
        Ok(Sequential::Source { source, at: 0, len })
    }

    /// The next bytes, or `None` at the end.
    pub(super) async fn next(&mut self) -> Result<Option<Vec<u8>>, JsValue> {
        Ok(self.next_js().await?.map(|b| b.to_vec()))
    }

    /// The next bytes as JS holds them, or `None` at the end.
    pub(super) async fn next_js(&mut self) -> Result<Option<Uint8Array>, JsValue> {
        match self {
            Sequential::Stream(reader) => {
                let result = settled(reader.read()).await?;
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
pub(super) fn fill<'a>(bytes: &Uint8Array, spare: &'a mut [MaybeUninit<u8>]) -> &'a mut [u8] {
    if bytes.length() as usize != spare.len() {
        return &mut [];
    }
    bytes.copy_to_uninit(spare)
}

/// Where output goes when the caller provides the memory (`into`): allocating a fresh
/// ArrayBuffer per 4 MiB chunk is the largest cost of a rebuild in Chromium.
pub(super) enum OutputInto {
    /// One buffer for the whole file; chunks are views of it.
    Whole(Uint8Array),
    /// `(offset, length) => Uint8Array` returns the buffer for each chunk.
    Each(Function),
}

impl OutputInto {
    pub(super) fn from_js(v: Option<JsValue>) -> Result<Option<OutputInto>, JsValue> {
        let Some(v) = v else { return Ok(None) };
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
    pub(super) fn place(&self, at: u64, bytes: &[u8]) -> Result<Uint8Array, JsValue> {
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
