//! Core ML packages: the typed MIL program, its builder, the protobuf and weight.bin encodings,
//! and .mlpackage writing and reading. Knows nothing about LLMs.

pub mod bits;
pub mod builder;
pub mod error;
pub mod infer;
pub mod ir;
pub mod value;

pub use builder::{
    check_identifier, ConvParams, EnumeratedShapes, FunctionBuilder, SliceParams, Var,
};
pub use error::{MilError, Result};
pub use infer::{
    check_function, check_program, op_kind_from_name, op_type_name, tensor_string, type_string,
    types_compatible, unused_inputs, ALL_KINDS,
};
pub use ir::*;
