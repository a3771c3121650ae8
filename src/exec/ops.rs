//! The op kernels: plain loops over [`Tensor`]s with Core ML's semantics (coremltools' op
//! definitions and their numpy `value_inference`), each returning an [`OpProblem`] on bad input.
//! They know nothing about programs; `exec::Interpreter` resolves parameters and calls them.

use std::sync::Arc;

use rayon::prelude::*;

use super::tensor::{
    broadcast_index, broadcast_shapes, strided_index, strides, Data, Storage, Tensor,
};
use super::OpProblem;
use crate::mil::DType;

type R<T> = Result<T, OpProblem>;

fn shape_err(msg: String) -> OpProblem {
    OpProblem::Shape(msg)
}

fn float_data<'a>(t: &'a Tensor, param: &str) -> R<&'a [f32]> {
    t.as_f32().ok_or_else(|| OpProblem::ParamType {
        param: param.to_string(),
        expected: "a float tensor".into(),
        got: t.dtype().mil_name().into(),
    })
}

fn int_data<'a>(t: &'a Tensor, param: &str) -> R<&'a [i32]> {
    t.as_i32().ok_or_else(|| OpProblem::ParamType {
        param: param.to_string(),
        expected: "an integer tensor".into(),
        got: t.dtype().mil_name().into(),
    })
}

fn float_tensor(dtype: DType, shape: Vec<usize>, v: Vec<f32>) -> R<Tensor> {
    Tensor::new(dtype, shape, Data::Float(v.into())).map_err(|e| OpProblem::Internal(e.to_string()))
}

fn int_tensor(dtype: DType, shape: Vec<usize>, v: Vec<i32>) -> R<Tensor> {
    Tensor::new(dtype, shape, Data::Int(v.into())).map_err(|e| OpProblem::Internal(e.to_string()))
}

fn bool_tensor(shape: Vec<usize>, v: Vec<bool>) -> R<Tensor> {
    Tensor::new(DType::Bool, shape, Data::Bool(v.into()))
        .map_err(|e| OpProblem::Internal(e.to_string()))
}

/// Normalizes a possibly negative axis against `rank`.
pub fn norm_axis(param: &str, axis: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(OpProblem::BadValue {
            param: param.to_string(),
            value: axis.to_string(),
            why: format!("axis out of range for rank {rank}"),
        });
    }
    Ok(a as usize)
}

// ---------------------------------------------------------------- elementwise

/// The binary elementwise ops (numpy broadcasting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    RealDiv,
    Maximum,
    Minimum,
    Equal,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
}

impl Binary {
    fn is_compare(self) -> bool {
        matches!(
            self,
            Binary::Equal
                | Binary::Less
                | Binary::LessEqual
                | Binary::Greater
                | Binary::GreaterEqual
        )
    }
}

fn cmp<T: PartialOrd>(op: Binary, a: T, b: T) -> bool {
    match op {
        Binary::Equal => a == b,
        Binary::Less => a < b,
        Binary::LessEqual => a <= b,
        Binary::Greater => a > b,
        Binary::GreaterEqual => a >= b,
        Binary::Add
        | Binary::Sub
        | Binary::Mul
        | Binary::RealDiv
        | Binary::Maximum
        | Binary::Minimum => false,
    }
}

fn fbin(op: Binary, a: f32, b: f32) -> f32 {
    match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::RealDiv => a / b,
        Binary::Maximum => a.max(b),
        Binary::Minimum => a.min(b),
        Binary::Equal
        | Binary::Less
        | Binary::LessEqual
        | Binary::Greater
        | Binary::GreaterEqual => 0.0,
    }
}

fn ibin(op: Binary, a: i32, b: i32) -> R<i32> {
    Ok(match op {
        Binary::Add => a.wrapping_add(b),
        Binary::Sub => a.wrapping_sub(b),
        Binary::Mul => a.wrapping_mul(b),
        Binary::RealDiv => {
            if b == 0 {
                return Err(OpProblem::BadValue {
                    param: "y".into(),
                    value: "0".into(),
                    why: "integer division by zero".into(),
                });
            }
            // real_div on int32 divides as reals; the int32 result truncates toward zero.
            (a as f64 / b as f64) as i32
        }
        Binary::Maximum => a.max(b),
        Binary::Minimum => a.min(b),
        Binary::Equal
        | Binary::Less
        | Binary::LessEqual
        | Binary::Greater
        | Binary::GreaterEqual => 0,
    })
}

/// `x op y` with numpy broadcasting. Both operands must have the same storage (float, int, or
/// bool for `equal`); comparisons give bool.
pub fn binary(op: Binary, x: &Tensor, y: &Tensor) -> R<Tensor> {
    let shape = broadcast_shapes(x.shape(), y.shape()).ok_or_else(|| {
        shape_err(format!(
            "x {:?} and y {:?} do not broadcast",
            x.shape(),
            y.shape()
        ))
    })?;
    let ix = broadcast_index(x.shape(), &shape);
    let iy = broadcast_index(y.shape(), &shape);
    // f over the broadcast pairs (a[ix[k]], b[iy[k]]).
    fn pairs<T: Copy, U>(
        ix: &[usize],
        a: &[T],
        iy: &[usize],
        b: &[T],
        f: impl Fn(T, T) -> U,
    ) -> Vec<U> {
        ix.iter().zip(iy).map(|(&i, &j)| f(a[i], b[j])).collect()
    }
    match (x.data(), y.data()) {
        (Data::Float(a), Data::Float(b)) if op.is_compare() => {
            bool_tensor(shape, pairs(&ix, a, &iy, b, |p, q| cmp(op, p, q)))
        }
        (Data::Float(a), Data::Float(b)) => float_tensor(
            x.dtype(),
            shape,
            pairs(&ix, a, &iy, b, |p, q| fbin(op, p, q)),
        ),
        (Data::Int(a), Data::Int(b)) if op.is_compare() => {
            bool_tensor(shape, pairs(&ix, a, &iy, b, |p, q| cmp(op, p, q)))
        }
        (Data::Int(a), Data::Int(b)) => {
            let v = pairs(&ix, a, &iy, b, |p, q| ibin(op, p, q));
            int_tensor(x.dtype(), shape, v.into_iter().collect::<R<Vec<i32>>>()?)
        }
        (Data::Bool(a), Data::Bool(b)) if op == Binary::Equal => {
            bool_tensor(shape, pairs(&ix, a, &iy, b, |p, q| p == q))
        }
        _ => Err(OpProblem::ParamType {
            param: "y".into(),
            expected: format!("the dtype class of x ({})", x.dtype().mil_name()),
            got: y.dtype().mil_name().into(),
        }),
    }
}

