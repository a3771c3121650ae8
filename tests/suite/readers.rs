//! Crafted files and programs that once crashed a reader (an abort on a size read from a file,
//! an overflowing product, a capacity overflow), and the refusals that replace the crash: an
//! error naming the file and the field, exit 2 (3 for I/O), never a panic. The fuzzer
//! (examples/fuzz.rs) finds new ones; each becomes a test here.

use std::collections::BTreeMap;
use std::path::Path;

use anec::exec::{Interpreter, Precision};
use anec::mil::{Arg, ConstValue, DType, FunctionBuilder, OpKind, Program, TensorType};
use serde_json::Value;

use super::util::{anec, fixture};

const EXIT_INPUT: i32 = 2;
const EXIT_IO: i32 = 3;

fn program(b: FunctionBuilder) -> Program {
    Program {
        functions: vec![("main".to_string(), b.finish().expect("a valid function"))],
        default_function: "main".to_string(),
    }
}

// ---------------------------------------------------------------- type inference (model.mlmodel)

/// A runtime `shape` declared with 2^40 values once made inference allocate 2^40 unknown dims
/// (16 TiB): the rank it describes is now bounded first.
#[test]
fn fill_and_reshape_with_a_runtime_shape_of_2_pow_40_values_are_refused() {
    let mut b = FunctionBuilder::new();
    let shape = b
        .input("shape", TensorType::new(DType::I32, &[1 << 40]))
        .expect("input");
    let x = b
        .input("x", TensorType::new(DType::F16, &[4]))
        .expect("input");
    let e = b
        .op(OpKind::Fill, "f", &[("shape", vec![shape.arg()])])
        .expect_err("rank 2^40");
    assert!(e.to_string().contains("1099511627776"), "{e}");
    let e = b
        .op(
            OpKind::Reshape,
            "r",
            &[("x", vec![x.arg()]), ("shape", vec![shape.arg()])],
        )
        .expect_err("rank 2^40");
    assert!(e.to_string().contains("rank would exceed 32"), "{e}");
}

/// `dim × reps` wrapped (release) or panicked (debug).
#[test]
fn tile_whose_output_dim_overflows_is_refused() {
    let mut b = FunctionBuilder::new();
    let x = b
        .input("x", TensorType::new(DType::F16, &[1 << 40, 2]))
        .expect("input");
    let reps = b
        .constant("reps", ConstValue::from_i32(&[2], &[1 << 30, 1]).unwrap())
        .expect("const");
    let e = b
        .op(
            OpKind::Tile,
            "t",
            &[("x", vec![x.arg()]), ("reps", vec![reps.arg()])],
        )
        .expect_err("2^70");
    assert!(e.to_string().contains("overflows"), "{e}");
}

/// Conv output sizes near 2^63 are computed exactly (the i64 arithmetic overflowed).
#[test]
fn conv_output_size_near_2_pow_63_is_exact() {
    let mut b = FunctionBuilder::new();
    let big = i64::MAX as u64;
    let x = b
        .input("x", TensorType::new(DType::F16, &[1, 1, big]))
        .expect("input");
    let w = b
        .input("w", TensorType::new(DType::F16, &[1, 1, 1]))
        .expect("input");
    let pad = b
        .constant("pad", ConstValue::from_i32(&[2], &[1, 1]).unwrap())
        .expect("const");
    let pad_type = b
        .constant("pad_type", ConstValue::string("custom"))
        .expect("const");
    let y = b
        .op(
            OpKind::Conv,
            "c",
            &[
                ("x", vec![x.arg()]),
                ("weight", vec![w.arg()]),
                ("pad", vec![pad.arg()]),
                ("pad_type", vec![pad_type.arg()]),
            ],
        )
        .expect("a valid conv");
    assert_eq!(y[0].static_shape(), Some(vec![1, 1, big + 2]));
}

/// The product of a reshape target overflowed u64.
#[test]
fn reshape_target_beyond_2_pow_64_elements_is_refused() {
    let mut b = FunctionBuilder::new();
    let x = b
        .input("x", TensorType::new(DType::F16, &[1 << 32, 1 << 32]))
        .expect("input");
    let e = b
        .reshape("r", &x, &[1 << 30, 1 << 30, 1 << 30])
        .expect_err("2^90 elements");
    assert!(e.to_string().contains("2^64"), "{e}");
}

/// A split into 2^31 − 1 outputs sized a list of that many dims.
#[test]
fn split_into_more_than_4096_parts_is_refused() {
    let mut b = FunctionBuilder::new();
    let x = b
        .input(
            "x",
            TensorType {
                dtype: DType::F16,
                shape: vec![anec::mil::Dim::Unknown],
            },
        )
        .expect("input");
    let e = b.split("s", &x, i32::MAX, 0).expect_err("2^31 parts");
    assert!(e.to_string().contains("between 1 and 4096"), "{e}");
}

// ---------------------------------------------------------------- exec

