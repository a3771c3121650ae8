//! The mil module end to end: reading coremltools' packages (and rejecting broken ones),
//! write → read round trips, byte determinism, atomic replacement, `inspect`, and Apple's
//! validator (coremltools 9.0) on packages anec writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anec::mil::{
    self, read_package, Arg, ConstData, ConstValue, DType, FunctionBuilder, Metadata, Model,
    OpKind, PackageWriter, Program, SliceParams, TensorType, Var,
};
use half::f16;

use super::util::{copy_dir, files, fixture, validate_with_coremltools};

fn sample(name: &str) -> PathBuf {
    fixture("coreml-samples").join(name)
}

// ------------------------------------------------------------------ coremltools' packages

/// Blob offsets of the indices and the LUT of the function's first `constexpr_lut_to_dense`.
fn lut_blobs(f: &mil::Function) -> (u64, u64) {
    let op = f
        .operations
        .iter()
        .find(|o| o.kind == OpKind::ConstexprLutToDense)
        .expect("a constexpr_lut_to_dense op");
    let off = |p: &str| match &op.inputs[p][0] {
        Arg::Value(ConstValue {
            data: ConstData::Stored(s),
            ..
        }) => s.offset,
        other => panic!("{p}: {other:?}"),
    };
    (off("indices"), off("lut"))
}

#[test]
fn reads_the_coremltools_samples() {
    let m = read_package(sample("multifunction.mlpackage")).unwrap();
    let names: Vec<&str> = m.program.functions.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, ["prefill", "decode"]);
    assert_eq!(m.program.default_function, "decode");
    // Both functions' LUT weights point at the same blobs (indices at 64, as coremltools wrote).
    let lut_offsets: Vec<(u64, u64)> = m
        .program
        .functions
        .iter()
        .map(|(_, f)| lut_blobs(f))
        .collect();
    assert_eq!(lut_offsets, vec![(64, 4224), (64, 4224)]);
    for (_, f) in &m.program.functions {
        let states = f
            .inputs
            .iter()
            .filter(|(_, t)| matches!(t, mil::ValueType::State(_)));
        assert_eq!(states.count(), 1);
    }

    let d = read_package(sample("decode.mlpackage")).unwrap();
    assert_eq!(d.program.functions.len(), 1);
    assert_eq!(d.program.default_function, "main");
    assert_eq!(
        d.metadata.user_defined["com.github.apple.coremltools.version"],
        "9.0"
    );
    // Blob constants come back with their bytes (mmap-backed): the LUT decodes to numbers.
    let f = &d.program.functions[0].1;
    let lut = f
        .operations
        .iter()
        .find(|o| o.kind == OpKind::ConstexprLutToDense)
        .map(|o| match &o.inputs["lut"][0] {
            Arg::Value(c) => c.clone(),
            Arg::Var(v) => panic!("{v}"),
        })
        .unwrap();
    assert_eq!(lut.to_f32_vec().unwrap().len(), 128);

    read_package(sample("prefill.mlpackage")).unwrap();
    let flex = read_package(sample("flexible.mlpackage")).unwrap();
    let shapes = &flex.input_shapes["main"]["x"];
    assert_eq!(
        shapes,
        &mil::InputShapes::Range {
            default: vec![1, 1, 64],
            bounds: vec![(1, 1), (1, 16), (64, 64)]
        }
    );
}

#[test]
fn rejects_the_broken_samples_with_clear_errors() {
    let err = |name: &str| {
        read_package(sample(&format!("negative/{name}.mlpackage")))
            .unwrap_err()
            .to_string()
    };
    let e = err("truncated_weights");
    assert!(
        e.contains("weight.bin") && e.contains("offset 9856") && e.contains("has 10000"),
        "{e}"
    );
    let e = err("unknown_op");
    assert!(
        e.contains("unknown op type \"relux\"") && e.contains("op \"relu\""),
        "{e}"
    );
    let e = err("wrong_output_shape");
    assert!(
        e.contains("`scores`") && e.contains("fp16[1, 1, 99]") && e.contains("fp16[1, 1, 16]"),
        "{e}"
    );
}