/// The unary float ops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// `1 / sqrt(x + epsilon)` (coremltools iOS15 elementwise_unary.rsqrt).
    Rsqrt(f32),
    Sqrt,
    Exp,
    Relu,
    /// `x * sigmoid(x)`.
    Silu,
    /// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))` (gelu, TANH_APPROXIMATION).
    GeluTanh,
}

pub fn unary(op: Unary, x: &Tensor) -> R<Tensor> {
    let a = float_data(x, "x")?;
    let f = |v: f32| -> f32 {
        match op {
            Unary::Rsqrt(eps) => 1.0 / (v + eps).sqrt(),
            Unary::Sqrt => v.sqrt(),
            Unary::Exp => v.exp(),
            Unary::Relu => {
                if v > 0.0 {
                    v
                } else {
                    0.0
                }
            }
            Unary::Silu => v / (1.0 + (-v).exp()),
            Unary::GeluTanh => {
                let c = (2.0f32 / std::f32::consts::PI).sqrt();
                0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh())
            }
        }
    };
    float_tensor(
        x.dtype(),
        x.shape().to_vec(),
        a.iter().map(|&v| f(v)).collect(),
    )
}

/// `select(cond, a, b)`: `a` where cond is true, else `b`; all three broadcast.
pub fn select(cond: &Tensor, a: &Tensor, b: &Tensor) -> R<Tensor> {
    let c = cond.as_bool().ok_or_else(|| OpProblem::ParamType {
        param: "cond".into(),
        expected: "bool".into(),
        got: cond.dtype().mil_name().into(),
    })?;
    let s1 = broadcast_shapes(a.shape(), b.shape());
    let shape = s1
        .and_then(|s| broadcast_shapes(&s, cond.shape()))
        .ok_or_else(|| {
            shape_err(format!(
                "cond {:?}, a {:?} and b {:?} do not broadcast",
                cond.shape(),
                a.shape(),
                b.shape()
            ))
        })?;
    let ic = broadcast_index(cond.shape(), &shape);
    let ia = broadcast_index(a.shape(), &shape);
    let ib = broadcast_index(b.shape(), &shape);
    // Element k of the result: a's (broadcast) element where cond is true, else b's.
    fn choose<T: Copy>(
        c: &[bool],
        ic: &[usize],
        x: &[T],
        ia: &[usize],
        y: &[T],
        ib: &[usize],
    ) -> Arc<[T]> {
        (0..ic.len())
            .map(|k| if c[ic[k]] { x[ia[k]] } else { y[ib[k]] })
            .collect()
    }
    let data = match (a.data(), b.data()) {
        (Data::Float(x), Data::Float(y)) => Data::Float(choose(c, &ic, x, &ia, y, &ib)),
        (Data::Int(x), Data::Int(y)) => Data::Int(choose(c, &ic, x, &ia, y, &ib)),
        (Data::Bool(x), Data::Bool(y)) => Data::Bool(choose(c, &ic, x, &ia, y, &ib)),
        _ => {
            return Err(OpProblem::ParamType {
                param: "b".into(),
                expected: format!("the dtype of a ({})", a.dtype().mil_name()),
                got: b.dtype().mil_name().into(),
            })
        }
    };
    Tensor::new(a.dtype(), shape, data).map_err(|e| OpProblem::Internal(e.to_string()))
}

/// `cast(x, dtype)`: float → int truncates toward zero (numpy `astype`), to bool is `x != 0`.
pub fn cast(x: &Tensor, to: DType) -> R<Tensor> {
    let shape = x.shape().to_vec();
    let wrap = |v: i64| -> i32 {
        match to {
            DType::I8 => v as i8 as i32,
            DType::U8 => v as u8 as i32,
            DType::I16 => v as i16 as i32,
            DType::U16 => v as u16 as i32,
            _ => v as i32,
        }
    };
    match to {
        DType::F16 | DType::F32 => float_tensor(to, shape, x.to_f32_vec()),
        DType::I8 | DType::I16 | DType::I32 | DType::U8 | DType::U16 => {
            let v = match x.data() {
                Data::Float(a) => a.iter().map(|&f| wrap(f as i64)).collect(),
                Data::Int(a) => a.iter().map(|&i| wrap(i as i64)).collect(),
                Data::Bool(a) => a.iter().map(|&b| b as i32).collect(),
            };
            int_tensor(to, shape, v)
        }
        DType::Bool => {
            let v = match x.data() {
                Data::Float(a) => a.iter().map(|&f| f != 0.0).collect(),
                Data::Int(a) => a.iter().map(|&i| i != 0).collect(),
                Data::Bool(a) => a.to_vec(),
            };
            bool_tensor(shape, v)
        }
        DType::Str
        | DType::I64
        | DType::U1
        | DType::U2
        | DType::U3
        | DType::U4
        | DType::U6
        | DType::I4 => Err(OpProblem::BadValue {
            param: "dtype".into(),
            value: to.mil_name().into(),
            why: "cast supports fp16, fp32, int8, int16, int32, uint8, uint16 and bool".into(),
        }),
    }
}

// ---------------------------------------------------------------- matrix products

/// `out[m, n] = sum_k a[m, k] * b[n, k]` (both row-major, b given as rows of length k).
pub fn gemm_nt(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    let work = m * n * k;
    let body = |(ci, chunk): (usize, &mut [f32]), start_of: usize| {
        for (j, o) in chunk.iter_mut().enumerate() {
            let flat = ci * start_of + j;
            let (r, c) = (flat / n, flat % n);
            *o = dot(&a[r * k..(r + 1) * k], &b[c * k..(c + 1) * k]);
        }
    };
    let chunk = 256;
    if work > 1 << 16 {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|x| body(x, chunk));
    } else {
        out.chunks_mut(chunk)
            .enumerate()
            .for_each(|x| body(x, chunk));
    }
    out
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 4];
    let chunks = a.len() / 4;
    for i in 0..chunks {
        for l in 0..4 {
            acc[l] += a[i * 4 + l] * b[i * 4 + l];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for i in chunks * 4..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// Transposes a row-major `[rows, cols]` matrix.
fn transpose2(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = a[r * cols + c];
        }
    }
    out
}

