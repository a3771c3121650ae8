//! The mutation check of `verify`: deliberate converter bugs, each made by editing the MIL the
//! converter wrote (read with mil's reader, ops and constants found by their role, written back),
//! must each make `verify --fp16` fail. Roles, not op names or indices: a weight is found by its
//! values (the checkpoint tensor in fp16), the eps as layer_norm's `epsilon`, the RoPE tables as
//! what is gathered by `position_ids`, the window as the integer a comparison op tests against.

use std::path::Path;

use anec::convert::{self, Compile, ConvertPlan};
use anec::exec::Precision;
use anec::mil::{Arg, ConstValue, DType, Function, OpKind, Operation, ValueType};
use anec::verify::{self, VerifyOptions, VerifyReport};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType as CDType, Device};
use half::f16;

use super::util::{const_mut, rewrite, spec};

/// An edit of one chunk function, given its name (`infer` or `prefill`).
type Edit<'a> = dyn Fn(&str, &mut Function) + 'a;

/// One deliberate bug: a fixture and how each chunk function is edited.
struct Mutation {
    bug: &'static str,
    model: &'static str,
    edit: fn(&Checkpoint, &str, &mut Function),
}

const MUTATIONS: &[Mutation] = &[
    // The fixtures' activations have RMS ≈ 1 (embeddings of std 1), so an eps 10× or 100× off
    // moves rsqrt(mean(x²) + eps) by less than fp16 rounds: no output comparison can see it
    // (measured: mean KL 3.8e-6 and 6.0e-6 against 3.8e-6 unedited). 1000× off is a real error.
    Mutation {
        bug: "wrong eps (1e-2 for 1e-5)",
        model: "tiny-llama",
        edit: |_, _, f| scale_eps(f, 1000.0),
    },
    Mutation {
        bug: "wrong eps (1e-3 for 1e-6, q/k norms too)",
        model: "tiny-qwen3",
        edit: |_, _, f| scale_eps(f, 1000.0),
    },
    Mutation {
        bug: "RoPE one position ahead in the decode path (infer)",
        model: "tiny-llama",
        edit: |_, function, f| {
            if function == "infer" {
                shift_rope_tables(f, 1);
            }
        },
    },
    Mutation {
        bug: "wrong KV head mapping (query group g reads KV head g+1)",
        model: "tiny-llama",
        edit: |ck, _, f| rotate_kv_heads(ck, f),
    },
    Mutation {
        bug: "missing bias (k_proj's, every layer)",
        model: "tiny-qwen2",
        edit: |ck, _, f| drop_k_bias(ck, f),
    },
    Mutation {
        bug: "sliding window one too wide (17 for 16)",
        model: "tiny-mistral",
        edit: |_, _, f| widen_window(f, 16),
    },
    Mutation {
        bug: "sliding window one too wide (17 for 16), layers 1-2 only",
        model: "tiny-qwen2-swa",
        edit: |_, _, f| widen_window(f, 16),
    },
    Mutation {
        bug: "gate and up projections swapped",
        model: "tiny-llama",
        edit: |ck, _, f| swap_gate_up(ck, f),
    },
];

/// Converts `model` into `out` with convert's defaults (fp16 weights, two chunks, C 512, B 64),
/// rewrites every chunk through `edit` (`None`: left as written), and runs `verify --fp16`
/// against the original model.
fn convert_edit_verify(model: &str, out: &Path, edit: Option<&Edit<'_>>) -> VerifyReport {
    let mut p = ConvertPlan::new(spec(model), out);
    p.quiet = true;
    p.compile = Compile::Never;
    convert::run(&p).expect("fixture converts");
    if let Some(edit) = edit {
        let meta = verify::read_meta(out).expect("meta");
        for chunk in &meta.model_info.parameters.chunk_files {
            rewrite(&out.join(chunk), edit);
        }
    }
    let mut o = VerifyOptions::new(out);
    o.model = Some(spec(model));
    o.precision = Precision::F16;
    verify::run(&o).expect("verify runs")
}

#[test]
fn verify_fp16_fails_on_every_deliberate_converter_bug() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut rows = Vec::new();
    let mut baselines = Vec::new();
    for model in MUTATIONS.iter().map(|m| m.model) {
        if !baselines.iter().any(|(m, _)| *m == model) {
            let r = convert_edit_verify(model, &tmp.path().join(model), None);
            assert!(r.passed(), "{model} unedited: {:?}", r.failures);
            baselines.push((model, r));
        }
    }
    for (i, m) in MUTATIONS.iter().enumerate() {
        let ck = Checkpoint::open(m.model);
        let edit = |function: &str, f: &mut Function| (m.edit)(&ck, function, f);
        let out = tmp.path().join(format!("bug-{i}"));
        rows.push((m, convert_edit_verify(m.model, &out, Some(&edit))));
    }
    println!(
        "{:<60} {:<15} {:>7} {:>9} {:>9}  verify",
        "bug", "fixture", "top-1", "KL mean", "KL p99"
    );
    let line = |bug: &str, model: &str, r: &VerifyReport| {
        let o = &r.overall;
        println!(
            "{bug:<60} {model:<15} {:>6.2}% {:>9.2e} {:>9.2e}  {}",
            o.top1_agreement * 100.0,
            o.kl_mean.unwrap_or(f64::NAN),
            o.kl_p99.unwrap_or(f64::NAN),
            if r.passed() { "passes" } else { "FAILS" }
        )
    };
    for (model, r) in &baselines {
        line("(none)", model, r);
    }
    for (m, r) in &rows {
        line(m.bug, m.model, r);
    }
    let missed: Vec<&str> = rows
        .iter()
        .filter(|(_, r)| r.passed())
        .map(|(m, _)| m.bug)
        .collect();
    assert!(
        missed.is_empty(),
        "verify --fp16 passed these bugs: {missed:?}"
    );
}

