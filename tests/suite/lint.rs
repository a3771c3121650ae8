//! `anec lint`: each rule fires on a package written to break it (and stays quiet on the same
//! package written the proven way); anec's own packages are clean; convert reports findings and
//! `--strict` refuses them; `inspect --lint` and `anec lint` on the command line.

use std::path::{Path, PathBuf};

use anec::convert::{self, Chunks, Compile, ConvertPlan};
use anec::lint::{lint_package, Finding, RULES};
use anec::mil::{
    ConstValue, DType, FunctionBuilder, Model, PackageWriter, Program, SliceParams, TensorType, Var,
};
use half::f16;

use super::util::{anec, fixture, spec};

/// Writes a one-function package `name` built by `build` (which returns the outputs).
fn package(
    dir: &Path,
    name: &str,
    build: impl FnOnce(&mut FunctionBuilder, &mut PackageWriter) -> Vec<Var>,
) -> PathBuf {
    let path = dir.join(format!("{name}.mlpackage"));
    let mut w = PackageWriter::create(&path, false).unwrap();
    let mut b = FunctionBuilder::new();
    for out in build(&mut b, &mut w) {
        b.output(&out).unwrap();
    }
    let model = Model::new(Program {
        functions: vec![("main".into(), b.finish().unwrap())],
        default_function: "main".into(),
    });
    w.finish(&model).unwrap();
    path
}

fn findings(path: &Path) -> Vec<Finding> {
    lint_package(path).unwrap().findings
}

fn rules_of(path: &Path) -> Vec<&'static str> {
    let mut r: Vec<&str> = findings(path).iter().map(|f| f.rule).collect();
    r.dedup();
    r
}

fn f16_input(b: &mut FunctionBuilder, name: &str, shape: &[u64]) -> Var {
    b.input(name, TensorType::new(DType::F16, shape)).unwrap()
}

fn zeros(shape: &[u64]) -> ConstValue {
    let n = shape.iter().product::<u64>() as usize;
    ConstValue::from_f16(shape, &vec![f16::ZERO; n]).unwrap()
}

#[test]
fn fp16_compute_fires_on_fp32_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = package(dir.path(), "bad", |b, _| {
        let x = b.input("x", TensorType::new(DType::F32, &[1, 4])).unwrap();
        vec![b.relu("y", &x).unwrap()]
    });
    assert_eq!(rules_of(&bad), ["fp16-compute"]);
    assert_eq!(findings(&bad).len(), 2, "the input and the relu");
    let good = package(dir.path(), "good", |b, _| {
        let x = f16_input(b, "x", &[1, 4]);
        vec![b.relu("y", &x).unwrap()]
    });
    assert!(findings(&good).is_empty());
}

#[test]
fn rank_le_4_fires_on_rank_5() {
    let dir = tempfile::tempdir().unwrap();
    let bad = package(dir.path(), "bad", |b, _| {
        let x = f16_input(b, "x", &[1, 2, 2, 2, 2]);
        vec![b.relu("y", &x).unwrap()]
    });
    assert_eq!(rules_of(&bad), ["rank-le-4"]);
}

#[test]
fn static_shapes_fires_on_coremltools_range_shape_sample() {
    let found = findings(&fixture("coreml-samples").join("flexible.mlpackage"));
    assert!(found.iter().any(|f| f.rule == "static-shapes"), "{found:?}");
}

#[test]
fn static_shapes_fires_on_a_dynamic_slice() {
    let dir = tempfile::tempdir().unwrap();
    let bad = package(dir.path(), "bad", |b, _| {
        let x = f16_input(b, "x", &[8]);
        let begin = b.input("begin", TensorType::new(DType::I32, &[1])).unwrap();
        let end = b.input("end", TensorType::new(DType::I32, &[1])).unwrap();
        let s = b
            .slice_by_index("s", &x, &begin, &end, &SliceParams::default())
            .unwrap();
        vec![b.relu("y", &s).unwrap()]
    });
    assert_eq!(rules_of(&bad), ["static-shapes"]);
}

