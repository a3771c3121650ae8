//! One module per area; `util` is the shared harness.

pub mod mil;
pub mod quant;
pub mod source;
pub mod util;