/// `fill` of 3 × (2^31 − 1) elements: an unchecked product and an infallible allocation.
#[test]
fn exec_fill_too_large_to_allocate_is_an_error() {
    let mut b = FunctionBuilder::new();
    let x = b
        .input("x", TensorType::new(DType::F32, &[1]))
        .expect("input");
    let shape = b
        .constant("shape", ConstValue::from_i32(&[3], &[i32::MAX; 3]).unwrap())
        .expect("const");
    let f = b
        .op(OpKind::Fill, "f", &[("shape", vec![shape.arg()])])
        .expect("fill infers");
    let y = b.add("y", &f[0], &x).expect("add");
    b.output(&y).expect("output");
    let interp = Interpreter::new(&program(b), Precision::F32);
    let inputs = BTreeMap::from([(
        "x".to_string(),
        anec::exec::Tensor::f32(vec![1], vec![0.0]).unwrap(),
    )]);
    let e = interp
        .run("main", &inputs, &mut BTreeMap::new())
        .expect_err("2^93 elements");
    assert!(e.to_string().contains("too large"), "{e}");
}

/// `tile` of a runtime input by 2^30 × 2^30: unchecked products.
#[test]
fn exec_tile_too_large_to_allocate_is_an_error() {
    let mut b = FunctionBuilder::new();
    let x = b
        .input("x", TensorType::new(DType::F32, &[2, 2]))
        .expect("input");
    let reps = b
        .input("reps", TensorType::new(DType::I32, &[2]))
        .expect("input");
    let t = b
        .op(
            OpKind::Tile,
            "t",
            &[
                ("x", vec![x.arg()]),
                ("reps", vec![Arg::Var(reps.name.clone())]),
            ],
        )
        .expect("tile infers");
    b.output(&t[0]).expect("output");
    let interp = Interpreter::new(&program(b), Precision::F32);
    let inputs = BTreeMap::from([
        (
            "x".to_string(),
            anec::exec::Tensor::f32(vec![2, 2], vec![0.0; 4]).unwrap(),
        ),
        (
            "reps".to_string(),
            anec::exec::Tensor::i32(vec![2], vec![1 << 30, 1 << 30]).unwrap(),
        ),
    ]);
    let e = interp
        .run("main", &inputs, &mut BTreeMap::new())
        .expect_err("2^62 elements");
    assert!(e.to_string().contains("too large"), "{e}");
}

// ---------------------------------------------------------------- meta.json, flags, exit codes

/// A tiny conversion (tiny-llama, context 64) to corrupt.
fn converted(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("out");
    let o = anec()
        .args(["convert", "--model"])
        .arg(fixture("tiny-llama"))
        .arg("--output")
        .arg(&out)
        .args(["--context-length", "64", "--batch-size", "16", "--quiet"])
        .args(["--lut", "none", "--lut-lmhead", "none"])
        .output()
        .expect("run anec");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn edit_meta(out: &Path, field: &str, value: Value) {
    let path = out.join("meta.json");
    let mut meta: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    meta["model_info"]["parameters"][field] = value;
    std::fs::write(&path, meta.to_string()).unwrap();
}

fn verify_stderr(out: &Path, code: i32) -> String {
    let o = anec().arg("verify").arg(out).output().expect("run anec");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert!(err.starts_with("anec: error: "), "{err}");
    err
}

#[test]
fn meta_json_fields_that_would_crash_or_escape_exit_2_naming_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let out = converted(tmp.path());
    let good = std::fs::read_to_string(out.join("meta.json")).unwrap();
    let cases = [
        // capacity overflow of the C×C mask (exit 101)
        (
            "context_length",
            Value::from(3_000_000_000u64),
            "3000000000",
        ),
        ("batch_size", Value::from(0), "batch_size 0"),
        (
            "chunk_files",
            serde_json::json!(["../../etc/x.mlpackage", "b.mlpackage"]),
            "../../etc",
        ),
        (
            "embeddings",
            Value::from("/abs/embeddings.mlpackage"),
            "/abs/embeddings",
        ),
        (
            "lm_head_chunk_sizes",
            serde_json::json!([u64::MAX, 2]),
            "lm_head_chunk_sizes",
        ),
    ];
    for (field, value, needle) in cases {
        std::fs::write(out.join("meta.json"), &good).unwrap();
        edit_meta(&out, field, value);
        let err = verify_stderr(&out, EXIT_INPUT);
        for n in ["meta.json", field, needle] {
            assert!(err.contains(n), "{field}: {n:?} missing from {err}");
        }
    }
}

