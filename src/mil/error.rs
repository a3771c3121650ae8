//! The one error type of the `mil` module: every failure names the op, parameter, file or value at fault.

use super::ir::OpKind;

pub type Result<T, E = MilError> = std::result::Result<T, E>;

/// Errors of MIL building, checking, encoding and decoding.
#[derive(Debug, thiserror::Error)]
pub enum MilError {
    /// A bit width that no sub-byte type has (LUT indices are 1, 2, 3, 4, 6 or 8 bits).
    #[error("unsupported index bit width {bits} (expected 1, 2, 3, 4, 6 or 8)")]
    BadBitWidth { bits: u32 },
    /// An index that does not fit its bit width.
    #[error("index {value} at position {index} does not fit in {bits} bits")]
    IndexOutOfRange { bits: u32, index: usize, value: u8 },
    /// Packed data whose length does not match the element count.
    #[error("{what}: {expected} bytes expected for {elements} elements of {dtype}, got {got}")]
    ByteLength {
        what: &'static str,
        dtype: &'static str,
        elements: u64,
        expected: u64,
        got: u64,
    },
    /// A value list whose length does not match the shape.
    #[error("constant of shape {shape:?} needs {expected} elements, got {got}")]
    ElementCount {
        shape: Vec<u64>,
        expected: u64,
        got: u64,
    },
    /// A decoder called on a constant of another dtype.
    #[error("cannot read a {found} constant as {wanted}")]
    ConstDType {
        wanted: &'static str,
        found: &'static str,
    },
    /// A stored constant whose bytes were not loaded (just written by the package writer).
    #[error("constant data at weight.bin offset {offset} is not loaded")]
    NotLoaded { offset: u64 },
    /// An int64 constant value that does not fit in i32.
    #[error("int64 value {value} does not fit in int32")]
    IntRange { value: i64 },

    /// A function, variable, op or state name that Core ML would reject.
    #[error("invalid identifier {name:?}: names must match [A-Za-z_][A-Za-z0-9_@]*")]
    InvalidName { name: String },
    /// A name used twice within one function.
    #[error("name {name:?} is already defined in this function")]
    DuplicateName { name: String },
    /// A reference to a variable that does not exist (yet) in the function.
    #[error("op `{op}` ({kind:?}): parameter `{param}` refers to unknown variable {var:?}")]
    UnknownVar {
        op: String,
        kind: OpKind,
        param: String,
        var: String,
    },
    /// A required parameter was not given.
    #[error("op `{op}` ({kind:?}): missing required parameter `{param}`")]
    MissingParam {
        op: String,
        kind: OpKind,
        param: &'static str,
    },
    /// A parameter the op does not have.
    #[error("op `{op}` ({kind:?}): unknown parameter `{param}`")]
    UnknownParam {
        op: String,
        kind: OpKind,
        param: String,
    },
    /// A parameter bound to the wrong number of values (several for a non-variadic parameter, none at all).
    #[error("op `{op}` ({kind:?}): parameter `{param}` takes {expected} binding(s), got {got}")]
    Arity {
        op: String,
        kind: OpKind,
        param: String,
        expected: &'static str,
        got: usize,
    },
    /// A parameter whose type is outside the op's domain.
    #[error("op `{op}` ({kind:?}): parameter `{param}` must be {expected}, got {found}")]
    ParamType {
        op: String,
        kind: OpKind,
        param: String,
        expected: String,
        found: String,
    },
    /// A parameter that Core ML requires to be compile-time constant is bound to a runtime variable.
    #[error("op `{op}` ({kind:?}): parameter `{param}` must be a constant (const op, constexpr output or bound value), got variable {var:?}")]
    NotConst {
        op: String,
        kind: OpKind,
        param: String,
        var: String,
    },
    /// Shapes or values that do not fit together (broadcasting, conv channels, reshape sizes, ...).
    #[error("op `{op}` ({kind:?}): {detail}")]
    Shape {
        op: String,
        kind: OpKind,
        detail: String,
    },
    /// A `const` op without its value.
    #[error("const op `{op}` has no `val`")]
    MissingVal { op: String },
    /// A declared output type that inference contradicts.
    #[error("op `{op}` ({kind:?}): output {output:?} is declared as {declared} but inference gives {inferred}")]
    OutputMismatch {
        op: String,
        kind: OpKind,
        output: String,
        declared: String,
        inferred: String,
    },
    /// An op whose number of outputs differs from what inference gives.
    #[error("op `{op}` ({kind:?}): {declared} outputs declared, inference gives {inferred}")]
    OutputCount {
        op: String,
        kind: OpKind,
        declared: usize,
        inferred: usize,
    },
    /// A function output that names no variable, or a state.
    #[error("function output {name:?}: {detail}")]
    BadOutput { name: String, detail: String },
    /// A function without outputs.
    #[error("function has no outputs")]
    NoOutputs,
    /// Enumerated input shapes that are empty or of differing rank.
    #[error("input {name:?}: {detail}")]
    BadInput { name: String, detail: String },
    /// An error inside one function of a program.
    #[error("function {function:?}: {source}")]
    InFunction {
        function: String,
        #[source]
        source: Box<MilError>,
    },
    /// A program whose default function is not one of its functions, or with repeated function names.
    #[error("program: {detail}")]
    BadProgram { detail: String },

