//! One module per area; `util` is the shared harness.

pub mod exec;
pub mod mil;
pub mod util;