/// The runners read meta.yaml and `verify` reads meta.json: a meta.yaml edited by hand to say
/// something else is refused, naming the file, the key and both values.
#[test]
fn meta_yaml_that_disagrees_with_meta_json_exits_2_naming_the_key_and_both_values() {
    let tmp = tempfile::tempdir().unwrap();
    let out = converted(tmp.path());
    let path = out.join("meta.yaml");
    let good = std::fs::read_to_string(&path).unwrap();
    let cases = [
        (
            "context_length: 64",
            "context_length: 128",
            "disagree on model_info.parameters.context_length: meta.yaml has 128, meta.json has 64",
        ),
        (
            "lut_ffn: none",
            "lut_ffn: 4",
            "disagree on model_info.parameters.lut_ffn: meta.yaml has 4, meta.json has \"none\"",
        ),
    ];
    for (from, to, needle) in cases {
        assert!(good.contains(from), "{from:?} not in\n{good}");
        std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
        let err = verify_stderr(&out, EXIT_INPUT);
        assert!(err.contains("meta.yaml") && err.contains(needle), "{err}");
    }
}

#[test]
fn context_length_above_the_ane_limit_exits_2_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let o = anec()
        .args(["convert", "--model"])
        .arg(fixture("tiny-llama"))
        .arg("--output")
        .arg(tmp.path().join("out"))
        .args(["--context-length", "3000000000", "--quiet"])
        .output()
        .expect("run anec");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(EXIT_INPUT), "{err}");
    assert!(
        err.contains("--context-length 3000000000") && err.contains("16384"),
        "{err}"
    );
    assert!(!tmp.path().join("out").exists());
}

/// An unreadable meta.json (here a folder) is an I/O error: exit 3, the path and the OS error
/// each printed once.
#[test]
fn unreadable_meta_json_exits_3_with_each_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("meta.json")).unwrap();
    let err = verify_stderr(tmp.path(), EXIT_IO);
    assert_eq!(err.matches("meta.json").count(), 1, "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}

// ---------------------------------------------------------------- tokenizer.json

/// tiny-llama's tokenizer.json, edited, in a fresh folder; what `Tok::open` makes of it.
fn open_tokenizer(edit: impl FnOnce(String) -> String) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture("tiny-llama").join("tokenizer.json")).unwrap();
    std::fs::write(tmp.path().join("tokenizer.json"), edit(text)).unwrap();
    anec::verify::Tok::open(tmp.path())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Found by the fuzzer: a control character in a string of `decoder` made tokenizers 0.23
/// panic (`expect("Helper")`).
#[test]
fn tokenizer_json_with_a_syntax_error_in_decoder_is_refused_not_a_panic() {
    let e = open_tokenizer(|t| {
        let decoder = t.find("\"decoder\"").expect("a decoder");
        let at = decoder + t[decoder..].find("\"type\"").expect("its type") + 1;
        format!("{}\u{1}{}", &t[..at], &t[at..])
    })
    .expect_err("control character");
    assert!(
        e.contains("tokenizer.json") && e.contains("not valid JSON"),
        "{e}"
    );
}

/// Valid JSON that tokenizers 0.23 still panics on (`expect("Precompiled")`).
#[test]
fn tokenizer_json_with_a_malformed_precompiled_normalizer_is_refused_not_a_panic() {
    let e = open_tokenizer(|t| {
        let mut json: Value = serde_json::from_str(&t).unwrap();
        json["normalizer"] = serde_json::json!({"type": "Precompiled", "precompiled_charsmap": 5});
        json.to_string()
    })
    .expect_err("malformed normalizer");
    assert!(
        e.contains("tokenizer.json") && e.contains("Precompiled"),
        "{e}"
    );
}

/// Found by the fuzzer: a TemplateProcessing post-processor naming a special token it does not
/// define parses, then panics in tokenizers 0.23 when encoding ("no entry found for key").
#[test]
fn tokenizer_template_naming_an_undefined_special_token_fails_encoding_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture("tiny-mistral").join("tokenizer.json")).unwrap();
    let mut json: Value = serde_json::from_str(&text).unwrap();
    json["post_processor"]["special_tokens"] = serde_json::json!({});
    std::fs::write(tmp.path().join("tokenizer.json"), json.to_string()).unwrap();
    let tok = anec::verify::Tok::open(tmp.path()).expect("it parses");
    let e = tok
        .encode("Hello")
        .expect_err("<s> is not defined")
        .to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("encoding"),
        "{e}"
    );
}

// ---------------------------------------------------------------- config.json

/// Found by the fuzzer: `num_hidden_layers` 2^32 sized the per-layer window list before any
/// check (a 64 GiB allocation, abort).
#[test]
fn config_with_2_pow_32_layers_is_refused_before_per_layer_lists_are_sized() {
    let text = std::fs::read_to_string(fixture("tiny-llama").join("config.json")).unwrap();
    let mut json: Value = serde_json::from_str(&text).unwrap();
    json["num_hidden_layers"] = Value::from(1u64 << 32);
    let e = anec::arch::DecoderConfig::from_json_str(&json.to_string())
        .expect_err("2^32 layers")
        .to_string();
    assert!(
        e.contains("num_hidden_layers") && e.contains("4294967296"),
        "{e}"
    );
}
