//! The typed MIL program: the one IR that anec builds (`ane`), writes and reads (`mil`), and runs (`exec`).
//!
//! It mirrors what is on disk one to one (see docs/coreml-format.md §4): a program of
//! named functions, each a flat list of operations in topological order, each operation binding
//! Core ML parameter names to variables or to constant values. Writing then reading a program gives
//! back an equal program.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Element types of MIL tensors, the subset anec writes or reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    Bool,
    Str,
    F16,
    F32,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U1,
    U2,
    U3,
    U4,
    U6,
    /// Signed 4-bit (constexpr_blockwise_shift_scale data in coremltools' samples).
    I4,
}

impl DType {
    /// Bits per element in blob storage (strings: 0).
    pub fn bits(self) -> u32 {
        match self {
            DType::Str => 0,
            DType::U1 => 1,
            DType::U2 => 2,
            DType::U3 => 3,
            DType::U4 | DType::I4 => 4,
            DType::U6 => 6,
            DType::Bool | DType::I8 | DType::U8 => 8,
            DType::F16 | DType::I16 | DType::U16 => 16,
            DType::F32 | DType::I32 => 32,
            DType::I64 => 64,
        }
    }

    /// The name MIL uses in op schemas and in `cast.dtype` ("fp16", "int32", "uint4", ...).
    pub fn mil_name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::Str => "string",
            DType::F16 => "fp16",
            DType::F32 => "fp32",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U1 => "uint1",
            DType::U2 => "uint2",
            DType::U3 => "uint3",
            DType::U4 => "uint4",
            DType::U6 => "uint6",
            DType::I4 => "int4",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::F32)
    }

    pub fn is_sub_byte(self) -> bool {
        self.bits() > 0 && self.bits() < 8
    }

    /// The unsigned index type for an n-bit LUT (1, 2, 3, 4, 6 or 8 bits).
    pub fn lut_index(bits: u32) -> Option<DType> {
        Some(match bits {
            1 => DType::U1,
            2 => DType::U2,
            3 => DType::U3,
            4 => DType::U4,
            6 => DType::U6,
            8 => DType::U8,
            _ => return None,
        })
    }
}

/// One dimension of a tensor type: a fixed size, or unknown (the embeddings input's
/// enumerated sequence length is the only unknown dimension anec writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(u64),
    Unknown,
}

/// The highest tensor rank anec reads or infers. Core ML runs rank ≤ 5 on the ANE and anec
/// writes rank ≤ 4; a rank read from a file (a type's dimension list, the length of a runtime
/// `shape` or `reps`) above this is refused before anything is sized by it.
pub const MAX_RANK: u64 = 32;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: &[u64]) -> Self {
        TensorType {
            dtype,
            shape: shape.iter().map(|&d| Dim::Fixed(d)).collect(),
        }
    }

    pub fn scalar(dtype: DType) -> Self {
        TensorType {
            dtype,
            shape: Vec::new(),
        }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The shape when every dimension is fixed.
    pub fn static_shape(&self) -> Option<Vec<u64>> {
        self.shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Some(*n),
                Dim::Unknown => None,
            })
            .collect()
    }

    /// The element count; `None` with an unknown dimension or a count beyond u64 (a corrupt
    /// shape read from a file must not overflow).
    pub fn num_elements(&self) -> Option<u64> {
        self.static_shape()?
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
    }
}

/// The type of a variable: a tensor, or a state wrapping a tensor (the KV cache).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    Tensor(TensorType),
    State(TensorType),
}

/// A constant tensor: its static type and its contents.
#[derive(Clone, Debug, PartialEq)]
pub struct ConstValue {
    pub ty: TensorType,
    pub data: ConstData,
}

/// Where a constant's bytes are.
///
/// Numeric bytes are always in blob encoding: little-endian elements in row-major order,
/// sub-byte types packed LSB-first (docs/coreml-format.md §2), bool one byte per element.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstData {
    /// Held in memory.
    Bytes(Arc<[u8]>),
    /// Strings (the `name` attribute, `pad_type`, `cast.dtype`, ...).
    Strings(Vec<String>),
    /// Already stored in a weight.bin: referenced by its metadata offset.
    Stored(StoredBlob),
}

/// A blob in a weight.bin. `bytes` is present when the file was read (mmap-backed or loaded),
/// absent for a blob the package writer has just streamed to disk.
#[derive(Clone)]
pub struct StoredBlob {
    /// Offset of the blob's 64-byte metadata record (what the proto's BlobFileValue.offset holds).
    pub offset: u64,
    pub size_in_bytes: u64,
    pub bytes: Option<Arc<dyn AsRef<[u8]> + Send + Sync>>,
}

