//! Core ML packages: the typed MIL program, its builder, the protobuf and weight.bin encodings,
//! and .mlpackage writing and reading. Knows nothing about LLMs.

pub mod bits;
pub mod blob;
pub mod error;
pub mod ir;
mod proto;
pub mod value;

pub use error::{MilError, Result};
pub use ir::*;
