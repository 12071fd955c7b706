//! Making a delta in wasm (left out of the decoder-only build, where `encodeLevels()` is empty
//! and `encode` an `INVALID_INPUT` error).

use wasm_bindgen::prelude::*;

use super::invalid;
use super::outcome;
#[cfg(feature = "wasm-encode")]
use super::{given, io::bytes_of, js_error, task, whole};

/// The zstd levels `encode` offers in this build: 1–22 with C zstd, `[1]` with ruzstd, none
/// in a decoder-only build.
#[wasm_bindgen(js_name = encodeLevels)]
pub fn encode_levels() -> Vec<i32> {
    if cfg!(feature = "wasm-encode") {
        crate::codec::entropy::supported_levels().collect()
    } else {
        Vec::new()
    }
}

/// Makes a delta that rebuilds `target` from `base` (both whole files in memory):
/// `{ value: Uint8Array }`.
#[wasm_bindgen]
pub fn encode(base: JsValue, target: JsValue, options: JsValue) -> JsValue {
    outcome(encode_bytes(&base, &target, &options))
}

#[cfg(feature = "wasm-encode")]
fn encode_bytes(base: &JsValue, target: &JsValue, options: &JsValue) -> Result<JsValue, JsValue> {
    use crate::{EncodeOptions, Strategy};
    task::panic_point(task::PanicPoint::Encode);
    let bytes = |v: &JsValue, what: &str| {
        bytes_of(v)
            .map(|u| u.to_vec())
            .ok_or_else(|| invalid(&format!("{what} must be a Uint8Array or an ArrayBuffer")))
    };
    let (base, target) = (bytes(base, "base")?, bytes(target, "target")?);
    let mut opts = EncodeOptions::default();
    if !options.is_undefined() && !options.is_null() {
        if let Some(level) = given(options, "level")? {
            opts.level = i32::try_from(whole(&level, "level")?)
                .map_err(|_| invalid("level is out of range"))?;
        }
        if let Some(name) = given(options, "strategy")? {
            let name = name
                .as_string()
                .ok_or_else(|| invalid("strategy must be a string"))?;
            opts.strategy = Strategy::from_name(&name)
                .ok_or_else(|| invalid(&format!("unknown strategy `{name}`")))?;
        }
    }
    let delta = crate::encode(&base, &target, &opts, &|_| {}).map_err(|e| js_error(&e))?;
    let delta = delta.to_bytes().map_err(|e| js_error(&e))?;
    Ok(js_sys::Uint8Array::from(delta.as_slice()).into())
}

#[cfg(not(feature = "wasm-encode"))]
fn encode_bytes(_: &JsValue, _: &JsValue, _: &JsValue) -> Result<JsValue, JsValue> {
    Err(invalid(
        "this build of zipllm is decoder-only: it has no encode",
    ))
}