/// `matmul(x, y, transpose_x, transpose_y)`: numpy matmul semantics (rank-1 operands get a
/// unit dimension that is dropped again; batch dimensions broadcast).
pub fn matmul(x: &Tensor, y: &Tensor, tx: bool, ty: bool) -> R<Tensor> {
    let a = float_data(x, "x")?;
    let b = float_data(y, "y")?;
    let mut xs = x.shape().to_vec();
    let mut ys = y.shape().to_vec();
    if xs.is_empty() || ys.is_empty() {
        return Err(shape_err("matmul of a scalar".into()));
    }
    let x1 = xs.len() == 1;
    let y1 = ys.len() == 1;
    if x1 {
        xs.insert(0, 1);
    }
    if y1 {
        ys.push(1);
    }
    let (xr, yr) = (xs.len(), ys.len());
    let (mut m, mut kx) = (xs[xr - 2], xs[xr - 1]);
    if tx && !x1 {
        std::mem::swap(&mut m, &mut kx);
    }
    let (mut ky, mut n) = (ys[yr - 2], ys[yr - 1]);
    if ty && !y1 {
        std::mem::swap(&mut ky, &mut n);
    }
    if kx != ky {
        return Err(shape_err(format!(
            "inner dimensions differ: x {:?} (transpose_x {tx}) and y {:?} (transpose_y {ty})",
            x.shape(),
            y.shape()
        )));
    }
    let k = kx;
    let bx = &xs[..xr - 2];
    let by = &ys[..yr - 2];
    let batch = broadcast_shapes(bx, by).ok_or_else(|| {
        shape_err(format!(
            "batch dimensions {bx:?} and {by:?} do not broadcast"
        ))
    })?;
    let ibx = broadcast_index(bx, &batch);
    let iby = broadcast_index(by, &batch);
    let mut out = Vec::with_capacity(ibx.len() * m * n);
    for (&bi, &bj) in ibx.iter().zip(&iby) {
        let xa = &a[bi * m * k..(bi + 1) * m * k];
        let yb = &b[bj * k * n..(bj + 1) * k * n];
        // a as [m, k] rows; b as [n, k] rows.
        let am = if tx && !x1 {
            transpose2(xa, k, m)
        } else {
            xa.to_vec()
        };
        let bn = if ty && !y1 {
            yb.to_vec()
        } else {
            transpose2(yb, k, n)
        };
        out.extend(gemm_nt(&am, &bn, m, n, k));
    }
    let mut shape = batch;
    if !x1 {
        shape.push(m);
    }
    if !y1 {
        shape.push(n);
    }
    float_tensor(x.dtype(), shape, out)
}

/// `linear(x, weight, bias)`: `x · weightᵀ + bias`, weight `[Dout, Din]`.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> R<Tensor> {
    let a = float_data(x, "x")?;
    let wd = float_data(w, "weight")?;
    if w.rank() != 2 || x.rank() == 0 {
        return Err(shape_err(format!(
            "weight must be [Dout, Din] and x of rank >= 1, got x {:?}, weight {:?}",
            x.shape(),
            w.shape()
        )));
    }
    let (dout, din) = (w.shape()[0], w.shape()[1]);
    let xs = x.shape();
    if xs[xs.len() - 1] != din {
        return Err(shape_err(format!(
            "x {:?} last dimension is not weight's Din {din}",
            xs
        )));
    }
    let rows = x.len() / din.max(1);
    let mut out = gemm_nt(a, wd, rows, dout, din);
    if let Some(b) = bias {
        let bd = float_data(b, "bias")?;
        if bd.len() != dout {
            return Err(shape_err(format!(
                "bias {:?} does not match Dout {dout}",
                b.shape()
            )));
        }
        for row in out.chunks_mut(dout.max(1)) {
            for (o, &bv) in row.iter_mut().zip(bd) {
                *o += bv;
            }
        }
    }
    let mut shape = xs.to_vec();
    let last = shape.len() - 1;
    shape[last] = dout;
    float_tensor(x.dtype(), shape, out)
}

/// How `conv` pads.
#[derive(Clone, Debug, PartialEq)]
pub enum PadType {
    Valid,
    Same,
    SameLower,
    /// `[begin_0, end_0, begin_1, end_1, …]` per spatial dimension.
    Custom(Vec<usize>),
}

