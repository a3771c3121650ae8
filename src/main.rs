//! The `anec` binary: parse the command line, run, print errors as `anec: error: …`.

fn main() {}
