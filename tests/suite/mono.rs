//! `anec convert --monolithic`: the one-package layout (ANE-CONTRACT.md "Monolithic"), its
//! functions, inputs and outputs, weights stored once, meta.yaml keys, the iOS size refusal,
//! and `verify` / `generate` / `inspect` driving it like ANEMLL's runners.

use std::collections::BTreeSet;
use std::path::Path;

use anec::convert::{self, Chunks, ConvertError, ConvertPlan, Target};
use anec::exec::Precision;
use anec::mil::{self, ConstData, DType, Function, ValueType};
use anec::verify::Converted;

use super::convert::{lut, plan};
use super::util::{anec, function_names, validate_with_coremltools, Expected};

const C: u64 = 64;
const B: u64 = 16;

fn mono(model: &str, out: &Path) -> ConvertPlan {
    let mut p = plan(model, out);
    p.monolithic = true;
    p.lut_ffn = None;
    p.lut_lmhead = None;
    p
}

fn function<'a>(m: &'a mil::Model, name: &str) -> &'a Function {
    &m.program
        .functions
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no function {name}"))
        .1
}

fn input_shape(f: &Function, name: &str) -> Vec<u64> {
    let (_, ty) = f
        .inputs
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no input {name}"));
    match ty {
        ValueType::Tensor(t) | ValueType::State(t) => t.static_shape().expect("static"),
    }
}

/// Offsets of every stored blob a function references.
fn blobs(f: &Function) -> BTreeSet<u64> {
    f.operations
        .iter()
        .flat_map(|op| op.constants())
        .filter_map(|c| match &c.data {
            ConstData::Stored(b) => Some(b.offset),
            _ => None,
        })
        .collect()
}

fn weight_bin(pkg: &Path) -> u64 {
    std::fs::metadata(pkg.join("Data/com.apple.CoreML/weights/weight.bin"))
        .unwrap()
        .len()
}

#[test]
fn one_package_with_infer_and_prefill_as_anemll_lays_it_out() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut p = mono("tiny-llama", &out);
    p.lut_ffn = lut(4, 8);
    p.lut_lmhead = lut(6, 8);
    p.prefix = "llama".into();
    p.argmax = true;
    convert::run(&p).unwrap();
    let pkgs: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".mlpackage"))
        .collect();
    assert_eq!(pkgs, ["llama_monolithic_full_lut4.mlpackage"]);
    let pkg = out.join(&pkgs[0]);
    let m = mil::read_package(&pkg).unwrap();
    let names = function_names(&m.program);
    assert_eq!(names, ["infer", "prefill"]);
    assert_eq!(m.program.default_function, "infer");
    let (infer, prefill) = (function(&m, "infer"), function(&m, "prefill"));
    for (f, s) in [(infer, 1), (prefill, B)] {
        let ins: Vec<&str> = f.inputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            ins,
            [
                "input_ids",
                "position_ids",
                "causal_mask",
                "current_pos",
                "model_model_kv_cache_0"
            ]
        );
        assert_eq!(input_shape(f, "input_ids"), [1, s]);
        assert_eq!(input_shape(f, "position_ids"), [s]);
        assert_eq!(input_shape(f, "causal_mask"), [1, 1, s, C]);
        assert_eq!(input_shape(f, "current_pos"), [1]);
        assert_eq!(input_shape(f, "model_model_kv_cache_0")[2], C);
        let (_, ids) = &f.inputs[0];
        assert!(matches!(ids, ValueType::Tensor(t) if t.dtype == DType::I32));
    }
    // The argmax is in infer only; prefill returns the logits parts.
    assert_eq!(infer.outputs, ["argmax_idx", "argmax_val"]);
    assert!(
        prefill.outputs.iter().all(|o| o.starts_with("logits")),
        "{:?}",
        prefill.outputs
    );
    // Every weight stored once, referenced by both functions.
    assert_eq!(blobs(infer), blobs(prefill));
    assert!(!blobs(infer).is_empty());
}

