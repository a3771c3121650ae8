//! The shared test harness: fixture paths and the `anec` binary.

#![allow(dead_code)]

use std::path::PathBuf;

/// `tests/fixtures/<name>` inside the repository.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The four tiny checkpoints with transformers reference logits.
pub const MODELS: [&str; 4] = ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-mistral"];

/// A command running the `anec` binary built for these tests.
pub fn anec() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("anec").expect("the anec binary is built with the tests")
}
