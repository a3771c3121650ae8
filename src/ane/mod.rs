//! The LLM parts as MIL programs built for the Apple Neural Engine: embeddings, chunked
//! multi-function transformer (infer + prefill sharing weights and the KV state), LM head.

pub mod graph;
pub mod layout;
pub mod mono;
pub mod parts;

pub use mono::build_monolithic;
pub use parts::{build_chunk, build_embeddings, build_lm_head, Ctx, PartOptions, MAIN};

/// Errors building a part; the underlying error names the tensor or op.
#[derive(Debug, thiserror::Error)]
pub enum AneError {
    #[error(transparent)]
    Mil(#[from] crate::mil::MilError),
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightError),
    #[error(transparent)]
    Quant(#[from] crate::quant::QuantError),
    #[error("tensor {tensor}: {source}")]
    QuantTensor {
        tensor: String,
        source: crate::quant::QuantError,
    },
    #[error(transparent)]
    Calib(Box<crate::calib::CalibError>),
    #[error("op {op}: {message}")]
    Graph { op: String, message: String },
}

impl From<crate::calib::CalibError> for AneError {
    fn from(e: crate::calib::CalibError) -> Self {
        AneError::Calib(Box::new(e))
    }
}
