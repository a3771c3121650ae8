#!/usr/bin/env python3
"""Differential check of anec's MIL type inference against coremltools (dev tool, not run by CI).

Replays the JSON that `ANEC_MIL_DUMP=/tmp/cases.json cargo test --lib dump_for_coremltools -- --ignored`
writes with pymil's iOS18 ops, compares every inferred output type, and checks that coremltools also
refuses the ops anec refuses. Run with the coremltools 9.0 venv:
    /work/.venv-coreml/bin/python tools/mil_infer_vs_coremltools.py /tmp/cases.json
"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import logging; logging.disable(logging.CRITICAL)
import numpy as np
from coremltools import target
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import Function, types
from coremltools.converters.mil.mil.types.symbolic import is_symbolic
from coremltools.converters.mil.mil import get_new_symbol

NP = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "int8": np.int8, "uint8": np.uint8,
      "int16": np.int16, "uint16": np.uint16, "bool": bool,
      "uint1": types.np_uint1_dtype, "uint2": types.np_uint2_dtype, "uint3": types.np_uint3_dtype,
      "uint4": types.np_uint4_dtype, "uint6": types.np_uint6_dtype, "int4": types.np_int4_dtype}
BT = {"fp16": types.fp16, "fp32": types.fp32, "int32": types.int32, "bool": types.bool}

def val(v):
    if v["dtype"] == "string":
        s = v["values"]
        return s[0] if v["shape"] == [] else np.array(s)
    a = np.array(v["values"], dtype=NP[v["dtype"]]).reshape(v["shape"])
    # the milproto loader turns rank-0 tensors into numpy scalars
    return a[()] if v["shape"] == [] else a

def shape_of(t):
    return tuple(get_new_symbol() if d is None else d for d in t["shape"])

def norm(var):
    st = var.sym_type
    if types.is_tensor(st):
        dt, shape = st.get_primitive(), st.get_shape()
    else:
        dt, shape = st, ()
    return types.builtin_to_string(dt), [None if is_symbolic(d) else int(d) for d in shape]

bad = 0
refused = accepted = 0
total = 0
for fn in json.load(open(sys.argv[1])):
    specs = {}
    for i in fn["inputs"]:
        t = i["type"]
        if t["kind"] == "state":
            specs[i["name"]] = mb.StateTensorSpec(shape=shape_of(t), dtype=BT[t["dtype"]])
        else:
            specs[i["name"]] = mb.TensorSpec(shape=shape_of(t), dtype=BT[t["dtype"]])
    with Function(specs, opset_version=target.iOS18) as f:
        env = dict(f.inputs)
        for op in fn["ops"]:
            kw = {}
            for p, args in op["inputs"].items():
                vs = [env[a["var"]] if "var" in a else val(a["value"]) for a in args]
                kw[p] = vs if p == "values" else vs[0]
            t = op["type"]
            try:
                if t == "const":
                    outs = mb.const(val=val(op["val"]), name=op["name"])
                elif t == "write_state":
                    mb.coreml_update_state(state=kw["input"], value=kw["data"], name=op["name"])
                    outs = []
                else:
                    outs = getattr(mb, t)(name=op["name"], **kw)
            except Exception as e:
                print(f"{fn['name']}/{op['name']} ({t}): coremltools rejects: {e}")
                bad += 1
                continue
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            if len(outs) != len(op["outputs"]):
                print(f"{fn['name']}/{op['name']}: output count {len(outs)} vs {len(op['outputs'])}"); bad += 1
            for o, ours in zip(outs, op["outputs"]):
                total += 1
                env[ours["name"]] = o
                dt, sh = norm(o)
                if dt != ours["type"]["dtype"] or sh != ours["type"]["shape"]:
                    print(f"{fn['name']}/{op['name']} ({t}): coremltools {dt}{sh} vs anec {ours['type']['dtype']}{ours['type']['shape']}")
                    bad += 1
        for op in fn.get("rejected", []):
            kw = {}
            for p, args in op["inputs"].items():
                vs = [env[a["var"]] if "var" in a else val(a["value"]) for a in args]
                kw[p] = vs if p == "values" else vs[0]
            t = op["type"]
            try:
                if t == "write_state":
                    mb.coreml_update_state(state=kw["input"], value=kw["data"], name=op["name"])
                else:
                    getattr(mb, t)(name=op["name"], **kw)
                print(f"{fn['name']}/{op['name']} ({t}): anec rejects, coremltools accepts")
                accepted += 1
            except Exception as e:
                refused += 1
print(f"{total} op outputs compared, {bad} differences; of anec's rejections coremltools refuses {refused}, accepts {accepted}")
sys.exit(1 if bad else 0)