// ------------------------------------------------------------------ programs anec writes

const H: u64 = 32;
const CTX: u64 = 8;
const STATE: &str = "model_model_kv_cache_0";

fn f16s(n: usize, seed: u32) -> Vec<f16> {
    (0..n)
        .map(|i| f16::from_f32(((i as u32 * 37 + seed * 11) % 17) as f32 / 16.0 - 0.5))
        .collect()
}

/// The LUT conv weight shared by `infer` and `prefill`: 4-bit indices [2H, H, 1, 1], one LUT per
/// 8 output channels.
fn shared_lut(w: &mut PackageWriter) -> (ConstValue, ConstValue) {
    let n = (2 * H * H) as usize;
    let idx: Vec<u8> = (0..n).map(|i| ((i * 7 + i / 5) % 16) as u8).collect();
    let indices = ConstValue::from_indices(4, &[2 * H, H, 1, 1], &idx).unwrap();
    let lut = ConstValue::from_f16(
        &[2 * H / 8, 1, 1, 1, 16, 1],
        &f16s(2 * H as usize / 8 * 16, 3),
    )
    .unwrap();
    (w.store(indices).unwrap(), w.store(lut).unwrap())
}

fn c_i32(b: &mut FunctionBuilder, name: &str, v: &[i32]) -> Var {
    b.constant(name, ConstValue::vec_i32(v)).unwrap()
}

/// An ANE-style chunk function for `s` tokens: LUT conv, KV-cache update through
/// read_state → slice_update → write_state → read_state, attention over the cache.
fn chunk(s: u64, lut: &(ConstValue, ConstValue)) -> mil::Function {
    let mut b = FunctionBuilder::new();
    let hs = b
        .input("hidden_states", TensorType::new(DType::F16, &[1, s, H]))
        .unwrap();
    let pos = b
        .input("current_pos", TensorType::new(DType::I32, &[1]))
        .unwrap();
    let kv = b
        .state(STATE, TensorType::new(DType::F16, &[2, 1, CTX, H]))
        .unwrap();
    let t = b.transpose("x_t", &hs, &[0, 2, 1]).unwrap();
    let x = b.expand_dims("x_4d", &t, &[2]).unwrap();
    let w = b
        .lut_to_dense("qk_weight", lut.0.clone(), lut.1.clone())
        .unwrap();
    let y = b.conv("qk_proj", &x, &w, None).unwrap();
    let k4 = b
        .slice_const(
            "k_4d",
            &y,
            &[0, 0, 0, 0],
            &[1, H as i32, 1, s as i32],
            &SliceParams::default(),
        )
        .unwrap();
    let k3 = b.squeeze("k_3d", &k4, Some(&[2])).unwrap();
    let kt = b.transpose("k_t", &k3, &[0, 2, 1]).unwrap();
    let k = b.expand_dims("k", &kt, &[0]).unwrap();
    let cache = b.read_state("cache_read", &kv).unwrap();
    let z2 = c_i32(&mut b, "zeros_2", &[0, 0]);
    let z1 = c_i32(&mut b, "zero_1", &[0]);
    let begin = b.concat("begin", &[&z2, &pos, &z1], 0).unwrap();
    let extent = c_i32(&mut b, "extent", &[1, 1, s as i32, H as i32]);
    let end = b.add("end", &begin, &extent).unwrap();
    let upd = b
        .slice_update(
            "cache_upd",
            &cache,
            &k,
            &begin,
            &end,
            &SliceParams::default(),
        )
        .unwrap();
    b.write_state("cache_write", &kv, &upd).unwrap();
    let cache2 = b.read_state("cache_read2", &kv).unwrap();
    let keys = b
        .slice_const(
            "keys",
            &cache2,
            &[0, 0, 0, 0],
            &[1, 1, CTX as i32, H as i32],
            &SliceParams::default(),
        )
        .unwrap();
    let scores = b.matmul("scores", &k, &keys, false, true).unwrap();
    let probs = b.softmax("probs", &scores, -1).unwrap();
    let ctx = b.matmul("attn", &probs, &keys, false, false).unwrap();
    let out = b
        .reshape("output_hidden_states", &ctx, &[1, s as i32, H as i32])
        .unwrap();
    b.output(&out).unwrap();
    b.finish().unwrap()
}

