#!/usr/bin/env python3
"""Where Core ML places anec's packages, and whether Core ML computes what anec's CPU run does.

Run on a Mac (macOS 14.4+, coremltools >= 8) over an `anec convert` output folder:

    python3 tools/ane_report.py OUT [--anec PATH] [--compute-units ALL|CPU_AND_NE] [--token N]

1. Placement: each package is compiled and loaded with MLComputePlan; per function it prints
   how many ops each device (ANE, GPU, CPU) gets and the share of the estimated cost, and lists
   the op types that left the Neural Engine.
2. One step: embeddings -> every chunk's `infer` -> LM head for token N at position 0, run by
   Core ML; every part's inputs are also run by `anec run --fp16` (the CPU interpreter that
   `anec verify` uses), and the outputs are compared (max |diff|, relative L2, cosine, top-1).

Off macOS it refuses with exit 2: MLComputePlan and Core ML prediction exist only there.
"""

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile

DEVICE_NAMES = {
    "MLNeuralEngineComputeDevice": "ANE",
    "MLGPUComputeDevice": "GPU",
    "MLCPUComputeDevice": "CPU",
}


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="ane_report.py",
        description="Core ML placement of an anec output folder, and one infer step "
        "compared with anec's CPU execution (macOS only).",
    )
    p.add_argument("output", help="the folder `anec convert` wrote")
    p.add_argument("--anec", default="anec", help="the anec binary [default: anec on PATH]")
    p.add_argument(
        "--compute-units",
        default="ALL",
        choices=["ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY"],
        help="Core ML compute units [default: ALL]",
    )
    p.add_argument("--token", type=int, default=1, help="token id of the compared step")
    p.add_argument("--no-infer", action="store_true", help="placement only")
    args = p.parse_args(argv)
    if args.token < 0:
        p.error(f"--token {args.token}: must be a token id (>= 0)")
    return args


def discover(folder):
    """The parts of an anec output folder in pipeline order: (embeddings, [chunks], lm_head),
    as named by its meta.json, each checked to exist."""
    meta_path = os.path.join(folder, "meta.json")
    if not os.path.isfile(meta_path):
        raise SystemExit(f"ane_report.py: error: {folder}: no meta.json (not an anec output folder)")
    with open(meta_path) as f:
        params = json.load(f)["model_info"]["parameters"]
    n = int(params["num_chunks"])
    first = params["ffn"]
    chunks = [first.replace("_chunk_01of", f"_chunk_{k:02d}of") for k in range(1, n + 1)]
    parts = [params["embeddings"], *chunks, params["lm_head"]]
    # On a Mac meta names the compiled .mlmodelc; the .mlpackage beside it is what anec reads.
    parts = [p[: -len(".mlmodelc")] + ".mlpackage" if p.endswith(".mlmodelc") else p for p in parts]
    paths = [os.path.join(folder, p) for p in parts]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise SystemExit(f"ane_report.py: error: missing {', '.join(missing)}")
    return paths[0], paths[1:-1], paths[-1], params


def compare(reference, candidate):
    """How far `candidate` (Core ML) is from `reference` (anec CPU): max |diff|, relative L2,
    cosine similarity and whether the argmax agrees. Both are flat sequences of numbers."""
    if len(reference) != len(candidate):
        raise ValueError(f"lengths differ: {len(reference)} vs {len(candidate)}")
    if not reference:
        raise ValueError("empty tensors")
    diff = [a - b for a, b in zip(reference, candidate)]
    norm_r = math.sqrt(sum(a * a for a in reference))
    norm_c = math.sqrt(sum(b * b for b in candidate))
    dot = sum(a * b for a, b in zip(reference, candidate))
    cosine = dot / (norm_r * norm_c) if norm_r > 0 and norm_c > 0 else float("nan")
    rel = math.sqrt(sum(d * d for d in diff)) / norm_r if norm_r > 0 else float("nan")

    def argmax(v):
        return max(range(len(v)), key=v.__getitem__)

    return {
        "max_abs": max(abs(d) for d in diff),
        "rel_l2": rel,
        "cosine": cosine,
        "top1_match": argmax(reference) == argmax(candidate),
    }


def placement(ct, path, compute_units):
    """{function: {device: [ops, cost]}} and {function: {op type off the ANE: count}}."""
    from coremltools.models.compute_plan import MLComputePlan

    compiled = ct.utils.compile_model(path)
    plan = MLComputePlan.load_from_path(compiled, compute_units=compute_units)
    per_fn, off_ane = {}, {}
    for name, fn in plan.model_structure.program.functions.items():
        devices, off = {}, {}
        for op in fn.block.operations:
            if op.operator_name == "const":
                continue
            usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
            device = "none"
            if usage is not None:
                device = DEVICE_NAMES.get(type(usage.preferred_compute_device).__name__, "?")
            cost = plan.get_estimated_cost_for_mlprogram_operation(op)
            entry = devices.setdefault(device, [0, 0.0])
            entry[0] += 1
            entry[1] += cost.weight if cost is not None else 0.0
            if device not in ("ANE", "none"):
                off[op.operator_name] = off.get(op.operator_name, 0) + 1
        per_fn[name], off_ane[name] = devices, off
    return per_fn, off_ane


