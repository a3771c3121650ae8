//! One module per area; `util` is the shared harness.

pub mod quant;
pub mod util;
