//! The converted tiny models run through `exec` with the runner's host protocol, compared with
//! transformers' logits (a smoke check; `anec verify` is the full comparison).
// ---------------------------------------------------------------- end to end through exec

use std::collections::BTreeMap;
use std::path::Path;

use anec::exec::{Interpreter, Precision, Tensor};
use anec::mil;
use half::f16;

use super::convert::{lut, plan};
use super::util::{fixture, MODELS};
use anec::convert;
use anec::meta::Meta;

struct Runner {
    emb: Interpreter,
    chunks: Vec<Interpreter>,
    head: Interpreter,
    states: BTreeMap<String, Tensor>,
    c: usize,
    b: usize,
    h: usize,
    parts: Vec<usize>,
}

fn mask_rows(c: usize, start: usize, n: usize) -> Tensor {
    let mut v = Vec::with_capacity(n * c);
    for i in start..start + n {
        for j in 0..c {
            v.push(if j <= i { f16::ZERO } else { f16::NEG_INFINITY });
        }
    }
    Tensor::f16(vec![1, 1, n, c], &v).unwrap()
}

impl Runner {
    fn open(out: &Path, precision: Precision) -> Runner {
        let meta = Meta::read(out).unwrap();
        let p = &meta.model_info.parameters;
        let load = |f: &str| Interpreter::new(&mil::read_package(out.join(f)).unwrap(), precision);
        let chunks: Vec<Interpreter> = p.chunk_files.iter().map(|f| load(f)).collect();
        let states = chunks[0].zero_states("infer").unwrap();
        Runner {
            emb: load(&p.embeddings),
            head: load(&p.lm_head),
            chunks,
            states,
            c: p.context_length,
            b: p.batch_size,
            h: p.hidden_size,
            parts: p.lm_head_chunk_sizes.clone(),
        }
    }

    /// The host protocol over `ids` from position 0: full batches through `prefill`
    /// (when `use_prefill`), the rest one at a time; logits after every `infer` step.
    fn run(&mut self, ids: &[i32], use_prefill: bool) -> Vec<(usize, Vec<f32>)> {
        let mut logits = Vec::new();
        let mut pos = 0;
        if use_prefill {
            while pos + self.b <= ids.len() {
                let mut ins = BTreeMap::new();
                ins.insert(
                    "input_ids".to_string(),
                    Tensor::i32(vec![1, self.b], ids[pos..pos + self.b].to_vec()).unwrap(),
                );
                let mut hidden = self.emb.run("main", &ins, &mut BTreeMap::new()).unwrap()
                    ["hidden_states"]
                    .clone();
                for ch in &self.chunks {
                    let mut ins = BTreeMap::new();
                    ins.insert("hidden_states".to_string(), hidden.clone());
                    ins.insert(
                        "position_ids".to_string(),
                        Tensor::i32(vec![self.b], (pos as i32..(pos + self.b) as i32).collect())
                            .unwrap(),
                    );
                    ins.insert("causal_mask".to_string(), mask_rows(self.c, pos, self.b));
                    ins.insert(
                        "current_pos".to_string(),
                        Tensor::i32(vec![1], vec![pos as i32]).unwrap(),
                    );
                    hidden = ch.run("prefill", &ins, &mut self.states).unwrap()
                        ["output_hidden_states"]
                        .clone();
                }
                pos += self.b;
            }
        }
        while pos < ids.len() {
            let mut ins = BTreeMap::new();
            ins.insert(
                "input_ids".to_string(),
                Tensor::i32(vec![1, 1], vec![ids[pos]]).unwrap(),
            );
            let mut hidden =
                self.emb.run("main", &ins, &mut BTreeMap::new()).unwrap()["hidden_states"].clone();
            assert_eq!(hidden.shape(), [1, 1, self.h]);
            for ch in &self.chunks {
                let mut ins = BTreeMap::new();
                ins.insert("hidden_states".to_string(), hidden.clone());
                ins.insert(
                    "position_ids".to_string(),
                    Tensor::i32(vec![1], vec![pos as i32]).unwrap(),
                );
                ins.insert("causal_mask".to_string(), mask_rows(self.c, pos, 1));
                ins.insert(
                    "current_pos".to_string(),
                    Tensor::i32(vec![1], vec![pos as i32]).unwrap(),
                );
                hidden = ch.run("infer", &ins, &mut self.states).unwrap()["output_hidden_states"]
                    .clone();
            }
            let mut ins = BTreeMap::new();
            ins.insert("hidden_states".to_string(), hidden);
            let outs = self.head.run("main", &ins, &mut BTreeMap::new()).unwrap();
            let mut row = Vec::new();
            if let Some(idx) = outs.get("argmax_idx") {
                // In-model argmax: the runner picks the part with the largest value and adds
                // its offset; return that as a logits row with a single finite entry.
                let idx = idx.as_i32().unwrap().to_vec();
                let val = outs["argmax_val"].to_f32_vec();
                let best = (0..val.len()).fold(0, |b, i| if val[i] > val[b] { i } else { b });
                let offset: usize = self.parts[..best].iter().sum();
                row = vec![f32::NEG_INFINITY; self.parts.iter().sum()];
                row[offset + idx[best] as usize] = val[best];
            } else {
                for k in 1..=outs.len() {
                    row.extend(outs[&format!("logits{k}")].to_f32_vec());
                }
            }
            logits.push((pos, row));
            pos += 1;
        }
        logits
    }
}