#[test]
fn conv_limits_fire_on_wide_convs_and_big_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let wide = package(dir.path(), "wide", |b, w| {
        let x = f16_input(b, "x", &[1, 8, 1, 1]);
        let wt = b
            .constant("w", w.store(zeros(&[16385, 8, 1, 1])).unwrap())
            .unwrap();
        vec![b.conv("y", &x, &wt, None).unwrap()]
    });
    let f = findings(&wide);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, "conv-limits");
    assert!(f[0].message.contains("16385 output channels"), "{}", f[0]);
    let kernel = package(dir.path(), "kernel", |b, w| {
        let x = f16_input(b, "x", &[1, 8, 16, 1]);
        let wt = b
            .constant("w", w.store(zeros(&[4, 8, 14, 1])).unwrap())
            .unwrap();
        vec![b.conv("y", &x, &wt, None).unwrap()]
    });
    assert_eq!(rules_of(&kernel), ["conv-limits"]);
    let fine = package(dir.path(), "fine", |b, w| {
        let x = f16_input(b, "x", &[1, 8, 1, 1]);
        let wt = b
            .constant("w", w.store(zeros(&[16384, 8, 1, 1])).unwrap())
            .unwrap();
        vec![b.conv("y", &x, &wt, None).unwrap()]
    });
    assert!(findings(&fine).is_empty());
}

#[test]
fn integer_ops_fire_on_integer_tensors_not_on_index_scalars() {
    let dir = tempfile::tempdir().unwrap();
    let bad = package(dir.path(), "bad", |b, _| {
        let x = b.input("x", TensorType::new(DType::I32, &[8])).unwrap();
        let y = b.input("y", TensorType::new(DType::I32, &[8])).unwrap();
        let d = b.sub("d", &x, &y).unwrap();
        let l = b.less("l", &d, &x).unwrap();
        vec![b.cast("out", &l, DType::I32).unwrap()]
    });
    assert_eq!(findings(&bad).len(), 2);
    assert_eq!(rules_of(&bad), ["integer-ops"]);
    let scalar = package(dir.path(), "scalar", |b, _| {
        let x = b.input("x", TensorType::new(DType::I32, &[1])).unwrap();
        vec![b.add("y", &x, &x).unwrap()]
    });
    assert!(findings(&scalar).is_empty());
}

/// A stateful function writing `update` rows at `pos` the proven way; `state_shape`
/// `[2, 1, C, D]`.
fn stateful(dir: &Path, name: &str, state_shape: [u64; 4], stale: bool) -> PathBuf {
    package(dir, name, |b, _| {
        let [_, _, _, d] = state_shape;
        let x = f16_input(b, "x", &[1, 1, 1, d]);
        let pos = b.input("pos", TensorType::new(DType::I32, &[1])).unwrap();
        let st = b
            .state("cache", TensorType::new(DType::F16, &state_shape))
            .unwrap();
        let zero = b.constant("zero", ConstValue::vec_i32(&[0])).unwrap();
        let one = b.constant("one", ConstValue::vec_i32(&[1])).unwrap();
        let end_pos = b.add("end_pos", &pos, &one).unwrap();
        let begin = b.concat("begin", &[&zero, &zero, &pos, &zero], 0).unwrap();
        let end = b.concat("end", &[&one, &zero, &end_pos, &zero], 0).unwrap();
        let r0 = b.read_state("r0", &st).unwrap();
        let masks = SliceParams {
            end_mask: Some(vec![false, true, false, true]),
            ..Default::default()
        };
        let u = b.slice_update("u", &r0, &x, &begin, &end, &masks).unwrap();
        b.write_state("w", &st, &u).unwrap();
        let r1 = b.read_state("r1", &st).unwrap();
        let seen = if stale { r0 } else { r1 };
        vec![b.relu("y", &seen).unwrap()]
    })
}

