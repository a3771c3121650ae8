//! The monolithic package (ANEMLL 0.3.5's layout, ANE-CONTRACT.md "Monolithic"): embeddings,
//! every layer and the LM head in one program, with the chunk's functions (`infer`, `prefill`)
//! each taking `input_ids` and returning the LM head's outputs.
//!
//! It is composed from the three parts' own programs rather than built anew: the embeddings'
//! gather (its input fixed to `[1,1]` or `[1,B]`), the one chunk holding every layer, then the
//! LM head, are spliced into each function, renamed apart. Every weight is stored once in the
//! one weight.bin, so `infer` and `prefill` reference the same blob offsets.

use std::collections::{BTreeMap, HashMap};

use crate::mil::{Arg, DType, Function, Model, Operation, Program, TensorType, ValueType};

use super::graph::G;
use super::parts::{
    argmax_outputs, build_chunk, build_embeddings, build_lm_head, Ctx, PartOptions, MAIN,
};
use super::AneError;

type R<T> = Result<T, AneError>;

fn graph_err(op: &str, message: impl Into<String>) -> AneError {
    AneError::Graph {
        op: op.to_string(),
        message: message.into(),
    }
}

/// Builds the monolithic model of `layers` layers into `ctx.writer`: weights in the order
/// embeddings, layers, LM head (as the parts are written).
pub fn build_monolithic(ctx: &mut Ctx<'_>, layers: usize) -> R<Model> {
    let embeddings = build_embeddings(ctx)?;
    let chunk = build_chunk(ctx, 0..layers, true)?;
    // The head always yields logits; the in-model argmax is appended to `infer` only
    // (ANEMLL's prefill never takes the argmax).
    let logits_opts = PartOptions {
        argmax: false,
        ..ctx.opts.clone()
    };
    let head = {
        let mut head_ctx = Ctx {
            cfg: ctx.cfg,
            weights: ctx.weights,
            writer: &mut *ctx.writer,
            opts: &logits_opts,
            part: ctx.part.clone(),
            quant: &mut *ctx.quant,
            calib: ctx.calib.as_deref_mut(),
            progress: ctx.progress,
        };
        build_lm_head(&mut head_ctx)?
    };
    let main = |m: &Model, what: &str| -> R<Function> {
        m.program
            .functions
            .iter()
            .find(|(n, _)| n == MAIN)
            .map(|(_, f)| f.clone())
            .ok_or_else(|| graph_err(what, "has no main function"))
    };
    let embed_fn = main(&embeddings, "embeddings")?;
    let head_fn = main(&head, "lm_head")?;
    let h = ctx.cfg.hidden_size as u64;
    let mut functions = Vec::new();
    for (name, body) in &chunk.program.functions {
        let f = compose(
            &embed_fn,
            body,
            &head_fn,
            h,
            ctx.opts.argmax && name == "infer",
        )
        .map_err(|e| match e {
            AneError::Graph { op, message } => graph_err(&format!("{name}: {op}"), message),
            other => other,
        })?;
        functions.push((name.clone(), f));
    }
    Ok(Model::new(Program {
        functions,
        default_function: chunk.program.default_function.clone(),
    }))
}

/// The static sequence length S of a chunk function's `hidden_states` input `[1, S, H]`.
fn seq_len(body: &Function) -> R<u64> {
    let ty = body
        .inputs
        .iter()
        .find(|(n, _)| n == "hidden_states")
        .map(|(_, t)| t)
        .ok_or_else(|| graph_err("chunk", "has no input `hidden_states`"))?;
    match ty {
        ValueType::Tensor(t) => match t.static_shape().as_deref() {
            Some([1, s, _]) => Ok(*s),
            _ => Err(graph_err(
                "chunk",
                "hidden_states is not a static [1, S, H]",
            )),
        },
        ValueType::State(_) => Err(graph_err("chunk", "hidden_states is a state")),
    }
}