/// `conv` over NCHW (or NCW) input, weight `[Cout, Cin/groups, kH, kW]`.
pub fn conv(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    strides_: &[usize],
    pad: &PadType,
    dilations: &[usize],
    groups: usize,
) -> R<Tensor> {
    let xd = float_data(x, "x")?;
    let wd = float_data(w, "weight")?;
    let sr = x.rank().saturating_sub(2);
    if !(sr == 1 || sr == 2) || w.rank() != x.rank() {
        return Err(shape_err(format!(
            "conv supports 1-D and 2-D: x {:?}, weight {:?}",
            x.shape(),
            w.shape()
        )));
    }
    // Lift 1-D to 2-D with H = 1.
    let (xs, ws, st, dl, pads) = {
        let mut xs = x.shape().to_vec();
        let mut ws = w.shape().to_vec();
        let mut st = strides_.to_vec();
        let mut dl = dilations.to_vec();
        let mut pad = pad.clone();
        if st.len() != sr || dl.len() != sr {
            return Err(shape_err(format!(
                "strides {st:?} / dilations {dl:?} need {sr} entries"
            )));
        }
        if sr == 1 {
            xs.insert(2, 1);
            ws.insert(2, 1);
            st.insert(0, 1);
            dl.insert(0, 1);
            if let PadType::Custom(p) = &pad {
                let mut q = vec![0, 0];
                q.extend(p);
                pad = PadType::Custom(q);
            }
        }
        (xs, ws, st, dl, pad)
    };
    let (n, cin, h, wi) = (xs[0], xs[1], xs[2], xs[3]);
    let (cout, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    if groups == 0 || cin % groups != 0 || cout % groups != 0 || cg * groups != cin {
        return Err(shape_err(format!(
            "groups {groups}: x has {cin} channels, weight {:?}",
            w.shape()
        )));
    }
    if st.contains(&0) || dl.contains(&0) {
        return Err(OpProblem::BadValue {
            param: "strides".into(),
            value: format!("{st:?} / dilations {dl:?}"),
            why: "must be positive".into(),
        });
    }
    if [h, wi, kh, kw].contains(&0) {
        return Err(shape_err(format!(
            "empty spatial or kernel dimension: x {:?}, weight {:?}",
            x.shape(),
            w.shape()
        )));
    }
    let ek = [(kh - 1) * dl[0] + 1, (kw - 1) * dl[1] + 1];
    let ins = [h, wi];
    let mut before = [0usize; 2];
    let mut outs = [0usize; 2];
    for d in 0..2 {
        match &pads {
            PadType::Valid => {
                if ins[d] < ek[d] {
                    return Err(shape_err(format!(
                        "kernel extent {} exceeds input {}",
                        ek[d], ins[d]
                    )));
                }
                outs[d] = (ins[d] - ek[d]) / st[d] + 1;
            }
            PadType::Same | PadType::SameLower => {
                outs[d] = ins[d].div_ceil(st[d]);
                let total = ((outs[d] - 1) * st[d] + ek[d]).saturating_sub(ins[d]);
                before[d] = if pads == PadType::Same {
                    total / 2
                } else {
                    total.div_ceil(2)
                };
            }
            PadType::Custom(p) => {
                if p.len() != 4 {
                    return Err(OpProblem::BadValue {
                        param: "pad".into(),
                        value: format!("{p:?}"),
                        why: format!("needs {} entries", 2 * sr),
                    });
                }
                let padded = ins[d] + p[2 * d] + p[2 * d + 1];
                if padded < ek[d] {
                    return Err(shape_err(format!(
                        "kernel extent {} exceeds padded input {padded}",
                        ek[d]
                    )));
                }
                before[d] = p[2 * d];
                outs[d] = (padded - ek[d]) / st[d] + 1;
            }
        }
    }
    let (oh, ow) = (outs[0], outs[1]);
    let cog = cout / groups;
    let mut out = vec![0f32; n * cout * oh * ow];
    let pointwise = kh == 1 && kw == 1 && st == [1, 1] && before == [0, 0] && oh == h && ow == wi;
    for b in 0..n {
        for g in 0..groups {
            let xg = &xd[(b * cin + g * cg) * h * wi..(b * cin + (g + 1) * cg) * h * wi];
            let wg = &wd[g * cog * cg * kh * kw..(g + 1) * cog * cg * kh * kw];
            let og = &mut out[(b * cout + g * cog) * oh * ow..(b * cout + (g + 1) * cog) * oh * ow];
            if pointwise {
                // 1×1: out[co, p] = Σ_ci w[co, ci] · x[ci, p]
                let xt = transpose2(xg, cg, h * wi);
                og.copy_from_slice(&gemm_nt(wg, &xt, cog, h * wi, cg));
                continue;
            }
            for co in 0..cog {
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut s = 0f32;
                        for ci in 0..cg {
                            for ky in 0..kh {
                                let iy = (y * st[0] + ky * dl[0]) as isize - before[0] as isize;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                for kx in 0..kw {
                                    let ix =
                                        (xo * st[1] + kx * dl[1]) as isize - before[1] as isize;
                                    if ix < 0 || ix >= wi as isize {
                                        continue;
                                    }
                                    s += wg[((co * cg + ci) * kh + ky) * kw + kx]
                                        * xg[(ci * h + iy as usize) * wi + ix as usize];
                                }
                            }
                        }
                        og[(co * oh + y) * ow + xo] = s;
                    }
                }
            }
        }
    }
    if let Some(bt) = bias {
        let bd = float_data(bt, "bias")?;
        if bd.len() != cout {
            return Err(shape_err(format!(
                "bias {:?} does not match Cout {cout}",
                bt.shape()
            )));
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o += bd[(i / (oh * ow)) % cout];
        }
    }
    let shape = if sr == 1 {
        vec![n, cout, ow]
    } else {
        vec![n, cout, oh, ow]
    };
    float_tensor(x.dtype(), shape, out)
}

// ---------------------------------------------------------------- reductions and norms

/// Splits every element's flat index into (index over the kept axes, index over `axes`), both
/// row-major in axis order.
fn split_index(shape: &[usize], axes: &[bool]) -> (Vec<usize>, Vec<usize>, usize, usize) {
    let kept: usize = shape
        .iter()
        .zip(axes)
        .filter(|(_, &r)| !r)
        .map(|(&d, _)| d)
        .product();
    let red: usize = shape
        .iter()
        .zip(axes)
        .filter(|(_, &r)| r)
        .map(|(&d, _)| d)
        .product();
    // strides within the kept / reduced sub-shapes
    let mut ks = vec![0usize; shape.len()];
    let mut rs = vec![0usize; shape.len()];
    let (mut kacc, mut racc) = (1usize, 1usize);
    for i in (0..shape.len()).rev() {
        if axes[i] {
            rs[i] = racc;
            racc *= shape[i];
        } else {
            ks[i] = kacc;
            kacc *= shape[i];
        }
    }
    let outer = strided_index(&ks, shape);
    let inner = strided_index(&rs, shape);
    (outer, inner, kept, red)
}

fn axes_mask(param: &str, axes: Option<&[i64]>, rank: usize) -> R<Vec<bool>> {
    let mut mask = vec![axes.is_none(); rank];
    if let Some(a) = axes {
        for &ax in a {
            mask[norm_axis(param, ax, rank)?] = true;
        }
    }
    Ok(mask)
}

fn reduced_shape(shape: &[usize], mask: &[bool], keep: bool) -> Vec<usize> {
    shape
        .iter()
        .zip(mask)
        .filter_map(|(&d, &m)| match (m, keep) {
            (true, true) => Some(1),
            (true, false) => None,
            (false, _) => Some(d),
        })
        .collect()
}

/// The reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    Mean,
    Max,
}

/// `reduce_sum/mean/max(x, axes, keep_dims)`; `axes = None` reduces over every axis.
pub fn reduce(op: Reduce, x: &Tensor, axes: Option<&[i64]>, keep: bool) -> R<Tensor> {
    let mask = axes_mask("axes", axes, x.rank())?;
    let (outer, _, kept, red) = split_index(x.shape(), &mask);
    let shape = reduced_shape(x.shape(), &mask, keep);
    let vals = x.to_f32_vec();
    let init = match op {
        Reduce::Sum | Reduce::Mean => 0.0,
        Reduce::Max => f32::NEG_INFINITY,
    };
    let mut acc = vec![init; kept];
    for (i, &o) in outer.iter().enumerate() {
        acc[o] = match op {
            Reduce::Sum | Reduce::Mean => acc[o] + vals[i],
            Reduce::Max => acc[o].max(vals[i]),
        };
    }
    if op == Reduce::Mean {
        for a in acc.iter_mut() {
            *a /= red as f32;
        }
    }
    match x.storage() {
        Storage::Float => float_tensor(x.dtype(), shape, acc),
        Storage::Int => int_tensor(x.dtype(), shape, acc.iter().map(|&v| v as i32).collect()),
        Storage::Bool => Err(OpProblem::ParamType {
            param: "x".into(),
            expected: "a float or int tensor".into(),
            got: "bool".into(),
        }),
    }
}