#[test]
fn state_shape_fires_unless_the_last_two_dims_are_multiples_of_32() {
    let dir = tempfile::tempdir().unwrap();
    let good = stateful(dir.path(), "good", [2, 1, 64, 32], false);
    assert!(findings(&good).is_empty(), "{:?}", findings(&good));
    let bad = stateful(dir.path(), "bad", [2, 1, 40, 32], false);
    assert_eq!(rules_of(&bad), ["state-shape"]);
}

#[test]
fn state_update_fires_on_a_stale_read_and_on_a_write_without_slice_update() {
    let dir = tempfile::tempdir().unwrap();
    let stale = stateful(dir.path(), "stale", [2, 1, 32, 32], true);
    let f = findings(&stale);
    assert_eq!(rules_of(&stale), ["state-update"]);
    assert!(f[0].message.contains("r0"), "{}", f[0]);
    let whole = package(dir.path(), "whole", |b, _| {
        let x = f16_input(b, "x", &[1, 1, 32, 32]);
        let st = b
            .state("cache", TensorType::new(DType::F16, &[1, 1, 32, 32]))
            .unwrap();
        let r = b.read_state("r", &st).unwrap();
        let sum = b.add("sum", &r, &x).unwrap();
        b.write_state("w", &st, &sum).unwrap();
        let r1 = b.read_state("r1", &st).unwrap();
        vec![b.relu("y", &r1).unwrap()]
    });
    let f = findings(&whole);
    assert_eq!(rules_of(&whole), ["state-update"]);
    assert!(f[0].message.contains("not a slice_update"), "{}", f[0]);
}

#[test]
fn gather_index_dtype_fires_on_int32_indices_into_a_small_table() {
    let dir = tempfile::tempdir().unwrap();
    let build = |cast: bool| {
        move |b: &mut FunctionBuilder, w: &mut PackageWriter| {
            let ids = b.input("ids", TensorType::new(DType::I32, &[2])).unwrap();
            let table = b
                .constant("table", w.store(zeros(&[100, 4])).unwrap())
                .unwrap();
            let ids = if cast {
                b.cast("ids16", &ids, DType::U16).unwrap()
            } else {
                ids
            };
            vec![b.gather("g", &table, &ids, 0, 0).unwrap()]
        }
    };
    let bad = package(dir.path(), "bad", build(false));
    assert_eq!(rules_of(&bad), ["gather-index-dtype"]);
    let good = package(dir.path(), "good", build(true));
    assert!(findings(&good).is_empty());
}

#[test]
fn reduction_axes_fire_off_the_last_and_channel_axes() {
    let dir = tempfile::tempdir().unwrap();
    let bad = package(dir.path(), "bad", |b, _| {
        let x = f16_input(b, "x", &[4, 8, 2]);
        let n = b.layer_norm("n", &x, &[1], None, None, 1e-5).unwrap();
        vec![b.softmax("s", &n, 0).unwrap()]
    });
    assert_eq!(findings(&bad).len(), 2);
    assert_eq!(rules_of(&bad), ["reduction-axes"]);
    let good = package(dir.path(), "good", |b, _| {
        let x = f16_input(b, "x", &[1, 8, 1, 2]);
        let n = b.layer_norm("n", &x, &[1], None, None, 1e-5).unwrap();
        vec![b.softmax("s", &n, -1).unwrap()]
    });
    assert!(findings(&good).is_empty());
}

#[test]
fn file_size_fires_past_the_ios_limit() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = package(dir.path(), "big", |b, w| {
        let x = f16_input(b, "x", &[1, 8, 1, 1]);
        let wt = b
            .constant("w", w.store(zeros(&[8, 8, 1, 1])).unwrap())
            .unwrap();
        vec![b.conv("y", &x, &wt, None).unwrap()]
    });
    assert!(findings(&pkg).is_empty());
    // A sparse 1.5 GiB weight file: past iOS's limit, inside macOS's.
    let bin = pkg.join("Data/com.apple.CoreML/weights/weight.bin");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bin)
        .unwrap()
        .set_len(3 << 29)
        .unwrap();
    let f = findings(&pkg);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, "file-size");
    assert!(f[0].message.contains("iOS"), "{}", f[0]);
}

