//! `anec run`: one function of one package on the CPU, JSON tensors in and out, exactly what the
//! library's interpreter computes; bad input files are named.

use std::collections::BTreeMap;

use anec::convert::{self, Chunks, Compile, ConvertPlan};
use anec::exec::{Interpreter, Precision, Tensor};

use super::util::{anec, spec};

#[test]
fn run_prints_the_interpreters_outputs_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qwen3");
    let mut p = ConvertPlan::new(spec("tiny-qwen3"), &out);
    p.context_length = 64;
    p.batch_size = 16;
    p.chunks = Chunks::Count(1);
    p.quiet = true;
    p.compile = Compile::Never;
    convert::run(&p).unwrap();
    let chunk = out.join("combined_chunk_01of01.mlpackage");

    let hidden: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 16.0).collect();
    let mut mask = vec![f32::from(half::f16::MIN); 64];
    mask[0] = 0.0;
    let inputs = serde_json::json!({
        "hidden_states": {"dtype": "fp16", "shape": [1, 1, 64], "data": hidden},
        "position_ids": {"dtype": "int32", "shape": [1], "data": [0]},
        "causal_mask": {"dtype": "fp16", "shape": [1, 1, 1, 64], "data": mask},
        "current_pos": {"dtype": "int32", "shape": [1], "data": [0]},
    });
    let file = dir.path().join("in.json");
    std::fs::write(&file, inputs.to_string()).unwrap();
    let got = anec()
        .arg("run")
        .arg(&chunk)
        .args(["--function", "infer", "--fp16", "--inputs"])
        .arg(&file)
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&got.get_output().stdout).unwrap();
    let printed: Vec<f32> = json["output_hidden_states"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(
        json["output_hidden_states"]["shape"],
        serde_json::json!([1, 1, 64])
    );

    let model = anec::mil::read_package(&chunk).unwrap();
    let interp = Interpreter::new(&model, Precision::F16);
    let mut states = interp.zero_states("infer").unwrap();
    let mut ins = BTreeMap::new();
    ins.insert(
        "hidden_states".into(),
        Tensor::f16_from_f32(vec![1, 1, 64], &hidden).unwrap(),
    );
    ins.insert(
        "position_ids".into(),
        Tensor::i32(vec![1], vec![0]).unwrap(),
    );
    ins.insert(
        "causal_mask".into(),
        Tensor::f16_from_f32(vec![1, 1, 1, 64], &mask).unwrap(),
    );
    ins.insert("current_pos".into(), Tensor::i32(vec![1], vec![0]).unwrap());
    let want = interp.run("infer", &ins, &mut states).unwrap();
    assert_eq!(printed, want["output_hidden_states"].to_f32_vec());

    std::fs::write(&file, "[1, 2]").unwrap();
    let bad = anec()
        .arg("run")
        .arg(&chunk)
        .arg("--inputs")
        .arg(&file)
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&bad.get_output().stderr).into_owned();
    assert!(
        err.contains("in.json") && err.contains("not a JSON map"),
        "{err}"
    );
    std::fs::write(
        &file,
        r#"{"x": {"dtype": "bf16", "shape": [1], "data": [1]}}"#,
    )
    .unwrap();
    let bad = anec()
        .arg("run")
        .arg(&chunk)
        .arg("--inputs")
        .arg(&file)
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&bad.get_output().stderr).into_owned();
    assert!(err.contains("`x`") && err.contains("bf16"), "{err}");
}