/// `reduce_argmax(x, axis, keep_dims)`: the first index of the maximum, int32.
pub fn argmax(x: &Tensor, axis: i64, keep: bool) -> R<Tensor> {
    let ax = norm_axis("axis", axis, x.rank())?;
    let s = x.shape();
    let outer: usize = s[..ax].iter().product();
    let d = s[ax];
    let inner: usize = s[ax + 1..].iter().product();
    let vals = x.to_f32_vec();
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0usize;
            let mut bv = f32::NEG_INFINITY;
            for j in 0..d {
                let v = vals[(o * d + j) * inner + i];
                if v > bv || (j == 0 && v.is_nan()) {
                    bv = v;
                    best = j;
                }
            }
            out.push(best as i32);
        }
    }
    let mut mask = vec![false; x.rank()];
    mask[ax] = true;
    int_tensor(DType::I32, reduced_shape(s, &mask, keep), out)
}

/// `softmax(x, axis)`, max-subtracted.
pub fn softmax(x: &Tensor, axis: i64) -> R<Tensor> {
    let a = float_data(x, "x")?;
    let ax = norm_axis("axis", axis, x.rank())?;
    let s = x.shape();
    let outer: usize = s[..ax].iter().product();
    let d = s[ax];
    let inner: usize = s[ax + 1..].iter().product();
    let mut out = vec![0f32; a.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * d + j) * inner + i;
            let m = (0..d).map(|j| a[at(j)]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for j in 0..d {
                let e = (a[at(j)] - m).exp();
                out[at(j)] = e;
                sum += e;
            }
            for j in 0..d {
                out[at(j)] /= sum;
            }
        }
    }
    float_tensor(x.dtype(), s.to_vec(), out)
}

/// `layer_norm(x, axes, gamma, beta, epsilon)`: `(x − mean) / sqrt(var + ε) · γ + β` over
/// `axes` (population variance); γ and β have the shape of the normalized axes.
pub fn layer_norm(
    x: &Tensor,
    axes: Option<&[i64]>,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f32,
) -> R<Tensor> {
    let a = float_data(x, "x")?;
    let mask = axes_mask("axes", axes, x.rank())?;
    let (outer, inner, kept, red) = split_index(x.shape(), &mask);
    let g = gamma.map(|t| float_data(t, "gamma")).transpose()?;
    let b = beta.map(|t| float_data(t, "beta")).transpose()?;
    for (name, v) in [("gamma", g), ("beta", b)] {
        if let Some(v) = v {
            if v.len() != red {
                return Err(shape_err(format!(
                    "{name} has {} elements, the normalized axes {red}",
                    v.len()
                )));
            }
        }
    }
    let mut mean = vec![0f32; kept];
    for (i, &o) in outer.iter().enumerate() {
        mean[o] += a[i];
    }
    for m in mean.iter_mut() {
        *m /= red as f32;
    }
    let mut var = vec![0f32; kept];
    for (i, &o) in outer.iter().enumerate() {
        let d = a[i] - mean[o];
        var[o] += d * d;
    }
    let inv: Vec<f32> = var
        .iter()
        .map(|&v| 1.0 / (v / red as f32 + eps).sqrt())
        .collect();
    let out = (0..a.len())
        .map(|i| {
            let o = outer[i];
            let mut y = (a[i] - mean[o]) * inv[o];
            if let Some(g) = g {
                y *= g[inner[i]];
            }
            if let Some(b) = b {
                y += b[inner[i]];
            }
            y
        })
        .collect();
    float_tensor(x.dtype(), x.shape().to_vec(), out)
}

// ---------------------------------------------------------------- shape ops

/// `concat(values, axis, interleave)`.
pub fn concat(values: &[Tensor], axis: i64, interleave: bool) -> R<Tensor> {
    let first = values
        .first()
        .ok_or_else(|| shape_err("concat of no values".into()))?;
    let rank = first.rank();
    let ax = norm_axis("axis", axis, rank)?;
    for v in values {
        let same_rest =
            v.rank() == rank && (0..rank).all(|d| d == ax || v.shape()[d] == first.shape()[d]);
        if !same_rest || (interleave && v.shape() != first.shape()) {
            return Err(shape_err(format!(
                "values {:?} do not fit along axis {ax}{}",
                values
                    .iter()
                    .map(|t| t.shape().to_vec())
                    .collect::<Vec<_>>(),
                if interleave { " (interleave)" } else { "" }
            )));
        }
        if v.storage() != first.storage() {
            return Err(OpProblem::ParamType {
                param: "values".into(),
                expected: first.dtype().mil_name().into(),
                got: v.dtype().mil_name().into(),
            });
        }
    }
    let outer: usize = first.shape()[..ax].iter().product();
    let inner: usize = first.shape()[ax + 1..].iter().product();
    let total: usize = values.iter().map(|v| v.shape()[ax]).sum();
    let mut shape = first.shape().to_vec();
    shape[ax] = total;
    // (value index, flat source index) for each output element
    let mut src: Vec<(usize, usize)> = Vec::with_capacity(outer * total * inner);
    let nv = values.len();
    for o in 0..outer {
        if interleave {
            let d = first.shape()[ax];
            for k in 0..d * nv {
                let (vi, j) = (k % nv, k / nv);
                for i in 0..inner {
                    src.push((vi, (o * d + j) * inner + i));
                }
            }
        } else {
            for (vi, v) in values.iter().enumerate() {
                let d = v.shape()[ax];
                for j in 0..d * inner {
                    src.push((vi, o * d * inner + j));
                }
            }
        }
    }
    let data = match first.storage() {
        Storage::Float => {
            let vs: Vec<&[f32]> = values.iter().filter_map(|v| v.as_f32()).collect();
            Data::Float(src.iter().map(|&(v, i)| vs[v][i]).collect())
        }
        Storage::Int => {
            let vs: Vec<&[i32]> = values.iter().filter_map(|v| v.as_i32()).collect();
            Data::Int(src.iter().map(|&(v, i)| vs[v][i]).collect())
        }
        Storage::Bool => {
            let vs: Vec<&[bool]> = values.iter().filter_map(|v| v.as_bool()).collect();
            Data::Bool(src.iter().map(|&(v, i)| vs[v][i]).collect())
        }
    };
    Tensor::new(first.dtype(), shape, data).map_err(|e| OpProblem::Internal(e.to_string()))
}