// ------------------------------------------------------------------------------ the edits

/// The fixture's checkpoint tensors, to find the constants the converter made from them.
struct Checkpoint {
    tensors: MmapedSafetensors,
    kv_heads: usize,
}

impl Checkpoint {
    fn open(model: &str) -> Checkpoint {
        let files = anec::source::resolve(&spec(model)).expect("fixture resolves");
        let cfg = anec::reference::Config::from_file(&files.config).expect("config.json");
        // SAFETY: read-only map of a test fixture nobody writes.
        let tensors = unsafe { MmapedSafetensors::multi(&files.weights) }.expect("safetensors");
        Checkpoint {
            tensors,
            kv_heads: cfg.num_kv_heads,
        }
    }

    /// Tensor `name` rounded to fp16, as the converter stores it, widened to f32.
    fn fp16(&self, name: &str) -> Vec<f32> {
        let t = self.tensors.load(name, &Device::Cpu).expect(name);
        let t = t
            .to_dtype(CDType::F16)
            .and_then(|t| t.to_dtype(CDType::F32));
        t.and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .expect(name)
    }

    /// `model.layers.{i}.{suffix}` for every layer the checkpoint has.
    fn per_layer(&self, suffix: &str) -> Vec<String> {
        (0..)
            .map(|i| format!("model.layers.{i}.{suffix}"))
            .take_while(|n| self.tensors.get(n).is_ok())
            .collect()
    }
}

/// The output of the fp16 `const` op in `f` that holds exactly `values` (shape aside); `None`
/// when this function has no such constant (a chunk holds only some of the layers).
fn const_with(f: &Function, values: &[f32]) -> Option<String> {
    f.operations
        .iter()
        .filter(|o| o.kind == OpKind::Const)
        .find(|o| {
            o.val.as_ref().is_some_and(|v| {
                v.ty.dtype == DType::F16
                    && v.num_elements() == values.len() as u64
                    && v.to_f32_vec().is_ok_and(|got| got == values)
            })
        })
        .map(|o| o.outputs[0].0.clone())
}

fn var(arg: Option<&Vec<Arg>>) -> Option<&str> {
    match arg?.first()? {
        Arg::Var(n) => Some(n),
        Arg::Value(_) => None,
    }
}

/// The ops binding variable `name` to parameter `param`.
fn consumers<'a>(f: &'a mut Function, name: &'a str, param: &'a str) -> Vec<&'a mut Operation> {
    f.operations
        .iter_mut()
        .filter(|o| var(o.inputs.get(param)) == Some(name))
        .collect()
}

/// A new `const` op holding `v`, placed first in `f`; returns its output's name.
fn add_const(f: &mut Function, v: ConstValue) -> String {
    let name = format!("mutation_{}", f.operations.len());
    f.operations.insert(
        0,
        Operation {
            kind: OpKind::Const,
            name: name.clone(),
            inputs: Default::default(),
            outputs: vec![(name.clone(), ValueType::Tensor(v.ty.clone()))],
            val: Some(v),
        },
    );
    name
}

