//! The bytes anec writes for the four fixtures, pinned by sha256, so that a change in any output
//! byte (graph, weights, RoPE tables, metadata) is deliberate.
//!
//! Every file of each output folder is hashed, with the fixture's absolute path (meta.json and
//! meta.yaml record where the weights were read) replaced by `<fixtures>` first. The table was
//! produced on x86_64 Linux; every f64→f16 rounding goes through `quant::f16_from_f64_rne`, so
//! other platforms give the same bytes. After a deliberate change, regenerate it with
//!
//! ```text
//! ANEC_PRINT_HASHES=1 cargo test --test tests suite::hashes -- --nocapture
//! ```
//!
//! and paste the printed table over [`EXPECTED`].

use std::collections::BTreeMap;

use anec::convert::{self, Chunks, Compile, ConvertPlan};
use sha2::{Digest, Sha256};

use super::util::{files, fixture, spec, MODELS};

/// (fixture/variant, file, sha256).
const EXPECTED: &[(&str, &str, &str)] = &[];

/// One fixture converted at context 64, batch 16, two chunks, fp16 (`--lut none
/// --lut-lmhead none`): every file's sha256 by relative path.
fn converted_hashes(model: &str) -> BTreeMap<String, String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let mut plan = ConvertPlan::new(spec(model), &out);
    plan.context_length = 64;
    plan.batch_size = 16;
    plan.chunks = Chunks::Count(2);
    plan.quiet = true;
    plan.compile = Compile::Never;
    convert::run(&plan).expect("conversion");
    let fixtures = fixture("");
    let root = fixtures.to_string_lossy();
    let root = root.trim_end_matches('/');
    files(&out)
        .into_iter()
        .map(|(path, bytes)| {
            let bytes = replace(&bytes, root.as_bytes(), b"<fixtures>");
            (path, hex(&Sha256::digest(&bytes)))
        })
        .collect()
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn converted_fixture_bytes_are_pinned() {
    let mut got = BTreeMap::new();
    for model in MODELS {
        for (file, hash) in converted_hashes(model) {
            got.insert((format!("{model}/fp16"), file), hash);
        }
    }
    if std::env::var_os("ANEC_PRINT_HASHES").is_some() {
        println!("const EXPECTED: &[(&str, &str, &str)] = &[");
        for ((variant, file), hash) in &got {
            println!("    ({variant:?}, {file:?}, {hash:?}),");
        }
        println!("];");
        return;
    }
    let want: BTreeMap<(String, String), String> = EXPECTED
        .iter()
        .map(|&(v, f, h)| ((v.to_string(), f.to_string()), h.to_string()))
        .collect();
    let mut diff = Vec::new();
    for key in want.keys().chain(got.keys()) {
        if want.get(key) != got.get(key) && !diff.contains(&key) {
            diff.push(key);
        }
    }
    assert!(
        diff.is_empty(),
        "converted bytes changed (expected vs written, by file):\n{}\nregenerate with \
         ANEC_PRINT_HASHES=1 cargo test --test tests suite::hashes -- --nocapture",
        diff.iter()
            .map(|k| format!(
                "  {}/{}: {} vs {}",
                k.0,
                k.1,
                want.get(*k).map_or("(none)", String::as_str),
                got.get(*k).map_or("(none)", String::as_str)
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