/// A function that uses every other op kind (const, linear, elementwise, norms, shape ops,
/// gather, cast, comparisons, select, reductions, band_part, fill, tile, blockwise dequant).
fn every_op() -> mil::Function {
    let mut b = FunctionBuilder::new();
    let x = b
        .input("x", TensorType::new(DType::F16, &[1, 4, 16]))
        .unwrap();
    let ids = b
        .input("ids", TensorType::new(DType::I32, &[1, 3]))
        .unwrap();
    let lw = b
        .constant(
            "lin_w",
            ConstValue::from_f16(&[8, 16], &f16s(128, 1)).unwrap(),
        )
        .unwrap();
    let a = b.linear("lin", &x, &lw, None).unwrap();
    let a2 = b.add("a2", &a, &a).unwrap();
    let d = b.sub("d", &a2, &a).unwrap();
    let m = b.mul("m", &d, &a).unwrap();
    let two = b
        .constant("two", ConstValue::scalar_f16(f16::from_f32(2.0)))
        .unwrap();
    let q = b.real_div("q", &m, &two).unwrap();
    let mx = b.maximum("mx", &q, &a).unwrap();
    let mn = b.minimum("mn", &mx, &a2).unwrap();
    let r = b.relu("r", &mn).unwrap();
    let rs = b.rsqrt("rs", &r, 1e-3).unwrap();
    let sq = b.sqrt("sq", &r).unwrap();
    let ex = b.exp("ex", &sq).unwrap();
    let si0 = b.silu("si0", &ex).unwrap();
    let si = b.gelu("si", &si0, "TANH_APPROXIMATION").unwrap();
    let gamma = b
        .constant("ln_gamma", ConstValue::from_f16(&[8], &f16s(8, 2)).unwrap())
        .unwrap();
    let beta = b
        .constant("ln_beta", ConstValue::from_f16(&[8], &f16s(8, 4)).unwrap())
        .unwrap();
    let ln = b
        .layer_norm("ln", &si, &[-1], Some(&gamma), Some(&beta), 1e-5)
        .unwrap();
    let sm = b.softmax("sm", &ln, -1).unwrap();
    let cc = b.concat("cc", &[&sm, &rs], -1).unwrap();
    let parts = b.split("sp", &cc, 2, -1).unwrap();
    let sl = b
        .slice_const("sl", &cc, &[0, 0, 0], &[1, 2, 16], &SliceParams::default())
        .unwrap();
    let bg = c_i32(&mut b, "su_begin", &[0, 1, 0]);
    let en = c_i32(&mut b, "su_end", &[1, 3, 16]);
    let su = b
        .slice_update("su", &cc, &sl, &bg, &en, &SliceParams::default())
        .unwrap();
    let rh = b.reshape("rh", &su, &[1, 64]).unwrap();
    let tr = b.transpose("tr", &parts[0], &[0, 2, 1]).unwrap();
    let ed = b.expand_dims("ed", &tr, &[0]).unwrap();
    let sqz = b.squeeze("sqz", &ed, Some(&[0])).unwrap();
    let table = b
        .constant(
            "table",
            ConstValue::from_f16(&[10, 16], &f16s(160, 5)).unwrap(),
        )
        .unwrap();
    let g = b.gather("g", &table, &ids, 0, 0).unwrap();
    let c32 = b.cast("c32", &g, DType::F32).unwrap();
    let c16 = b.cast("c16", &c32, DType::F16).unwrap();
    let eq = b.equal("eq", &parts[0], &parts[1]).unwrap();
    let _ = b.less("lt", &parts[0], &parts[1]).unwrap();
    let _ = b.less_equal("le", &parts[0], &parts[1]).unwrap();
    let _ = b.greater("gt", &parts[0], &parts[1]).unwrap();
    let ge = b.greater_equal("ge", &parts[0], &parts[1]).unwrap();
    let _ = b.select("sel", &eq, &parts[0], &parts[1]).unwrap();
    let _ = b.select("sel2", &ge, &parts[1], &parts[0]).unwrap();
    let am = b.reduce_argmax("am", &rh, -1, false, DType::I32).unwrap();
    let rmax = b.reduce_max("rmax", &sqz, &[-1], true).unwrap();
    let rsum = b.reduce_sum("rsum", &sqz, &[-1], true).unwrap();
    let rmean = b.reduce_mean("rmean", &rsum, &[-1], false).unwrap();
    let bp = b.band_part("bp", &rmax, -1, 0).unwrap();
    let fl = b
        .fill(
            "fl",
            &[1, 3, 16],
            ConstValue::scalar_f16(f16::from_f32(0.25)),
        )
        .unwrap();
    let gf = b.add("gf", &c16, &fl).unwrap();
    let tl = b.tile("tl", &bp, &[1, 1, 2]).unwrap();
    // int4 data in blocks of 8 along the input axis, one fp16 scale per block.
    let q4: Vec<u8> = (0..128).map(|i| (i % 16) as u8).collect();
    let data = ConstValue::from_bytes(DType::I4, &[8, 16], mil::bits::pack(4, &q4)).unwrap();
    let scale = ConstValue::from_f16(&[8, 2], &f16s(16, 6)).unwrap();
    let bw = b.blockwise_shift_scale("bw", data, scale, None).unwrap();
    let lin2 = b.linear("lin2", &x, &bw, None).unwrap();
    for v in [&gf, &am, &rmean, &tl, &lin2] {
        b.output(v).unwrap();
    }
    b.finish().unwrap()
}

