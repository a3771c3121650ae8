//! One module per area; `util` is the shared harness.

pub mod cli;
pub mod convert;
pub mod convert_e2e;
pub mod exec;
pub mod hub;
pub mod hub_server;
pub mod mil;
pub mod quant;
pub mod reference;
pub mod source;
pub mod util;
pub mod verify;
