//! The delta codec, one module per stage, in the order data flows when encoding: a piece of a
//! tensor is turned into a residual against its base and split into streams
//! ([`transform`], with the vectorized kernels of the default layout in [`sparse`]), each
//! stream compressed ([`entropy`]), the streams framed as one self-describing blob ([`blob`]),
//! and the blobs, pieces and chunks laid out in the container ([`format`]). [`encode`] drives
//! those stages for a whole file; [`rebuild`] runs them backwards with no I/O of its own;
//! [`inspect`] reports what a delta holds.

pub mod blob;
pub mod encode;
pub mod entropy;
pub mod format;
pub mod inspect;
pub mod rebuild;
pub mod sparse;
pub mod transform;