/// An embeddings-like single function with an enumerated-shape int32 input.
fn embeddings_model(w: &mut PackageWriter) -> Model {
    let mut b = FunctionBuilder::new();
    let ids = b
        .input_enumerated("input_ids", DType::I32, &[vec![1, 1], vec![1, 4]])
        .unwrap();
    let table = w
        .store(ConstValue::from_f16(&[50, H], &f16s(50 * H as usize, 9)).unwrap())
        .unwrap();
    let t = b.constant("embed_table", table).unwrap();
    let h = b.gather("hidden_states", &t, &ids, 0, 0).unwrap();
    b.output(&h).unwrap();
    let (f, shapes) = b.finish_with_shapes().unwrap();
    Model::new(Program {
        functions: vec![("main".to_string(), f)],
        default_function: "main".to_string(),
    })
    .with_function_shapes("main", shapes)
    .with_metadata(Metadata {
        author: "anec tests".to_string(),
        version: "0.1.0".to_string(),
        short_description: "embeddings".to_string(),
        license: "MIT".to_string(),
        user_defined: BTreeMap::from([("anec.kind".to_string(), "embeddings".to_string())]),
    })
}

/// infer (default) + prefill sharing one stored LUT weight and the state, plus every other op.
fn chunk_model(w: &mut PackageWriter) -> Model {
    let lut = shared_lut(w);
    Model::new(Program {
        functions: vec![
            ("infer".to_string(), chunk(1, &lut)),
            ("prefill".to_string(), chunk(4, &lut)),
            ("ops".to_string(), every_op()),
        ],
        default_function: "infer".to_string(),
    })
    .with_metadata(Metadata {
        author: "anec tests".to_string(),
        ..Metadata::default()
    })
}

/// Stores every inline constant of ≥ 10 elements now (as `finish` would), so that the model
/// handed to `finish` already holds the final offsets and reads back equal.
fn store_big(w: &mut PackageWriter, m: &mut Model) {
    let store = |w: &mut PackageWriter, c: &mut ConstValue| {
        let storable = !matches!(c.ty.dtype, DType::Bool | DType::Str | DType::I64);
        if matches!(c.data, ConstData::Bytes(_)) && c.num_elements() >= 10 && storable {
            *c = w.store(c.clone()).unwrap();
        }
    };
    for (_, f) in &mut m.program.functions {
        for c in f.operations.iter_mut().flat_map(|op| op.constants_mut()) {
            store(w, c);
        }
    }
}

