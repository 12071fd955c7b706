//! Which base a model was tuned from: fingerprints of remote and local files, and the ranking
//! of locally held bases against one.

use js_sys::{Function, Object, Reflect, Uint8Array};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::io::{Role, Source};
use super::task::{resolve, settled, Task};
use super::{coded, given, invalid, js_error, to_json, whole};
use crate::error::{Error, ErrorCode};
use crate::model::{Model, PREFIX_LEN};

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
    let bytes = Uint8Array::new(&settled(response.array_buffer()?).await?).to_vec();
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
#[wasm_bindgen(js_name = fingerprintRemote)]
pub fn fingerprint_remote(url: JsValue, options: JsValue) -> Task {
    Task::once(fingerprint_remote_async(url, options))
}

async fn fingerprint_remote_async(url: JsValue, options: JsValue) -> Result<JsValue, JsValue> {
    use futures_util::StreamExt as _;
    let url = url
        .as_string()
        .ok_or_else(|| invalid("the url must be a string"))?;
    let options = if options.is_undefined() || options.is_null() {
        Object::new().into()
    } else {
        options
    };
    let positive = |name: &str| -> Result<Option<u64>, JsValue> {
        let Some(v) = given(&options, name)? else {
            return Ok(None);
        };
        match whole(&v, name)? {
            0 => Err(invalid(&format!("{name} must be at least 1"))),
            n => Ok(Some(n)),
        }
    };
    let max_bytes = positive("maxBytes")?;
    let concurrency = positive("concurrency")?.unwrap_or(8).min(64) as usize;
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
        .min(max_bytes.unwrap_or(u64::MAX))
        .saturating_sub(fetched.saturating_sub(region));
    let plan = crate::family::SamplePlan::with_budget(&model, cap, 1.0);
    let bytes: Vec<Vec<u8>> = futures_util::stream::iter(
        plan.ranges
            .iter()
            .map(|r| fetch_range(&fetch, &url, r.start, r.end)),
    )
    .buffered(concurrency)
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
#[wasm_bindgen]
pub fn fingerprint(source: JsValue) -> Task {
    Task::once(async move {
        let source = Source::from_js(source, Role::Model)?;
        let model = read_model(&source).await?;
        let plan = crate::family::SamplePlan::with_budget(&model, 2 << 20, 0.01);
        let mut bytes = Vec::with_capacity(plan.ranges.len());
        for r in &plan.ranges {
            bytes.push(source.read(r.start, r.end).await?);
        }
        fingerprint_to_js(&plan.fingerprint(&model, &bytes).map_err(|e| js_error(&e))?)
    })
}

async fn read_model(source: &Source) -> Result<Model, JsValue> {
    let len = source.len();
    let prefix = source
        .read(0, PREFIX_LEN.min(len.unwrap_or(PREFIX_LEN)))
        .await?;
    let region = Model::header_region_len(&prefix, len).map_err(|e| js_error(&e))?;
    let header = source.read(0, region).await?;
    Model::parse_header(&header, len).map_err(|e| js_error(&e))
}

/// Ranks locally held bases for a fingerprint (from `fingerprintRemote` or `fingerprint`):
/// each gets a verdict — `related`, `unrelated` or `incompatible` (with the reason) — with
/// its bit distance, the threshold and a confidence. Only the sampled blocks of each base are
/// read. `bases` holds ByteSources or `{ name, source }` objects. The fingerprint is read with
/// the core's (snake_case) field names.
#[wasm_bindgen(js_name = matchFamily)]
pub fn match_family(fingerprint: JsValue, bases: JsValue) -> Task {
    Task::once(match_family_async(fingerprint, bases))
}

async fn match_family_async(fingerprint: JsValue, bases: JsValue) -> Result<JsValue, JsValue> {
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
        let source = Source::from_js(source, Role::Model)?;
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