fn reference(model: &str, seq: usize) -> (Vec<i32>, Vec<Vec<f32>>) {
    let bytes = std::fs::read(fixture(model).join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids_t = st.tensor(&format!("ids_{seq}")).unwrap();
    let ids: Vec<i32> = ids_t
        .data()
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let lt = st.tensor(&format!("logits_{seq}")).unwrap();
    let v = lt.shape()[1];
    let flat: Vec<f32> = lt
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (ids, flat.chunks(v).map(<[f32]>::to_vec).collect())
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |a, (i, &x)| if x > a.1 { (i, x) } else { a },
        )
        .0
}

fn margin(v: &[f32]) -> f32 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    s[0] - s[1]
}

/// Compares the converted model run through `exec` with transformers' logits; returns
/// (max |Δlogit|, top-1 agreement over positions with margin > 0.05, positions compared).
fn compare(model: &str, use_lut: bool) -> (f32, f64, usize) {
    compare_with(model, use_lut, false)
}

fn compare_with(model: &str, use_lut: bool, argmax_in_model: bool) -> (f32, f64, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut p = plan(model, &out);
    p.context_length = 128;
    p.batch_size = 32;
    p.argmax = argmax_in_model;
    if use_lut {
        p.lut_ffn = lut(6, 8);
    }
    convert::run(&p).unwrap();
    let mut max_err = 0f32;
    let (mut agree, mut total) = (0usize, 0usize);
    let mut compared = 0;
    for seq in 0..3 {
        let (ids, want) = reference(model, seq);
        for use_prefill in [false, true] {
            let mut r = Runner::open(&out, Precision::F16);
            for (pos, got) in r.run(&ids, use_prefill) {
                let w = &want[pos];
                let err = got
                    .iter()
                    .zip(w)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                max_err = max_err.max(err);
                compared += 1;
                if margin(w) > 0.05 {
                    total += 1;
                    agree += usize::from(argmax(&got) == argmax(w));
                }
            }
        }
    }
    (max_err, agree as f64 / total.max(1) as f64, compared)
}

#[test]
fn converted_models_match_transformers_through_the_host_protocol() {
    for model in MODELS {
        let (max_err, top1, n) = compare(model, false);
        eprintln!(
            "{model} fp16: max |Δlogit| {max_err:.4}, top-1 agreement {:.1}% over {n} positions",
            top1 * 100.0
        );
        assert!(top1 >= 0.99, "{model}: top-1 agreement {top1}");
        assert!(max_err < 0.25, "{model}: max |Δlogit| {max_err}");
    }
}

#[test]
fn lut6_models_stay_close_to_transformers() {
    for model in MODELS {
        let (max_err, top1, n) = compare(model, true);
        eprintln!(
            "{model} LUT6 g8 FFN: max |Δlogit| {max_err:.4}, top-1 agreement {:.1}% over {n} positions",
            top1 * 100.0
        );
        assert!(top1 >= 0.85, "{model}: top-1 agreement {top1}");
    }
}

#[test]
fn in_model_argmax_picks_the_reference_top1() {
    for model in ["tiny-llama", "tiny-qwen2"] {
        let (_, top1, n) = compare_with(model, false, true);
        eprintln!(
            "{model} --argmax: top-1 agreement {:.1}% over {n} positions",
            top1 * 100.0
        );
        assert!(top1 >= 0.99, "{model}: top-1 agreement {top1}");
    }
}