/// Every constant as in-memory bytes (stored ones from their loaded blob).
fn materialize(p: &Program) -> Program {
    let mut p = p.clone();
    let fix = |c: &mut ConstValue| {
        if let ConstData::Stored(_) = &c.data {
            let bytes: Arc<[u8]> = Arc::from(c.bytes().expect("stored bytes are loaded"));
            c.data = ConstData::Bytes(bytes);
        }
    };
    for (_, f) in &mut p.functions {
        for c in f.operations.iter_mut().flat_map(|op| op.constants_mut()) {
            fix(c);
        }
    }
    p
}

fn write_chunk(path: &Path) -> Model {
    let mut w = PackageWriter::create(path, false).unwrap();
    let mut m = chunk_model(&mut w);
    store_big(&mut w, &mut m);
    w.finish(&m).unwrap();
    m
}

fn write_embeddings(path: &Path) -> Model {
    let mut w = PackageWriter::create(path, false).unwrap();
    let m = embeddings_model(&mut w);
    w.finish(&m).unwrap();
    m
}

#[test]
fn every_op_kind_is_used_by_the_test_program() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_chunk(&dir.path().join("c.mlpackage"));
    let used: std::collections::BTreeSet<OpKind> = m
        .program
        .functions
        .iter()
        .flat_map(|(_, f)| f.operations.iter().map(|o| o.kind))
        .collect();
    let missing: Vec<OpKind> = mil::OpKind::ALL
        .iter()
        .copied()
        .filter(|k| !used.contains(k))
        .collect();
    assert!(missing.is_empty(), "op kinds not exercised: {missing:?}");
}

#[test]
fn write_then_read_gives_the_same_program() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chunk.mlpackage");
    let written = write_chunk(&path);
    let read = read_package(&path).unwrap();
    // Exact: same functions, order, default, ops, types, and blob offsets.
    assert_eq!(read, written);
    // And the stored bytes are the ones that went in.
    let mut w2 = PackageWriter::create(dir.path().join("unused.mlpackage"), false).unwrap();
    let fresh = chunk_model(&mut w2);
    assert_eq!(
        materialize(&read.program),
        materialize_fresh(&fresh.program, &read.program)
    );

    let epath = dir.path().join("emb.mlpackage");
    let emb = write_embeddings(&epath);
    let eread = read_package(&epath).unwrap();
    assert_eq!(eread.input_shapes, emb.input_shapes);
    assert_eq!(eread.metadata, emb.metadata);
    assert_eq!(
        eread.program.functions[0].1.inputs,
        emb.program.functions[0].1.inputs
    );
    assert_eq!(eread, emb);
}

/// The fresh (unstored) program, with the two constants that `chunk_model` stores up front
/// (the shared LUT) taken from the read program, whose bytes were checked by the blob reader.
fn materialize_fresh(fresh: &Program, read: &Program) -> Program {
    let mut fresh = fresh.clone();
    let r = materialize(read);
    for ((_, f), (_, rf)) in fresh.functions.iter_mut().zip(&r.functions) {
        for (op, rop) in f.operations.iter_mut().zip(&rf.operations) {
            if op.kind == OpKind::ConstexprLutToDense {
                op.inputs = rop.inputs.clone();
            }
        }
    }
    fresh
}

#[test]
fn shared_lut_weights_are_stored_once_at_the_same_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chunk.mlpackage");
    write_chunk(&path);
    let m = read_package(&path).unwrap();
    let offsets: Vec<(u64, u64)> = ["infer", "prefill"]
        .iter()
        .map(|name| {
            let f = &m
                .program
                .functions
                .iter()
                .find(|(n, _)| n == name)
                .unwrap()
                .1;
            lut_blobs(f)
        })
        .collect();
    assert_eq!(offsets[0], offsets[1]);
    assert_eq!(offsets[0].0, 64, "the LUT indices are the first blob");
}

