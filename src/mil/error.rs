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
}