/// `split(x, num_splits | split_sizes, axis)`.
pub fn split(
    x: &Tensor,
    num_splits: Option<usize>,
    sizes: Option<&[i64]>,
    axis: i64,
) -> R<Vec<Tensor>> {
    let ax = norm_axis("axis", axis, x.rank())?;
    let d = x.shape()[ax];
    let sizes: Vec<usize> = match (sizes, num_splits) {
        (Some(s), _) => {
            let v: Vec<usize> = s.iter().map(|&v| v.max(0) as usize).collect();
            if v.iter().sum::<usize>() != d || s.iter().any(|&v| v < 0) {
                return Err(OpProblem::BadValue {
                    param: "split_sizes".into(),
                    value: format!("{s:?}"),
                    why: format!("must be non-negative and sum to the axis size {d}"),
                });
            }
            v
        }
        (None, Some(n)) if n > 0 && d % n == 0 => vec![d / n; n],
        (None, n) => {
            return Err(OpProblem::BadValue {
                param: "num_splits".into(),
                value: format!("{n:?}"),
                why: format!("must divide the axis size {d}"),
            })
        }
    };
    let mut out = Vec::with_capacity(sizes.len());
    let mut start = 0usize;
    for s in sizes {
        let mut spec: Vec<(usize, isize, usize)> = x.shape().iter().map(|&n| (0, 1, n)).collect();
        spec[ax] = (start, 1, s);
        out.push(gather_slices(x, &spec)?);
        start += s;
    }
    Ok(out)
}

/// The elements at `(start, step, count)` per axis, as a new tensor of shape `counts`.
fn gather_slices(x: &Tensor, spec: &[(usize, isize, usize)]) -> R<Tensor> {
    let idx = slice_indices(x.shape(), spec);
    Ok(x.take(spec.iter().map(|s| s.2).collect(), &idx)?)
}

fn slice_indices(shape: &[usize], spec: &[(usize, isize, usize)]) -> Vec<usize> {
    let st = strides(shape);
    let counts: Vec<usize> = spec.iter().map(|s| s.2).collect();
    let n: usize = counts.iter().product();
    let mut idx = Vec::with_capacity(n);
    if n == 0 {
        return idx;
    }
    let mut coord = vec![0usize; shape.len()];
    loop {
        let mut flat = 0isize;
        for d in 0..shape.len() {
            flat += (spec[d].0 as isize + coord[d] as isize * spec[d].1) * st[d] as isize;
        }
        idx.push(flat as usize);
        let mut ax = shape.len();
        loop {
            if ax == 0 {
                return idx;
            }
            ax -= 1;
            coord[ax] += 1;
            if coord[ax] < counts[ax] {
                break;
            }
            coord[ax] = 0;
        }
    }
}

/// The parameters of `slice_by_index` / `slice_update`.
pub struct SliceSpec<'a> {
    pub begin: &'a [i64],
    pub end: &'a [i64],
    pub stride: Option<&'a [i64]>,
    pub begin_mask: Option<&'a [bool]>,
    pub end_mask: Option<&'a [bool]>,
    pub squeeze_mask: Option<&'a [bool]>,
}

/// Python slice semantics per axis: `(start, step, count)`, plus the squeezed axes.
/// Per axis `(start, step, count)`.
type Slices = Vec<(usize, isize, usize)>;

fn resolve_slice(shape: &[usize], s: &SliceSpec) -> R<(Slices, Vec<bool>)> {
    let rank = shape.len();
    let check = |name: &str, len: usize| -> R<()> {
        if len != rank {
            return Err(OpProblem::BadValue {
                param: name.into(),
                value: format!("{len} entries"),
                why: format!("x has rank {rank}"),
            });
        }
        Ok(())
    };
    check("begin", s.begin.len())?;
    check("end", s.end.len())?;
    for (n, l) in [
        ("stride", s.stride.map(|v| v.len())),
        ("begin_mask", s.begin_mask.map(|v| v.len())),
        ("end_mask", s.end_mask.map(|v| v.len())),
        ("squeeze_mask", s.squeeze_mask.map(|v| v.len())),
    ] {
        if let Some(l) = l {
            check(n, l)?;
        }
    }
    let mut spec = Vec::with_capacity(rank);
    let mut squeeze = vec![false; rank];
    for d in 0..rank {
        let len = shape[d] as i64;
        let step = s.stride.map_or(1, |v| v[d]);
        if step == 0 {
            return Err(OpProblem::BadValue {
                param: "stride".into(),
                value: "0".into(),
                why: format!("at axis {d}"),
            });
        }
        if s.squeeze_mask.is_some_and(|m| m[d]) {
            let b = if s.begin_mask.is_some_and(|m| m[d]) {
                0
            } else {
                s.begin[d]
            };
            let i = if b < 0 { b + len } else { b };
            if i < 0 || i >= len {
                return Err(OpProblem::IndexOutOfRange {
                    param: "begin".into(),
                    index: b,
                    size: shape[d],
                });
            }
            spec.push((i as usize, 1, 1));
            squeeze[d] = true;
            continue;
        }
        let (start, stop) = if step > 0 {
            let st = if s.begin_mask.is_some_and(|m| m[d]) {
                0
            } else {
                let b = s.begin[d];
                (if b < 0 { b + len } else { b }).clamp(0, len)
            };
            let en = if s.end_mask.is_some_and(|m| m[d]) {
                len
            } else {
                let e = s.end[d];
                (if e < 0 { e + len } else { e }).clamp(0, len)
            };
            (st, en)
        } else {
            let st = if s.begin_mask.is_some_and(|m| m[d]) {
                len - 1
            } else {
                let b = s.begin[d];
                (if b < 0 { b + len } else { b }).clamp(-1, len - 1)
            };
            let en = if s.end_mask.is_some_and(|m| m[d]) {
                -1
            } else {
                let e = s.end[d];
                (if e < 0 { e + len } else { e }).clamp(-1, len - 1)
            };
            (st, en)
        };
        let count = if step > 0 {
            if stop > start {
                (stop - start + step - 1) / step
            } else {
                0
            }
        } else if start > stop {
            (start - stop + (-step) - 1) / (-step)
        } else {
            0
        };
        spec.push((start.max(0) as usize, step as isize, count as usize));
    }
    Ok((spec, squeeze))
}