impl std::fmt::Debug for StoredBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredBlob")
            .field("offset", &self.offset)
            .field("size_in_bytes", &self.size_in_bytes)
            .field("loaded", &self.bytes.is_some())
            .finish()
    }
}

impl PartialEq for StoredBlob {
    fn eq(&self, other: &Self) -> bool {
        self.offset == other.offset && self.size_in_bytes == other.size_in_bytes
    }
}

/// One binding of an operation's parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// A variable of the function, by name (function input or an earlier op's output).
    Var(String),
    /// A value bound directly (how iOS 18 `constexpr_lut_to_dense` takes its indices and LUT).
    Value(ConstValue),
}

/// Declares [`OpKind`] from one table of (variant, MIL op type): the enum, its names both ways
/// and the list of every kind cannot drift apart.
macro_rules! op_kinds {
    ($($kind:ident => $name:literal,)*) => {
        /// Every op anec emits, plus what the coremltools samples use. A closed set: adding one is
        /// a compile error at every place that must handle it (type inference, execution).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum OpKind {
            $($kind,)*
        }

        impl OpKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [OpKind] = &[$(OpKind::$kind,)*];

            /// The MIL op type (what the proto's `Operation.type` holds).
            pub fn mil_name(self) -> &'static str {
                match self {
                    $(OpKind::$kind => $name,)*
                }
            }

            /// The kind whose MIL op type is `name`.
            pub fn from_mil_name(name: &str) -> Option<OpKind> {
                match name {
                    $($name => Some(OpKind::$kind),)*
                    _ => None,
                }
            }
        }
    };
}

op_kinds! {
    Const => "const",
    ConstexprLutToDense => "constexpr_lut_to_dense",
    ConstexprBlockwiseShiftScale => "constexpr_blockwise_shift_scale",
    Conv => "conv",
    Linear => "linear",
    Matmul => "matmul",
    Add => "add",
    Sub => "sub",
    Mul => "mul",
    RealDiv => "real_div",
    Maximum => "maximum",
    Minimum => "minimum",
    Rsqrt => "rsqrt",
    Sqrt => "sqrt",
    Exp => "exp",
    Relu => "relu",
    Silu => "silu",
    Gelu => "gelu",
    LayerNorm => "layer_norm",
    Softmax => "softmax",
    Concat => "concat",
    Split => "split",
    SliceByIndex => "slice_by_index",
    SliceUpdate => "slice_update",
    Reshape => "reshape",
    Transpose => "transpose",
    ExpandDims => "expand_dims",
    Squeeze => "squeeze",
    Gather => "gather",
    Cast => "cast",
    Select => "select",
    ReduceArgmax => "reduce_argmax",
    ReduceMax => "reduce_max",
    ReduceSum => "reduce_sum",
    ReduceMean => "reduce_mean",
    ReadState => "read_state",
    WriteState => "write_state",
    Equal => "equal",
    Less => "less",
    LessEqual => "less_equal",
    Greater => "greater",
    GreaterEqual => "greater_equal",
    BandPart => "band_part",
    Fill => "fill",
    Tile => "tile",
}

/// An operation: its kind, its unique name, its parameter bindings and its typed outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    pub kind: OpKind,
    pub name: String,
    /// Core ML parameter name → bindings (several for variadic parameters such as concat's `values`).
    pub inputs: BTreeMap<String, Vec<Arg>>,
    /// Output variables with their full types (none for write_state).
    pub outputs: Vec<(String, ValueType)>,
    /// The `val` attribute of a `const` op; `None` for every other kind.
    pub val: Option<ConstValue>,
}

impl Operation {
    /// Every constant the op holds: a `const` op's `val`, then the values bound directly to its
    /// parameters (`constexpr_*` indices, LUTs, scales), in parameter-name order.
    pub fn constants(&self) -> impl Iterator<Item = &ConstValue> {
        self.val
            .iter()
            .chain(self.inputs.values().flatten().filter_map(|a| match a {
                Arg::Value(c) => Some(c),
                Arg::Var(_) => None,
            }))
    }

    /// [`Operation::constants`], mutably (to store, load or rewrite them in place).
    pub fn constants_mut(&mut self) -> impl Iterator<Item = &mut ConstValue> {
        self.val
            .iter_mut()
            .chain(self.inputs.values_mut().flatten().filter_map(|a| match a {
                Arg::Value(c) => Some(c),
                Arg::Var(_) => None,
            }))
    }
}

/// A function: typed inputs (tensors and states), operations in topological order, output names.
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    pub inputs: Vec<(String, ValueType)>,
    pub operations: Vec<Operation>,
    pub outputs: Vec<String>,
}

/// Named functions in insertion order, one of them the default.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub functions: Vec<(String, Function)>,
    pub default_function: String,
}
