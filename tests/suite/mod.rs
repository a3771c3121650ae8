//! One module per area; `util` is the shared harness.

pub mod calib_data;
pub mod cli;
pub mod convert;
pub mod convert_e2e;
pub mod exec;
pub mod gemma;
pub mod hashes;
pub mod hub;
pub mod hub_server;
pub mod lint;
pub mod mil;
pub mod mono;
pub mod mutation;
pub mod quant;
pub mod readers;
pub mod reference;
pub mod run;
pub mod source;
pub mod util;
pub mod verify;