/// `slice_by_index(x, begin, end, stride, begin_mask, end_mask, squeeze_mask)`.
pub fn slice_by_index(x: &Tensor, s: &SliceSpec) -> R<Tensor> {
    let (spec, squeeze) = resolve_slice(x.shape(), s)?;
    let t = gather_slices(x, &spec)?;
    let shape: Vec<usize> = spec
        .iter()
        .zip(&squeeze)
        .filter(|(_, &q)| !q)
        .map(|(p, _)| p.2)
        .collect();
    t.reshaped(shape)
        .map_err(|e| OpProblem::Internal(e.to_string()))
}

/// `slice_update(x, update, begin, end, …)`: x with the slice replaced by `update` (whose shape
/// is the slice's, with or without the squeezed axes).
pub fn slice_update(x: &Tensor, update: &Tensor, s: &SliceSpec) -> R<Tensor> {
    let (spec, squeeze) = resolve_slice(x.shape(), s)?;
    let full: Vec<usize> = spec.iter().map(|p| p.2).collect();
    let squeezed: Vec<usize> = spec
        .iter()
        .zip(&squeeze)
        .filter(|(_, &q)| !q)
        .map(|(p, _)| p.2)
        .collect();
    if update.shape() != squeezed.as_slice() && update.shape() != full.as_slice() {
        return Err(shape_err(format!(
            "update {:?} does not match the slice shape {squeezed:?} of x {:?}",
            update.shape(),
            x.shape()
        )));
    }
    let idx = slice_indices(x.shape(), &spec);
    let data = match (x.data(), update.data()) {
        (Data::Float(a), Data::Float(u)) => {
            let mut v = a.to_vec();
            for (k, &i) in idx.iter().enumerate() {
                v[i] = u[k];
            }
            Data::Float(v.into())
        }
        (Data::Int(a), Data::Int(u)) => {
            let mut v = a.to_vec();
            for (k, &i) in idx.iter().enumerate() {
                v[i] = u[k];
            }
            Data::Int(v.into())
        }
        (Data::Bool(a), Data::Bool(u)) => {
            let mut v = a.to_vec();
            for (k, &i) in idx.iter().enumerate() {
                v[i] = u[k];
            }
            Data::Bool(v.into())
        }
        _ => {
            return Err(OpProblem::ParamType {
                param: "update".into(),
                expected: x.dtype().mil_name().into(),
                got: update.dtype().mil_name().into(),
            })
        }
    };
    Tensor::new(x.dtype(), x.shape().to_vec(), data).map_err(|e| OpProblem::Internal(e.to_string()))
}

/// `reshape(x, shape)`: one `-1` is inferred; `0` copies the input dimension at that index.
pub fn reshape(x: &Tensor, shape: &[i64]) -> R<Tensor> {
    let mut out = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &d) in shape.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 => out.push(*x.shape().get(i).ok_or_else(|| OpProblem::BadValue {
                param: "shape".into(),
                value: format!("{shape:?}"),
                why: format!("0 at index {i} beyond x's rank {}", x.rank()),
            })?),
            d if d > 0 => out.push(d as usize),
            _ => {
                return Err(OpProblem::BadValue {
                    param: "shape".into(),
                    value: format!("{shape:?}"),
                    why: "dimensions must be positive, 0 or a single -1".into(),
                })
            }
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || x.len() % known != 0 {
            return Err(shape_err(format!(
                "cannot reshape {:?} into {shape:?}",
                x.shape()
            )));
        }
        out[i] = x.len() / known;
    }
    if out.iter().product::<usize>() != x.len() {
        return Err(shape_err(format!(
            "cannot reshape {:?} ({} elements) into {shape:?}",
            x.shape(),
            x.len()
        )));
    }
    x.reshaped(out)
        .map_err(|e| OpProblem::Internal(e.to_string()))
}

/// `transpose(x, perm)`.
pub fn transpose(x: &Tensor, perm: &[i64]) -> R<Tensor> {
    let rank = x.rank();
    let mut p = Vec::with_capacity(rank);
    let mut seen = vec![false; rank];
    if perm.len() != rank {
        return Err(OpProblem::BadValue {
            param: "perm".into(),
            value: format!("{perm:?}"),
            why: format!("x has rank {rank}"),
        });
    }
    for &a in perm {
        let a = norm_axis("perm", a, rank)?;
        if seen[a] {
            return Err(OpProblem::BadValue {
                param: "perm".into(),
                value: format!("{perm:?}"),
                why: "not a permutation".into(),
            });
        }
        seen[a] = true;
        p.push(a);
    }
    let xs = x.shape();
    let st = strides(xs);
    let shape: Vec<usize> = p.iter().map(|&a| xs[a]).collect();
    let permuted: Vec<usize> = p.iter().map(|&a| st[a]).collect();
    let idx = strided_index(&permuted, &shape);
    Ok(x.take(shape, &idx)?)
}

/// `expand_dims(x, axes)`: axes index the output (rank + len(axes)).
pub fn expand_dims(x: &Tensor, axes: &[i64]) -> R<Tensor> {
    let out_rank = x.rank() + axes.len();
    let mut ins = vec![false; out_rank];
    for &a in axes {
        let a = norm_axis("axes", a, out_rank)?;
        if ins[a] {
            return Err(OpProblem::BadValue {
                param: "axes".into(),
                value: format!("{axes:?}"),
                why: "repeated axis".into(),
            });
        }
        ins[a] = true;
    }
    let mut it = x.shape().iter();
    let shape = ins
        .iter()
        .map(|&n| if n { 1 } else { *it.next().unwrap_or(&1) })
        .collect();
    x.reshaped(shape)
        .map_err(|e| OpProblem::Internal(e.to_string()))
}

/// `squeeze(x, axes)`: the given size-1 axes, or every size-1 axis.
pub fn squeeze(x: &Tensor, axes: Option<&[i64]>) -> R<Tensor> {
    let mut drop = vec![false; x.rank()];
    match axes {
        Some(a) => {
            for &ax in a {
                let i = norm_axis("axes", ax, x.rank())?;
                if x.shape()[i] != 1 {
                    return Err(shape_err(format!(
                        "axis {ax} of x {:?} is not 1",
                        x.shape()
                    )));
                }
                drop[i] = true;
            }
        }
        None => {
            for (i, &d) in x.shape().iter().enumerate() {
                drop[i] = d == 1;
            }
        }
    }
    let shape = x
        .shape()
        .iter()
        .zip(&drop)
        .filter(|(_, &d)| !d)
        .map(|(&s, _)| s)
        .collect();
    x.reshaped(shape)
        .map_err(|e| OpProblem::Internal(e.to_string()))
}