#[test]
fn same_program_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("a.mlpackage"),
        dir.path().join("b.mlpackage"),
    );
    write_chunk(&a);
    write_chunk(&b);
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        [
            "Data/com.apple.CoreML/model.mlmodel",
            "Data/com.apple.CoreML/weights/weight.bin",
            "Manifest.json"
        ]
    );
    assert_eq!(fa, fb);
    // A different program gives different identifiers.
    let e = dir.path().join("e.mlpackage");
    write_embeddings(&e);
    assert_ne!(files(&e)["Manifest.json"], fa["Manifest.json"]);
    // Multi-function description: specificationVersion 9, then description with functions (#20).
    let model = &fa["Data/com.apple.CoreML/model.mlmodel"];
    assert_eq!(&model[..3], &[0x08, 0x09, 0x12]);
}

#[test]
fn existing_output_needs_force_and_is_replaced_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.mlpackage");
    write_embeddings(&path);
    let e = PackageWriter::create(&path, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("e.mlpackage") && e.contains("already exists"),
        "{e}"
    );
    std::fs::write(path.join("stale.txt"), b"old").unwrap();
    let mut w = PackageWriter::create(&path, true).unwrap();
    let m = embeddings_model(&mut w);
    w.finish(&m).unwrap();
    assert!(
        !path.join("stale.txt").exists(),
        "the old package was replaced"
    );
    read_package(&path).unwrap();
    // Nothing but the package is left beside it (no temp or moved-aside folders).
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["e.mlpackage"]);
    // A writer dropped without finishing leaves nothing behind.
    drop(PackageWriter::create(dir.path().join("x.mlpackage"), false).unwrap());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn inspect_reports_functions_io_ops_and_weights() {
    let r = mil::inspect(sample("multifunction.mlpackage")).unwrap();
    let text = r.to_string();
    println!("{text}");
    assert_eq!(r.specification_version, 9);
    assert_eq!(r.default_function, "decode");
    let decode = r.functions.iter().find(|f| f.name == "decode").unwrap();
    assert!(decode.default);
    assert_eq!(decode.states.len(), 1);
    assert_eq!(decode.op_counts["constexpr_lut_to_dense"], 1);
    assert_eq!(r.weights.lut.len(), 1);
    assert_eq!(
        (r.weights.lut[0].bits, r.weights.lut[0].group_size),
        (4, Some(16))
    );
    assert_eq!(
        r.weights.lut[0].count, 1,
        "shared across functions, counted once"
    );
    assert_eq!(
        r.weights.total_bytes,
        4096 + 256 + 4096 + 512 + 256 + 128 + 8192 + 128
    );
    assert!(text.contains("* decode (default)"), "{text}");
    assert!(text.contains("LUT 4-bit, group 16"), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["functions"][1]["name"], "decode");
    assert_eq!(json["weights"]["lut"][0]["group_size"], 16);
}

// ------------------------------------------------------------------ Apple's validator

/// Writes the stateful multi-function LUT chunk and the enumerated-shape embeddings package,
/// then, when ANEC_COREML_PYTHON (and ANEC_VALIDATOR) are set, runs coremltools 9.0's check on
/// copies of them (the validator rewrites Manifest.json) and asserts that it passes.
#[test]
fn packages_pass_apples_validator() {
    let dir = tempfile::tempdir().unwrap();
    let chunk = dir.path().join("chunk.mlpackage");
    let emb = dir.path().join("embeddings.mlpackage");
    write_chunk(&chunk);
    write_embeddings(&emb);
    // coremltools' own multi-function sample, read and written again by anec.
    let rewritten = dir.path().join("multifunction.mlpackage");
    let m = read_package(sample("multifunction.mlpackage")).unwrap();
    PackageWriter::create(&rewritten, false)
        .unwrap()
        .finish(&m)
        .unwrap();
    if let Ok(keep) = std::env::var("ANEC_KEEP_PACKAGES") {
        for p in [&chunk, &emb, &rewritten] {
            let to = Path::new(&keep).join(p.file_name().unwrap());
            let _ = std::fs::remove_dir_all(&to);
            copy_dir(p, &to);
        }
    }
    let scratch = dir.path().join("copy");
    validate_with_coremltools(
        &chunk,
        &["--expect-functions", "infer,prefill,ops"],
        &scratch,
    );
    validate_with_coremltools(&emb, &[], &scratch);
    validate_with_coremltools(
        &rewritten,
        &[
            "--expect-functions",
            "prefill,decode",
            "--expect-states",
            "1",
        ],
        &scratch,
    );
}

