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
//! The crate is laid out as the pipeline runs: what every stage shares, the codec's stages in
//! the order data flows, then the adapters that give the core files, threads or JS.
//!
//! * [`model`] — parse: safetensors headers (offsets in `u64`, so it works on wasm32 too).
//! * [`family`] — match: which base a model was tuned from (architecture alignment,
//!   name-seeded sampling, bit distance, verdicts).
//! * [`codec`] — the delta, stage by stage: [`codec::transform`] (residuals and stream
//!   layouts) and [`codec::sparse`] (its vectorized kernels), [`codec::entropy`] (zstd),
//!   [`codec::blob`] (one piece to one blob), [`codec::format`] (the container,
//!   docs/FORMAT.md), [`codec::encode`], [`codec::rebuild`] (the sans-I/O decoder: [`Plan`]
//!   decodes any chunk or byte range alone, [`Rebuilder`] streams) and [`codec::inspect`].
//! * [`hash`] — BLAKE3 for the checksums (a faster leaf kernel of our own on wasm) and the
//!   streaming per-tensor hasher.
//! * Adapters: [`native`] (feature `native`: files, threads, atomic output, and
//!   [`native::bench`]); the `zipllm` command line (`src/bin/zipllm.rs`, feature `cli`);
//!   `wasm` (feature `wasm`, wasm32 only: the npm package's bindings, `src/wasm/`).
//!
//! Every error is an [`Error`] with a stable [`ErrorCode`].

pub mod codec;
pub mod error;
pub mod family;
pub mod hash;
pub mod model;

#[cfg(feature = "native")]
pub mod native;
#[cfg(feature = "store")]
pub mod store;
#[cfg(all(feature = "wasm", target_arch = "wasm32"))]
pub mod wasm;

pub use codec::encode::{encode, EncodeOptions, EncodedDelta, Strategy};
pub use codec::rebuild::{Plan, Rebuilder, Step, Summary};
pub use error::{Error, ErrorCode, Result};
pub use model::{DType, Model};

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
