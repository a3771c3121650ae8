//! Core ML packages: the typed MIL program, its builder, the protobuf and weight.bin encodings,
//! and .mlpackage writing and reading. Knows nothing about LLMs.

pub mod bits;
pub mod blob;
pub mod builder;
pub mod error;
pub mod infer;
pub mod inspect;
pub mod ir;
mod lower;
pub mod model;
pub mod package;
mod proto;
pub mod value;

pub use builder::{
    check_identifier, ConvParams, EnumeratedShapes, FunctionBuilder, SliceParams, Var,
};
pub use error::{MilError, Result};
pub use infer::{
    check_function, check_program, retype, tensor_string, type_string, types_compatible,
    unused_inputs,
};
pub use inspect::{inspect, InspectReport};
pub use ir::*;
pub use model::{InputShapes, Metadata, Model};
pub use package::{read_package, read_package_info, PackageInfo, PackageWriter};