    // ---- weight.bin, protobuf, package files (blob.rs, lower.rs, package.rs) ----
    /// An I/O failure on a named file or directory.
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A weight.bin shorter than its 64-byte header.
    #[error("{}: {len} bytes, shorter than the 64-byte weight.bin header", path.display())]
    BlobFileTooShort { path: std::path::PathBuf, len: u64 },
    /// A weight.bin whose header has another storage version than 2.
    #[error("{}: weight.bin storage version {found}, expected 2", path.display())]
    BlobVersion {
        path: std::path::PathBuf,
        found: u32,
    },
    /// A blob metadata record or blob data that reaches past the end of weight.bin.
    #[error("{}: {what} at offset {offset} needs bytes up to {end}, but the file has {file_len}", path.display())]
    BlobBounds {
        path: std::path::PathBuf,
        what: &'static str,
        offset: u64,
        end: u64,
        file_len: u64,
    },
    /// A blob metadata record without the 0xDEADBEEF sentinel.
    #[error("{}: blob metadata at offset {offset} has sentinel {found:#010x}, expected 0xdeadbeef", path.display())]
    BlobSentinel {
        path: std::path::PathBuf,
        offset: u64,
        found: u32,
    },
    /// A blob whose BlobDataType code differs from the dtype of the tensor that references it.
    #[error("{}: blob at offset {offset} has data type code {found}, but the referencing tensor is {dtype} (code {expected:?})", path.display())]
    BlobDType {
        path: std::path::PathBuf,
        offset: u64,
        found: u32,
        expected: Option<u32>,
        dtype: &'static str,
    },
    /// A blob whose size or padding does not hold the referencing tensor's element count.
    #[error("{}: blob at offset {offset} holds {size_in_bytes} bytes with {padding_bits} padding bits, but {dtype} x {elements} needs {expected} bytes", path.display())]
    BlobSize {
        path: std::path::PathBuf,
        offset: u64,
        size_in_bytes: u64,
        padding_bits: u64,
        dtype: &'static str,
        elements: u64,
        expected: u64,
    },
    /// A blob whose data does not start right after its metadata record, or is not 64-byte aligned.
    #[error("{}: blob metadata at offset {offset} points to data at {data_offset}, expected {expected}", path.display())]
    BlobDataOffset {
        path: std::path::PathBuf,
        offset: u64,
        data_offset: u64,
        expected: u64,
    },
    /// A dtype that weight.bin cannot hold (bool, string, int64).
    #[error("{dtype} constants cannot be stored in weight.bin")]
    BlobUnsupported { dtype: &'static str },
    /// Offset or size arithmetic that overflows u64.
    #[error("size arithmetic overflowed while {what}")]
    Overflow { what: &'static str },
    /// A model.mlmodel that is not a valid protobuf Model.
    #[error("{}: not a Core ML Model protobuf: {source}", path.display())]
    ProtoDecode {
        path: std::path::PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    /// A model.mlmodel that protobuf decodes but anec cannot take into its IR.
    #[error("{}: {context}: {detail}", path.display())]
    ProtoContent {
        path: std::path::PathBuf,
        context: String,
        detail: String,
    },
    /// An op type string that anec's closed op set does not have.
    #[error("{}: function {function:?}, op {op:?}: unknown op type {op_type:?}", path.display())]
    UnknownOp {
        path: std::path::PathBuf,
        function: String,
        op: String,
        op_type: String,
    },
    /// A program that cannot be written (a value Core ML cannot encode, a missing description piece).
    #[error("cannot encode {context}: {detail}")]
    Encode { context: String, detail: String },
    /// The output path exists and `--force` was not given.
    #[error("{} already exists (use --force to replace it)", path.display())]
    Exists { path: std::path::PathBuf },
    /// A Manifest.json that does not describe a Core ML package.
    #[error("{}: {detail}", path.display())]
    Manifest {
        path: std::path::PathBuf,
        detail: String,
    },
    /// An error found while reading a package (wraps the error with the package path).
    #[error("{}: {source}", path.display())]
    InPackage {
        path: std::path::PathBuf,
        #[source]
        source: Box<MilError>,
    },
}
