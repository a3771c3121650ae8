//! A Core ML model as anec writes and reads it: the MIL program plus what only the model
//! description holds (flexible input shapes, metadata). lower.rs maps it to and from protobuf.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ir::Program;

/// The Core ML specification version anec writes: iOS 18 / macOS 15 (states, multi-function,
/// iOS 18 ops). coremltools: `_SPECIFICATION_VERSION_IOS_18 = 9`.
pub const SPEC_VERSION: i32 = 9;
/// The opset of spec 9, used for `Function.opset` and as the only `block_specializations` key.
pub const OPSET: &str = "CoreML8";

/// The model's metadata (`ModelDescription.metadata`); all optional, empty strings are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Metadata {
    pub author: String,
    /// `versionString`.
    pub version: String,
    pub short_description: String,
    pub license: String,
    pub user_defined: BTreeMap<String, String>,
}

impl Metadata {
    pub fn is_empty(&self) -> bool {
        self.author.is_empty()
            && self.version.is_empty()
            && self.short_description.is_empty()
            && self.license.is_empty()
            && self.user_defined.is_empty()
    }
}

/// The shapes a flexible input accepts, as the description lists them. The MIL input type has
/// `Dim::Unknown` where they differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputShapes {
    /// ArrayFeatureType.enumeratedShapes; the first is the default (also written as `shape`).
    Enumerated(Vec<Vec<u64>>),
    /// ArrayFeatureType.shapeRange: the default shape and (lower, upper) per dimension
    /// (upper −1 = unbounded). anec reads it (coremltools' flexible sample) but writes only
    /// enumerated shapes.
    Range {
        default: Vec<u64>,
        bounds: Vec<(u64, i64)>,
    },
}

impl InputShapes {
    /// The shape written as the description's default `shape`.
    pub fn default_shape(&self) -> &[u64] {
        match self {
            InputShapes::Enumerated(s) => s.first().map(Vec::as_slice).unwrap_or(&[]),
            InputShapes::Range { default, .. } => default,
        }
    }
}

/// A whole model: program, flexible input shapes, metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub program: Program,
    /// function name → input name → its flexible shapes (only inputs with unknown dims).
    pub input_shapes: BTreeMap<String, BTreeMap<String, InputShapes>>,
    pub metadata: Metadata,
}

impl Model {
    /// A model of fixed-shape functions without metadata.
    pub fn new(program: Program) -> Model {
        Model {
            program,
            input_shapes: BTreeMap::new(),
            metadata: Metadata::default(),
        }
    }

    /// Declares enumerated shapes for `function`'s input `input` (first = default).
    pub fn with_enumerated_shapes(
        mut self,
        function: &str,
        input: &str,
        shapes: Vec<Vec<u64>>,
    ) -> Model {
        self.input_shapes
            .entry(function.to_string())
            .or_default()
            .insert(input.to_string(), InputShapes::Enumerated(shapes));
        self
    }

    /// Declares every enumerated shape a builder collected for `function`
    /// ([`FunctionBuilder::finish_with_shapes`](super::FunctionBuilder::finish_with_shapes)).
    pub fn with_function_shapes(
        mut self,
        function: &str,
        shapes: BTreeMap<String, Vec<Vec<u64>>>,
    ) -> Model {
        for (input, s) in shapes {
            self = self.with_enumerated_shapes(function, &input, s);
        }
        self
    }

    pub fn with_metadata(mut self, metadata: Metadata) -> Model {
        self.metadata = metadata;
        self
    }
}