/// `gather(x, indices, axis, batch_dims)`: output `D[:axis] + N[batch_dims:] + D[axis+1:]`.
///
/// Indices must be in `[0, D[axis])`: since iOS 17 Core ML treats negative indices as out of
/// bounds (undefined behaviour without `validate_indices`), so they are an error here.
pub fn gather(x: &Tensor, indices: &Tensor, axis: i64, batch_dims: i64) -> R<Tensor> {
    let ind = int_data(indices, "indices")?;
    let ax = norm_axis("axis", axis, x.rank())?;
    let xs = x.shape();
    let is = indices.shape();
    let bd = if batch_dims < 0 {
        batch_dims + is.len() as i64
    } else {
        batch_dims
    };
    if bd < 0
        || bd as usize > ax
        || bd as usize > is.len()
        || xs[..bd as usize] != is[..bd as usize]
    {
        return Err(OpProblem::BadValue {
            param: "batch_dims".into(),
            value: batch_dims.to_string(),
            why: format!(
                "needs batch_dims <= axis {ax} and equal leading dims of x {xs:?} and indices {is:?}"
            ),
        });
    }
    let bd = bd as usize;
    let nb: usize = xs[..bd].iter().product();
    let pre: usize = xs[bd..ax].iter().product();
    let d = xs[ax];
    let post: usize = xs[ax + 1..].iter().product();
    let ni: usize = is[bd..].iter().product();
    let mut src = Vec::with_capacity(nb * pre * ni * post);
    for b in 0..nb {
        for p in 0..pre {
            for j in 0..ni {
                let v = ind[b * ni + j];
                if v < 0 || v as usize >= d {
                    return Err(OpProblem::IndexOutOfRange {
                        param: "indices".into(),
                        index: v as i64,
                        size: d,
                    });
                }
                let base = ((b * pre + p) * d + v as usize) * post;
                src.extend(base..base + post);
            }
        }
    }
    let mut shape = xs[..ax].to_vec();
    shape.extend(&is[bd..]);
    shape.extend(&xs[ax + 1..]);
    Ok(x.take(shape, &src)?)
}

/// `band_part(x, lower, upper)`: keeps `x[..., m, n]` where `(lower < 0 or m − n <= lower)` and
/// `(upper < 0 or n − m <= upper)`, zero elsewhere.
pub fn band_part(x: &Tensor, lower: i64, upper: i64) -> R<Tensor> {
    if x.rank() < 2 {
        return Err(shape_err(format!("x {:?} needs rank >= 2", x.shape())));
    }
    let (m, n) = (x.shape()[x.rank() - 2], x.shape()[x.rank() - 1]);
    let keep = |flat: usize| -> bool {
        let r = ((flat / n) % m) as i64;
        let c = (flat % n) as i64;
        (lower < 0 || r - c <= lower) && (upper < 0 || c - r <= upper)
    };
    let data = match x.data() {
        Data::Float(a) => Data::Float(
            a.iter()
                .enumerate()
                .map(|(i, &v)| if keep(i) { v } else { 0.0 })
                .collect(),
        ),
        Data::Int(a) => Data::Int(
            a.iter()
                .enumerate()
                .map(|(i, &v)| if keep(i) { v } else { 0 })
                .collect(),
        ),
        Data::Bool(a) => Data::Bool(a.iter().enumerate().map(|(i, &v)| keep(i) && v).collect()),
    };
    Tensor::new(x.dtype(), x.shape().to_vec(), data).map_err(|e| OpProblem::Internal(e.to_string()))
}

/// `fill(shape, value)`.
pub fn fill(shape: &[i64], value: &Tensor) -> R<Tensor> {
    if value.len() != 1 {
        return Err(shape_err(format!(
            "value must be a scalar, got {:?}",
            value.shape()
        )));
    }
    if shape.iter().any(|&d| d < 0) {
        return Err(OpProblem::BadValue {
            param: "shape".into(),
            value: format!("{shape:?}"),
            why: "negative dimension".into(),
        });
    }
    let s: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    Ok(value.splat(s)?)
}

/// `tile(x, reps)`.
pub fn tile(x: &Tensor, reps: &[i64]) -> R<Tensor> {
    if reps.len() != x.rank() || reps.iter().any(|&r| r < 1) {
        return Err(OpProblem::BadValue {
            param: "reps".into(),
            value: format!("{reps:?}"),
            why: format!("needs {} positive entries", x.rank()),
        });
    }
    let xs = x.shape();
    let shape: Option<Vec<usize>> = xs
        .iter()
        .zip(reps)
        .map(|(&d, &r)| usize::try_from(r).ok().and_then(|r| d.checked_mul(r)))
        .collect();
    let too_large = || OpProblem::BadValue {
        param: "reps".into(),
        value: format!("{reps:?}"),
        why: format!("tiling {xs:?} gives a tensor too large to allocate"),
    };
    let shape = shape.ok_or_else(too_large)?;
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_large)?;
    let st = strides(xs);
    let mut idx = Vec::new();
    idx.try_reserve_exact(n).map_err(|_| too_large())?;
    let ost = strides(&shape);
    for flat in 0..n {
        let mut s = 0;
        for d in 0..shape.len() {
            let c = (flat / ost[d]) % shape[d];
            s += (c % xs[d]) * st[d];
        }
        idx.push(s);
    }
    Ok(x.take(shape, &idx)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_slices() {
        let s = SliceSpec {
            begin: &[-1],
            end: &[0],
            stride: Some(&[-2]),
            begin_mask: None,
            end_mask: Some(&[true]),
            squeeze_mask: None,
        };
        let (spec, _) = resolve_slice(&[5], &s).unwrap();
        // [4, 2, 0]
        assert_eq!(spec, vec![(4, -2, 3)]);
        let s = SliceSpec {
            begin: &[1],
            end: &[100],
            stride: Some(&[2]),
            begin_mask: None,
            end_mask: None,
            squeeze_mask: None,
        };
        assert_eq!(resolve_slice(&[6], &s).unwrap().0, vec![(1, 2, 3)]);
    }

    #[test]
    fn gemm_nt_small() {
        // [1 2; 3 4] · [5 6; 7 8]ᵀ
        let out = gemm_nt(&[1., 2., 3., 4.], &[5., 6., 7., 8.], 2, 2, 2);
        assert_eq!(out, vec![17., 23., 39., 53.]);
    }
}
