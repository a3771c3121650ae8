//! anec: HuggingFace decoder LLMs → Core ML packages for the Apple Neural Engine, and a CPU
//! check that what was written computes what the original model computes.

pub mod ane;
pub mod arch;
pub mod calib;
pub mod convert;
pub mod exec;
pub mod lint;
pub mod meta;
pub mod mil;
pub mod outdir;
pub mod quant;
pub mod reference;
pub mod source;
pub mod verify;
pub mod weights;
