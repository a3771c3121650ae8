//! Core ML packages: the typed MIL program, its builder, the protobuf and weight.bin encodings,
//! and .mlpackage writing and reading. Knows nothing about LLMs.

pub mod ir;

pub use ir::*;