/// The one package holds exactly the bytes of the three parts of a one-chunk conversion: each
/// weight once, shared by both functions.
#[test]
fn weights_are_stored_once_as_in_the_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("mono"), tmp.path().join("parts"));
    let mut p = mono("tiny-qwen3", &a);
    p.lut_ffn = lut(6, 8);
    p.lut_lmhead = lut(6, 8);
    p.calibration = None;
    convert::run(&p).unwrap();
    p.monolithic = false;
    p.chunks = Chunks::Count(1);
    p.output = b.clone();
    convert::run(&p).unwrap();
    let parts: u64 = ["embeddings", "combined_lut6_chunk_01of01", "lm_head_lut6"]
        .iter()
        .map(|n| weight_bin(&b.join(format!("{n}.mlpackage"))))
        .sum();
    // Each weight.bin starts with a 64-byte file header.
    assert_eq!(
        weight_bin(&a.join("monolithic_full_lut6.mlpackage")),
        parts - 2 * 64
    );
}

/// The monolithic package computes what the chunked parts compute, position by position,
/// through `infer` and through the runner's `prefill` batches, and both match transformers.
#[test]
fn monolithic_logits_equal_the_chunked_parts() {
    for model in ["tiny-llama", "tiny-qwen2-swa"] {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("mono"), tmp.path().join("parts"));
        // C = 128 holds the fixtures' prompts; B = 4 gives full prefill batches and a remainder.
        let mut p = mono(model, &a);
        p.context_length = 128;
        p.batch_size = 4;
        convert::run(&p).unwrap();
        p.monolithic = false;
        p.output = b.clone();
        convert::run(&p).unwrap();
        let mut ma = Converted::open(&a, Precision::F16).unwrap();
        let mut mb = Converted::open(&b, Precision::F16).unwrap();
        let fx = Expected::open(model);
        for seq in 0..fx.count() {
            let ids = fx.ids(&format!("ids_{seq}"));
            let ra = ma.prompt(&ids).unwrap();
            let rb = mb.prompt(&ids).unwrap();
            assert_eq!(ra.prefilled, rb.prefilled, "{model} seq {seq}");
            assert!(ra.prefilled >= 4, "{model}: prefill exercised");
            assert_eq!(ra.argmax, rb.argmax, "{model} seq {seq}");
            let (la, lb) = (ra.logits.unwrap(), rb.logits.unwrap());
            assert_eq!(la.data, lb.data, "{model} seq {seq}: logits");
            let want = fx.logits(&format!("logits_{seq}"));
            for (pos, w) in want.iter().enumerate() {
                let err = la
                    .row(pos)
                    .iter()
                    .zip(w)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(err < 0.05, "{model} seq {seq} pos {pos}: |Δ| {err}");
            }
            // Generation continues from the prefilled state identically.
            let next = *ra.argmax.last().unwrap();
            assert_eq!(ma.step(next).unwrap().argmax, mb.step(next).unwrap().argmax);
        }
    }
}