/// One function of the monolithic model: `input_ids [1, S]` → embeddings → `body` (a chunk
/// function holding every layer) → its last row → LM head (→ argmax when `argmax`).
fn compose(
    embed: &Function,
    body: &Function,
    head: &Function,
    h: u64,
    argmax: bool,
) -> R<Function> {
    let s = seq_len(body)?;
    let mut ops = Vec::new();

    // Embeddings, with input_ids fixed to [1, S].
    let mut front = embed.clone();
    for (n, ty) in &mut front.inputs {
        if n == "input_ids" {
            *ty = ValueType::Tensor(TensorType::new(DType::I32, &[1, s]));
        }
    }
    crate::mil::retype(&mut front)?;
    let ids = BTreeMap::from([("input_ids".to_string(), "input_ids".to_string())]);
    let hidden = single(inline(&mut ops, &front, "emb_", &ids, &[])?, "embeddings")?;

    // Every layer: the chunk's inputs other than hidden_states are the function's own.
    let mut bind: BTreeMap<String, String> = body
        .inputs
        .iter()
        .map(|(n, _)| (n.clone(), n.clone()))
        .collect();
    bind.insert("hidden_states".into(), hidden);
    let out = single(inline(&mut ops, body, "", &bind, &[])?, "chunk")?;

    // The LM head reads one row [1, 1, H]: prefill's last (the next token's logits).
    let row = if s == 1 {
        out
    } else {
        let mut g = G::new();
        let x = g.input("hidden_states", DType::F16, &[1, s, h])?;
        let last = g.slice(&x, &[0, s - 1, 0], &[1, s, h])?;
        g.b.output(&last.var)?;
        let tail = g.b.finish()?;
        let bind = BTreeMap::from([("hidden_states".to_string(), out)]);
        single(inline(&mut ops, &tail, "last_", &bind, &[])?, "last row")?
    };
    let bind = BTreeMap::from([("hidden_states".to_string(), row)]);
    let keep: Vec<String> = if argmax { vec![] } else { head.outputs.clone() };
    let logits = inline(&mut ops, head, "head_", &bind, &keep)?;
    let outputs = if argmax {
        let amax = argmax_tail(head)?;
        let bind = amax
            .inputs
            .iter()
            .map(|(n, _)| n.clone())
            .zip(logits)
            .collect();
        inline(&mut ops, &amax, "amax_", &bind, &amax.outputs)?
    } else {
        logits
    };

    let mut inputs = vec![(
        "input_ids".to_string(),
        ValueType::Tensor(TensorType::new(DType::I32, &[1, s])),
    )];
    inputs.extend(
        body.inputs
            .iter()
            .filter(|(n, _)| n != "hidden_states")
            .cloned(),
    );
    let f = Function {
        inputs,
        operations: ops,
        outputs,
    };
    crate::mil::check_function(&f)?;
    Ok(f)
}

fn single(mut outs: Vec<String>, what: &str) -> R<String> {
    match (outs.pop(), outs.is_empty()) {
        (Some(o), true) => Ok(o),
        _ => Err(graph_err(what, "must have exactly one output")),
    }
}

/// Appends `src`'s operations to `ops`: its inputs read the variables `bind` names, every op
/// and variable gets `prefix` (except the variables in `keep`, which keep their names). Returns
/// the names of `src`'s outputs as appended.
fn inline(
    ops: &mut Vec<Operation>,
    src: &Function,
    prefix: &str,
    bind: &BTreeMap<String, String>,
    keep: &[String],
) -> R<Vec<String>> {
    let mut names: HashMap<&str, String> = HashMap::new();
    for (n, _) in &src.inputs {
        let to = bind
            .get(n)
            .ok_or_else(|| graph_err(n, "input not bound when composing"))?;
        names.insert(n, to.clone());
    }
    for op in &src.operations {
        let mut op2 = op.clone();
        op2.name = format!("{prefix}{}", op.name);
        for arg in op2.inputs.values_mut().flatten() {
            if let Arg::Var(v) = arg {
                let to = names
                    .get(v.as_str())
                    .ok_or_else(|| graph_err(&op.name, format!("reads unknown variable {v}")))?;
                *v = to.clone();
            }
        }
        for ((out, _), (orig, _)) in op2.outputs.iter_mut().zip(&op.outputs) {
            let to = if keep.contains(orig) {
                orig.clone()
            } else {
                format!("{prefix}{orig}")
            };
            *out = to.clone();
            names.insert(orig, to);
        }
        ops.push(op2);
    }
    src.outputs
        .iter()
        .map(|o| {
            names
                .get(o.as_str())
                .cloned()
                .ok_or_else(|| graph_err(o, "output not produced"))
        })
        .collect()
}

/// `logits1..N` `[1,1,V_i]` → `argmax_idx` int32 `[N]` (index inside each part) and
/// `argmax_val` fp16 `[N]`, as the LM head part computes them with `--argmax`.
fn argmax_tail(head: &Function) -> R<Function> {
    let mut g = G::new();
    let mut logits = Vec::new();
    for name in &head.outputs {
        let ty = head
            .operations
            .iter()
            .flat_map(|op| &op.outputs)
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| graph_err(name, "LM head output not found"))?;
        let shape = match ty {
            ValueType::Tensor(t) => t.static_shape(),
            ValueType::State(_) => None,
        }
        .ok_or_else(|| graph_err(name, "LM head output is not static"))?;
        logits.push(g.input(name, DType::F16, &shape)?);
    }
    argmax_outputs(&mut g, &logits)?;
    Ok(g.b.finish()?)
}
