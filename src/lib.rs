//! Rebuild a fine-tuned model's `.safetensors` file byte for byte from the base model it was
//! tuned from plus a small delta.
//!
//! ```no_run
//! # fn main() -> zipllm::Result<()> {
//! let base = std::fs::read("base/model.safetensors").unwrap();
//! let tuned = std::fs::read("ft/model.safetensors").unwrap();
//! let delta = zipllm::encode(&base, &tuned, &Default::default(), &|_| {})?.to_bytes()?;
//! let rebuilt = zipllm::rebuild_in_memory(&base, &delta)?;
//! assert_eq!(rebuilt, tuned);
//! # Ok(()) }
//! ```
//!
//! The crate is laid out by stage, in the order data flows:
//!
//! * [`model`] — safetensors headers: parsing (offsets in `u64`, so it works on wasm32 too).
//! * [`transform`] — residuals (XOR as in BitX, or an order-preserving difference) and the
//!   stream layouts (byte planes, the paper's fields, change mask + sparse planes).
//! * [`sparse`] — the fused, vectorized kernels for the default change-mask layout.
//! * [`entropy`] — zstd, with C zstd or pure-Rust ruzstd behind one API.
//! * [`blob`] — one piece of a tensor to one self-describing blob and back.
//! * [`format`] — the delta container (specified in docs/FORMAT.md).
//! * [`family`] — which base a model was tuned from: architecture alignment, name-seeded
//!   sampling, bit distance and verdicts.
//! * [`encode`] — making a delta: pairing, deduplication, pieces, chunks, checksums.
//! * [`hash`] — BLAKE3 for the chunk checksums (a faster leaf kernel of our own on wasm).
//! * [`rebuild`] — the sans-I/O decoder: [`Plan`] decodes any chunk alone, [`Rebuilder`] streams.
//! * [`inspect`] — what a delta holds, by tensor kind, dtype and method.
//! * [`native`] (feature `native`) — files, threads and atomic output for the CLI; [`bench`]
//!   measures a pair side by side.
//! * `wasm` (feature `wasm`, wasm32 only) — the JS bindings of the npm package.
//!
//! Every error is an [`Error`] with a stable [`ErrorCode`].

pub mod blob;
pub mod encode;
pub mod entropy;
pub mod error;
pub mod family;
pub mod format;
pub mod hash;
pub mod inspect;
pub mod model;
pub mod rebuild;
pub mod sparse;
pub mod transform;

#[cfg(feature = "native")]
pub mod bench;
#[cfg(feature = "native")]
pub mod native;
#[cfg(all(feature = "wasm", target_arch = "wasm32"))]
pub mod wasm;

pub use encode::{encode, EncodeOptions, EncodedDelta, Strategy};
pub use error::{Error, ErrorCode, Result};
pub use model::{DType, Model};
pub use rebuild::{Plan, Rebuilder, Step, Summary};

/// Rebuilds a target held in memory from a whole base and a whole delta, verifying every
/// chunk and the whole file. Convenient for tests and small models; large ones stream through
/// [`Rebuilder`] or the `native` adapters.
pub fn rebuild_in_memory(base: &[u8], delta: &[u8]) -> Result<Vec<u8>> {
    let mut machine = Rebuilder::new(Some(base.len() as u64), true)?;
    machine.push_delta(delta);
    machine.end_delta();
    let mut out = Vec::new();
    loop {
        match machine.poll()? {
            Step::NeedDelta => {
                return Err(Error::internal(
                    "the machine asked for more delta after the whole delta was given",
                ))
            }
            Step::NeedBase(r) => {
                let bytes = base.get(r.start as usize..r.end as usize).ok_or_else(|| {
                    Error::wrong_base(format!(
                        "the base is too short for bytes {}..{}",
                        r.start, r.end
                    ))
                })?;
                machine.provide_base(bytes)?;
            }
            Step::Output { bytes, .. } => out.extend_from_slice(bytes),
            Step::Done(_) => return Ok(out),
        }
    }
}