#[test]
fn meta_yaml_has_anemlls_monolithic_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut p = mono("tiny-llama", &out);
    p.lut_ffn = lut(6, 8);
    p.lut_lmhead = lut(6, 8);
    p.calibration = None;
    convert::run(&p).unwrap();
    let yaml = std::fs::read_to_string(out.join("meta.yaml")).unwrap();
    let lines: Vec<&str> = yaml.lines().collect();
    let want = [
        "model_info:",
        "  name: anec-tiny-llama-ctx64-monolithic",
        "  architecture: llama",
        "  model_type: monolithic",
        "  parameters:",
        "    context_length: 64",
        "    batch_size: 16",
        "    lut_bits: 6",
        "    lut_per_channel: 8",
        "    lut_embeddings: none",
        "    lut_lmhead: 6",
        "    lut_lmhead_per_channel: 8",
        "    model_prefix: \"\"",
        "    monolithic_model: monolithic_full_lut6.mlpackage",
        "    split_lm_head: 1",
        "    functions:",
        "    argmax_in_model: false",
        "    state_name: model_model_kv_cache_0",
    ];
    let mut at = 0;
    for w in want {
        let found = lines[at..].iter().position(|l| *l == w);
        let Some(i) = found else {
            panic!("meta.yaml lacks {w:?} (in order) :\n{yaml}");
        };
        at += i + 1;
    }
    assert!(
        yaml.contains("- infer\n") && yaml.contains("- prefill\n"),
        "{yaml}"
    );
    for absent in [
        "num_chunks:",
        "    embeddings:",
        "    lm_head:",
        "    ffn:",
        "chunk_files",
    ] {
        assert!(!yaml.contains(absent), "{absent} in:\n{yaml}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
    assert_eq!(json["model_info"]["model_type"], "monolithic");
    assert_eq!(
        json["model_info"]["parameters"]["functions"],
        serde_json::json!(["infer", "prefill"])
    );
}

fn leftovers(parent: &Path) -> Vec<String> {
    std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn ios_refuses_an_oversize_package_with_its_size_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Over the plan's estimate: refused before any weight is read.
    let mut p = mono("tiny-llama", &out);
    p.ios_file_limit = 100_000;
    let e = convert::run(&p).unwrap_err();
    let ConvertError::TooLargeForIos {
        file,
        what,
        bytes,
        limit,
    } = &e
    else {
        panic!("expected TooLargeForIos, got {e}");
    };
    assert_eq!(
        (file.as_str(), *what, *limit),
        ("monolithic_full.mlpackage", "would be", 100_000)
    );
    assert!(*bytes > 100_000);
    let msg = e.to_string();
    assert!(
        msg.contains(&bytes.to_string()) && msg.contains("100000 bytes"),
        "{msg}"
    );
    assert!(msg.contains("--target macos"), "{msg}");
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
    // Within the estimate but over as written (the model description adds to the weights):
    // refused after writing, and the temp folder is gone.
    let planned = {
        let mut dry = mono("tiny-llama", &out);
        dry.dry_run = true;
        convert::run(&dry).unwrap().plan.parts[0].estimated_bytes
    };
    p.ios_file_limit = planned;
    let e = convert::run(&p).unwrap_err();
    assert!(
        matches!(&e, ConvertError::TooLargeForIos { what: "is", bytes, .. } if *bytes > planned),
        "{e}"
    );
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
    // --target macos writes it.
    p.target = Target::Macos;
    convert::run(&p).unwrap();
    assert!(out.join("monolithic_full.mlpackage").is_dir());
}

#[test]
fn cli_verify_generate_and_inspect_work_on_it_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = super::util::fixture("tiny-llama");
    let convert = |extra: &[&str]| {
        anec()
            .arg("convert")
            .arg("--model")
            .arg(&model)
            .arg("--output")
            .arg(&out)
            .args([
                "--monolithic",
                "--context-length",
                "64",
                "--batch-size",
                "16",
            ])
            .args(["--no-compile", "-q", "--force"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = convert(&["--lut", "none", "--lut-lmhead", "none"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = anec()
        .arg("verify")
        .arg(&out)
        .arg("--fp16")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = anec()
        .arg("generate")
        .arg(&out)
        .args(["--prompt", "Once upon a time", "--max-tokens", "5"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("Once upon a time"));
    let o = anec()
        .arg("inspect")
        .arg(out.join("monolithic_full.mlpackage"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("infer") && text.contains("prefill") && text.contains("input_ids"),
        "{text}"
    );
    // LUT: verify passes with the thresholds CI holds the fixtures' LUT6 to.
    let o = convert(&["--lut", "6"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = anec()
        .arg("verify")
        .arg(&out)
        .args(["--min-top1", "0.85", "--max-kl", "0.02"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // --monolithic has no chunks to count.
    let o = convert(&["--chunks", "3"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--chunks"));
    // Apple's validator, when available: two functions, one state.
    validate_with_coremltools(
        &out.join("monolithic_full_lut6.mlpackage"),
        &[
            "--expect-functions",
            "infer,prefill",
            "--expect-states",
            "1",
        ],
        &tmp.path().join("copy"),
    );
}