#[test]
fn every_rule_has_a_test_above() {
    let src = include_str!("lint.rs");
    for r in RULES {
        let quoted = format!("\"{}\"", r.id);
        assert!(src.contains(&quoted), "no test asserts rule {}", r.id);
    }
}

fn convert_to(
    model: &str,
    out: &Path,
    strict: bool,
) -> Result<convert::ConvertReport, convert::ConvertError> {
    let mut p = ConvertPlan::new(spec(model), out);
    p.context_length = 64;
    p.batch_size = 16;
    p.chunks = Chunks::Count(2);
    p.quiet = true;
    p.compile = Compile::Never;
    p.strict = strict;
    convert::run(&p)
}

#[test]
fn our_packages_are_clean_and_convert_reports_the_lint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qwen3");
    let report = convert_to("tiny-qwen3", &out, true).expect("a clean conversion passes --strict");
    assert_eq!(report.lint.len(), 4);
    assert!(
        report.lint.iter().all(|l| l.findings.is_empty()),
        "{:?}",
        report.lint
    );
    assert!(report.to_string().contains("lint: 4 packages clean"));
}

#[test]
fn strict_convert_refuses_findings_and_writes_nothing() {
    // tiny-llama's head_dim 16 gives a state [2L, KV, C, 16]: its width is not a multiple of 32.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("llama");
    let report = convert_to("tiny-llama", &out, false).unwrap();
    let found: Vec<&Finding> = report.lint.iter().flat_map(|l| &l.findings).collect();
    assert!(
        !found.is_empty() && found.iter().all(|f| f.rule == "state-shape"),
        "{found:?}"
    );
    assert!(report.to_string().contains("[state-shape]"));
    let strict_out = dir.path().join("strict");
    let err = convert_to("tiny-llama", &strict_out, true).unwrap_err();
    assert!(err.to_string().contains("--strict"), "{err}");
    assert!(!strict_out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "only the non-strict output: {leftovers:?}"
    );
}

#[test]
fn cli_lint_and_inspect_lint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qwen3");
    convert_to("tiny-qwen3", &out, false).unwrap();
    let ok = anec()
        .arg("lint")
        .arg(&out)
        .arg("--strict")
        .assert()
        .success();
    let text = String::from_utf8(ok.get_output().stdout.clone()).unwrap();
    assert_eq!(text.matches(": clean").count(), 4, "{text}");

    let bad = package(dir.path(), "bad", |b, _| {
        let x = b.input("x", TensorType::new(DType::F32, &[1, 4])).unwrap();
        vec![b.relu("y", &x).unwrap()]
    });
    let plain = anec().arg("lint").arg(&bad).assert().success();
    assert!(String::from_utf8_lossy(&plain.get_output().stdout).contains("[fp16-compute]"));
    let strict = anec()
        .arg("lint")
        .arg(&bad)
        .arg("--strict")
        .assert()
        .code(2);
    assert!(String::from_utf8_lossy(&strict.get_output().stderr).contains("anec: error: --strict"));

    let json = anec()
        .args(["inspect", "--lint", "--json"])
        .arg(&bad)
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&json.get_output().stdout).unwrap();
    assert_eq!(v["lint"]["findings"][0]["rule"], "fp16-compute");
    assert!(v["inspect"].is_object());

    let rules = anec().args(["lint", "--rules"]).assert().success();
    let text = String::from_utf8_lossy(&rules.get_output().stdout).into_owned();
    assert!(RULES
        .iter()
        .all(|r| text.contains(r.id) && text.contains(r.source)));

    anec()
        .arg("lint")
        .arg(dir.path().join("nothing"))
        .assert()
        .code(2);
}