/// coremltools' packages survive read → write → read with the same program and contents; the
/// rewritten weight.bin is byte-identical to coremltools' own.
#[test]
fn coremltools_samples_rewrite_to_the_same_program_and_weights() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["decode", "prefill", "multifunction", "flexible"] {
        let src = sample(&format!("{name}.mlpackage"));
        let a = read_package(&src).unwrap();
        let out = dir.path().join(format!("{name}.mlpackage"));
        PackageWriter::create(&out, false)
            .unwrap()
            .finish(&a)
            .unwrap();
        let b = read_package(&out).unwrap();
        assert_eq!(materialize(&b.program), materialize(&a.program), "{name}");
        assert_eq!(
            (&b.input_shapes, &b.metadata),
            (&a.input_shapes, &a.metadata),
            "{name}"
        );
        let wb = "Data/com.apple.CoreML/weights/weight.bin";
        assert_eq!(
            std::fs::read(out.join(wb)).unwrap(),
            std::fs::read(src.join(wb)).unwrap(),
            "{name}: weight.bin differs"
        );
    }
}

#[test]
fn store_copies_constants_read_from_another_package() {
    let dir = tempfile::tempdir().unwrap();
    let m = read_package(sample("decode.mlpackage")).unwrap();
    let lut = m.program.functions[0]
        .1
        .operations
        .iter()
        .find(|o| o.kind == OpKind::ConstexprLutToDense)
        .map(|o| match &o.inputs["lut"][0] {
            Arg::Value(c) => c.clone(),
            Arg::Var(v) => panic!("{v}"),
        })
        .unwrap();
    let mut w = PackageWriter::create(dir.path().join("p.mlpackage"), false).unwrap();
    let pad = w
        .store(ConstValue::from_f16(&[40], &f16s(40, 1)).unwrap())
        .unwrap();
    let copied = w.store(lut.clone()).unwrap();
    let (ConstData::Stored(a), ConstData::Stored(b)) = (&pad.data, &copied.data) else {
        panic!("not stored")
    };
    assert_eq!(
        (a.offset, b.offset),
        (64, 256),
        "copied into this file, not the source offset"
    );
    assert_eq!(
        w.store(copied.clone()).unwrap(),
        copied,
        "stored by this writer: unchanged"
    );
    let e = w.store(ConstValue::string("x")).unwrap_err().to_string();
    assert!(e.contains("string constants cannot be stored"), "{e}");
}

/// Streams 256 MiB of fp16 weights through a package and reads them back (timing, opt-in:
/// `cargo test --test tests large_weights -- --ignored --nocapture`).
#[test]
#[ignore]
fn large_weights_stream_through_a_package() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.mlpackage");
    let t = std::time::Instant::now();
    let mut w = PackageWriter::create(&path, false).unwrap();
    let mut b = FunctionBuilder::new();
    let x = b
        .input("x", TensorType::new(DType::F16, &[1, 4096, 1, 1]))
        .unwrap();
    let mut h = x;
    for i in 0..8 {
        let vals: Vec<f16> = (0..4096 * 4096)
            .map(|k| f16::from_f32(((k + i) % 251) as f32 / 251.0))
            .collect();
        let wt = w
            .store(ConstValue::from_f16(&[4096, 4096, 1, 1], &vals).unwrap())
            .unwrap();
        let wv = b.constant(&format!("w{i}"), wt).unwrap();
        h = b.conv(&format!("conv{i}"), &h, &wv, None).unwrap();
    }
    b.output(&h).unwrap();
    let m = Model::new(Program {
        functions: vec![("main".to_string(), b.finish().unwrap())],
        default_function: "main".to_string(),
    });
    w.finish(&m).unwrap();
    let written = t.elapsed();
    let t = std::time::Instant::now();
    let r = mil::inspect(&path).unwrap();
    println!(
        "wrote {} MiB in {written:.2?}, read + checked + inspected in {:.2?}",
        r.weight_file_bytes >> 20,
        t.elapsed()
    );
    assert_eq!(r.weights.dense_fp16.count, 8);
}
