//! Core ML packages: the typed MIL program, its builder, the protobuf and weight.bin encodings,
//! and .mlpackage writing and reading. Knows nothing about LLMs.

pub mod bits;
pub mod error;
pub mod ir;
pub mod value;

pub use error::{MilError, Result};
pub use ir::*;