/// Every layer_norm's `epsilon` times `factor` (a new constant, the shared one untouched).
fn scale_eps(f: &mut Function, factor: f32) {
    let eps_vars = f
        .operations
        .iter()
        .filter(|o| o.kind == OpKind::LayerNorm)
        .filter_map(|o| var(o.inputs.get("epsilon")).map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>();
    assert!(!eps_vars.is_empty(), "no layer_norm with an epsilon");
    for eps in eps_vars {
        let v = const_mut(f, &eps).to_f32_vec().expect("numeric eps")[0];
        let wrong = add_const(f, ConstValue::scalar_f16(f16::from_f32(v * factor)));
        for op in consumers(f, &eps, "epsilon") {
            op.inputs
                .insert("epsilon".into(), vec![Arg::Var(wrong.clone())]);
        }
    }
}

/// The tables gathered by `position_ids` (RoPE cos and sin, `[C, D]`) read `by` rows further.
fn shift_rope_tables(f: &mut Function, by: usize) {
    // The gather indices are position_ids, or position_ids cast to uint16.
    let positions: Vec<String> = std::iter::once("position_ids".to_string())
        .chain(
            f.operations
                .iter()
                .filter(|o| {
                    o.kind == OpKind::Cast && var(o.inputs.get("x")) == Some("position_ids")
                })
                .flat_map(|o| o.outputs.iter().map(|(n, _)| n.clone())),
        )
        .collect();
    let tables: Vec<String> = f
        .operations
        .iter()
        .filter(|o| {
            o.kind == OpKind::Gather
                && var(o.inputs.get("indices")).is_some_and(|i| positions.iter().any(|p| p == i))
                && var(o.inputs.get("x")).is_some_and(|x| !x.contains("band"))
        })
        .filter_map(|o| var(o.inputs.get("x")).map(str::to_string))
        .collect();
    assert_eq!(tables.len(), 2, "cos and sin are gathered by position_ids");
    for t in tables {
        let c = const_mut(f, &t);
        let shape = c.shape();
        let (rows, d) = (shape[0] as usize, shape[1] as usize);
        let vals = c.to_f32_vec().expect("table");
        let shifted: Vec<f16> = (0..rows * d)
            .map(|i| f16::from_f32(vals[(i + by * d) % (rows * d)]))
            .collect();
        *c = ConstValue::from_f16(&shape, &shifted).expect("table");
    }
}

/// `c`'s rows (`[rows, …]`) in `blocks` equal blocks, rotated by one: block `b` gets block
/// `b + 1`.
fn rotate_row_blocks(c: &mut ConstValue, blocks: usize) {
    let shape = c.shape();
    let vals = c.to_f32_vec().expect("numeric");
    let n = vals.len() / blocks;
    let rotated: Vec<f16> = (0..vals.len())
        .map(|i| f16::from_f32(vals[(i + n) % vals.len()]))
        .collect();
    *c = ConstValue::from_f16(&shape, &rotated).expect("f16");
}

/// Every layer's k and v projections (weights, and biases if any) rotated by one KV head: the
/// query heads of group `g` attend with KV head `g + 1`.
fn rotate_kv_heads(ck: &Checkpoint, f: &mut Function) {
    let mut found = 0;
    for proj in ["self_attn.k_proj", "self_attn.v_proj"] {
        for name in ck.per_layer(&format!("{proj}.weight")) {
            // a chunk holds some of the layers: skip the others
            if let Some(c) = const_with(f, &ck.fp16(&name)) {
                rotate_row_blocks(const_mut(f, &c), ck.kv_heads);
                found += 1;
            }
        }
    }
    assert!(found >= 2, "k_proj and v_proj weights found: {found}");
}

/// Every layer's k_proj bias unbound from its conv.
fn drop_k_bias(ck: &Checkpoint, f: &mut Function) {
    let mut dropped = 0;
    for name in ck.per_layer("self_attn.k_proj.bias") {
        if let Some(c) = const_with(f, &ck.fp16(&name)) {
            for op in consumers(f, &c, "bias") {
                op.inputs.remove("bias");
                dropped += 1;
            }
            f.operations
                .retain(|o| o.outputs.first().is_none_or(|(n, _)| *n != c));
        }
    }
    assert!(dropped > 0, "no conv took a k_proj bias");
}

/// The sliding-window band table (`[C, C]` fp16: row p is 0 where key j is inside the window,
/// the lowest fp16 value where it is older) lets in one more key: `window + 1`.
fn widen_window(f: &mut Function, window: i32) {
    let w = window as usize;
    let mut widened = 0;
    for op in f
        .operations
        .iter_mut()
        .filter(|o| o.kind == OpKind::Const && o.outputs[0].0.contains("window_band"))
    {
        let v = op.val.as_mut().expect("const value");
        let shape = v.shape();
        let c = shape[1] as usize;
        let mut vals: Vec<f16> = v
            .to_f32_vec()
            .expect("band table")
            .iter()
            .map(|&x| f16::from_f32(x))
            .collect();
        for p in w..shape[0] as usize {
            vals[p * c + p - w] = f16::ZERO;
        }
        *v = ConstValue::from_f16(&shape, &vals).expect("band table");
        widened += 1;
    }
    assert!(widened > 0, "no window band table for the window {window}");
}

/// Every layer's gate and up projection weights trade places.
fn swap_gate_up(ck: &Checkpoint, f: &mut Function) {
    let mut swapped = 0;
    let gates = ck.per_layer("mlp.gate_proj.weight");
    let ups = ck.per_layer("mlp.up_proj.weight");
    for (gate, up) in gates.iter().zip(&ups) {
        let (Some(g), Some(u)) = (const_with(f, &ck.fp16(gate)), const_with(f, &ck.fp16(up)))
        else {
            continue;
        };
        let gv = const_mut(f, &g).clone();
        let uv = std::mem::replace(const_mut(f, &u), gv);
        *const_mut(f, &g) = uv;
        swapped += 1;
    }
    assert!(swapped > 0, "no gate/up pair found");
}
