//! WebAssembly bindings (npm package `zipllm`): a thin skin over the core.
//!
//! Everything here converts between JS values and the core's types, and moves bytes between JS
//! sources (`Blob`, `Uint8Array`, `ReadableStream`, `Response`, async reader functions) and the
//! sans-I/O [`Rebuilder`](crate::Rebuilder) / [`Plan`](crate::Plan). No codec logic lives here.
//! Errors become JS `Error`s with a stable `code` (`WRONG_BASE`, `CORRUPT_DELTA`, …).
//!
//! These exports are the package's inner layer; the JS wrapper (`js/wrapper/api.js`) gives them
//! their public names and shapes. Two rules let it survive any panic:
//!
//! * **Exports never throw.** They return `{ value }` or `{ error }` ([`outcome`]), so whatever
//!   is thrown out of wasm is a fault: a panic (its hook, [`task`], throws a coded `INTERNAL`
//!   error and schedules a fresh instance) or a trap. The wrapper then has wasm-bindgen
//!   instantiate the module again before the next call.
//! * **Async work is a [`task::Task`] that JS steps.** Nothing is polled from
//!   wasm-bindgen-futures' microtask queue, where a trap could not be caught, and no Rust
//!   closure is handed to JS, where a promise settling after a reinit would find it stale.

mod encode;
mod family;
mod hash;
mod io;
mod rebuild;
mod task;

use js_sys::Reflect;
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::error::{Error, ErrorCode};

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

/// An export's result as a value, `{ value }` or `{ error }`: exports never throw, so the JS
/// wrapper can take anything thrown out of wasm for a fault.
fn outcome(result: Result<JsValue, JsValue>) -> JsValue {
    let o = js_sys::Object::new();
    let (key, v) = match result {
        Ok(v) => ("value", v),
        Err(e) => ("error", e),
    };
    let _ = Reflect::set(&o, &key.into(), &v);
    o.into()
}

fn field(options: &JsValue, name: &str) -> Result<JsValue, JsValue> {
    if !options.is_object() {
        return Err(invalid("options must be an object"));
    }
    Reflect::get(options, &name.into())
}

/// `options[name]`, or `None` when it is `undefined` or `null`.
fn given(options: &JsValue, name: &str) -> Result<Option<JsValue>, JsValue> {
    let v = field(options, name)?;
    Ok((!v.is_undefined() && !v.is_null()).then_some(v))
}

/// A size, offset or count: a whole number from 0 to 2^53 − 1. Anything else (negative, NaN,
/// fractional, infinite, not a number) is `INVALID_INPUT` rather than coerced.
fn whole(v: &JsValue, what: &str) -> Result<u64, JsValue> {
    const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;
    v.as_f64()
        .filter(|n| (0.0..=MAX_SAFE_INTEGER).contains(n) && n.fract() == 0.0)
        .map(|n| n as u64)
        .ok_or_else(|| {
            let got = v
                .as_f64()
                .map_or_else(|| format!("{v:?}"), |n| n.to_string());
            invalid(&format!("{what} must be a whole number ≥ 0, not {got}"))
        })
}

/// `options[name]` as a [`whole`] number, if given.
fn whole_option(options: &JsValue, name: &str) -> Result<Option<u64>, JsValue> {
    given(options, name)?.map(|v| whole(&v, name)).transpose()
}

fn to_json<T: Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| invalid(&e.to_string()))
}

/// Bytes of linear memory this instance holds now (it only grows, so this is also its peak):
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
    crate::codec::format::VERSION
}
