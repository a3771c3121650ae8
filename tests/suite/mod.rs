//! One module per area; `util` is the shared harness.

pub mod reference;
pub mod source;
pub mod util;
pub mod convert;
pub mod mil;