def print_placement(path, per_fn, off_ane):
    print(os.path.basename(path))
    for fn, devices in per_fn.items():
        total = sum(c for _, c in devices.values()) or 1.0
        cells = ", ".join(
            f"{d} {n} ops ({100 * c / total:.1f}% cost)" for d, (n, c) in sorted(devices.items())
        )
        print(f"  {fn}: {cells}")
        if off_ane[fn]:
            ops = ", ".join(f"{k} x{v}" for k, v in sorted(off_ane[fn].items()))
            print(f"    off the ANE: {ops}")


def to_json_tensors(inputs, np):
    out = {}
    for name, a in inputs.items():
        dtype = {"float16": "fp16", "float32": "fp32", "int32": "int32"}[str(a.dtype)]
        out[name] = {"dtype": dtype, "shape": list(a.shape), "data": a.ravel().tolist()}
    return out


def anec_run(anec, path, function, inputs, np):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(to_json_tensors(inputs, np), f)
    try:
        cmd = [anec, "run", path, "--function", function, "--inputs", f.name, "--fp16"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    finally:
        os.unlink(f.name)
    return {k: v["data"] for k, v in json.loads(done.stdout).items()}


def one_step(ct, np, args, embeddings, chunks, lm_head, params):
    """Token `args.token` at position 0 through every part, Core ML against `anec run`."""
    units = getattr(ct.ComputeUnit, args.compute_units)
    c = int(params["context_length"])
    rows = []
    emb = ct.models.MLModel(embeddings, compute_units=units)
    ins = {"input_ids": np.array([[args.token]], dtype=np.int32)}
    hidden = emb.predict(ins)["hidden_states"]
    ours = anec_run(args.anec, embeddings, "main", ins, np)["hidden_states"]
    rows.append((os.path.basename(embeddings), compare(ours, hidden.ravel().tolist())))
    # Row 0 of the causal mask; fp16's lowest value rather than -inf, which JSON cannot carry.
    mask = np.full((1, 1, 1, c), np.finfo(np.float16).min, dtype=np.float16)
    mask[..., 0] = 0
    state = None
    for path in chunks:
        m = ct.models.MLModel(path, compute_units=units, function_name="infer")
        state = state or m.make_state()
        ins = {
            "hidden_states": hidden.astype(np.float16),
            "position_ids": np.array([0], dtype=np.int32),
            "causal_mask": mask,
            "current_pos": np.array([0], dtype=np.int32),
        }
        out = m.predict(ins, state=state)["output_hidden_states"]
        ours = anec_run(args.anec, path, "infer", ins, np)["output_hidden_states"]
        rows.append((os.path.basename(path), compare(ours, out.ravel().tolist())))
        hidden = out
    head = ct.models.MLModel(lm_head, compute_units=units)
    ins = {"hidden_states": hidden.astype(np.float16)}
    outs = head.predict(ins)
    ours = anec_run(args.anec, lm_head, "main", ins, np)
    names = sorted(outs, key=lambda k: (len(k), k))
    theirs = [x for k in names for x in np.asarray(outs[k]).ravel().tolist()]
    mine = [x for k in names for x in ours[k]]
    rows.append((os.path.basename(lm_head), compare(mine, theirs)))
    return rows


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if platform.system() != "Darwin":
        print(
            f"ane_report.py: error: needs macOS (Core ML's MLComputePlan and prediction); "
            f"this is {platform.system()}. Run it on a Mac with coremltools >= 8.",
            file=sys.stderr,
        )
        return 2
    embeddings, chunks, lm_head, params = discover(args.output)
    import coremltools as ct
    import numpy as np

    major = int(ct.__version__.split(".")[0])
    if major < 8:
        print(f"ane_report.py: error: coremltools {ct.__version__} < 8", file=sys.stderr)
        return 2
    units = getattr(ct.ComputeUnit, args.compute_units)
    for path in [embeddings, *chunks, lm_head]:
        print_placement(path, *placement(ct, path, units))
    if not args.no_infer:
        print(f"\none infer step, token {args.token} at position 0: Core ML vs anec run --fp16")
        for name, r in one_step(ct, np, args, embeddings, chunks, lm_head, params):
            print(
                f"  {name}: max|diff| {r['max_abs']:.3g}, rel L2 {r['rel_l2']:.3g}, "
                f"cosine {r['cosine']:.6f}, top-1 {'same' if r['top1_match'] else 'DIFFERENT'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
