#!/usr/bin/env python3
"""Compare anec's LUT palettization with coremltools' on the same fp16 matrices.

Runs coremltools' own k-means LUT function (the one `palettize_weights(mode="kmeans")` calls,
`coremltools.models.neural_network.quantization_utils._get_kmeans_lookup_table_and_weight`)
per group of output rows, casts its LUT to fp16 as `palettize_weights` does, and reports its SNR
and time next to anec's, group by group. Exits 1 if anec is worse than coremltools on any group.

Inputs come from the Rust benchmark (same synthetic matrices, LUT.md §3):

    cargo run --release --example lut_bench -- --dump /tmp/lutcmp
    /work/.venv-coreml/bin/python tools/lut_vs_coremltools.py /tmp/lutcmp

`--cases 4,8 6,8` limits the cases; `--groups N` times only the first N groups (SNR on those).
coremltools' results are cached in DIR/coremltools.json (per case, per group); `--rerun`
recomputes them.
"""

import argparse
import json
import logging
import math
import os
import sys
import time

import numpy as np

logging.disable(logging.WARNING)
from coremltools.models.neural_network.quantization_utils import (  # noqa: E402
    _get_kmeans_lookup_table_and_weight,
)


def snr_db(signal, noise):
    return math.inf if noise <= 0 else 10.0 * math.log10(signal / noise)


def coremltools_case(w16, bits, group, max_groups):
    rows = w16.shape[0]
    g = rows if group is None else group
    n_groups = rows // g
    if max_groups:
        n_groups = min(n_groups, max_groups)
    sse = sig = 0.0
    per_group = []
    t0 = time.perf_counter()
    for i in range(n_groups):
        block = w16[i * g:(i + 1) * g]
        lut, idx = _get_kmeans_lookup_table_and_weight(bits, block)
        q = lut.astype(np.float16)[np.asarray(idx).reshape(-1)].astype(np.float64)
        x = block.reshape(-1).astype(np.float64)
        e = float(np.sum((x - q) ** 2))
        s = float(np.sum(x * x))
        sse += e
        sig += s
        per_group.append(snr_db(s, e))
    return time.perf_counter() - t0, snr_db(sig, sse), per_group


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--cases", nargs="*", default=["4,8", "6,8", "4,tensor", "6,tensor"])
    ap.add_argument("--groups", type=int, default=0)
    ap.add_argument("--json", help="also write the comparison here")
    ap.add_argument("--rerun", action="store_true", help="ignore cached coremltools results")
    a = ap.parse_args()

    cache_path = os.path.join(a.dir, "coremltools.json")
    cache = {} if a.rerun or not os.path.exists(cache_path) else json.load(open(cache_path))

    ours = json.load(open(os.path.join(a.dir, "ours.json")))
    rows_out = []
    worse = 0
    print(f"{'data':<16} {'lut':<9} {'cml s':>8} {'ours s':>8} {'cml SNR':>8} {'ours SNR':>9} {'Δ dB':>7} "
          f"{'groups':>6} {'ours<cml':>8} {'min Δ grp':>9}")
    for data in ["bf16_origin_f16", "fp16_native_f16"]:
        w16 = np.load(os.path.join(a.dir, data + ".npy")).view(np.float16)
        for case in a.cases:
            b, g = case.split(",")
            bits, group = int(b), (None if g == "tensor" else int(g))
            mine = next(c for c in ours["cases"] if c["data"] == data and c["bits"] == bits and c["group"] == group)
            key = f"{data}/{case}/{a.groups}"
            if key not in cache:
                secs, snr, per_group = coremltools_case(w16, bits, group, a.groups)
                cache[key] = dict(seconds=secs, snr_db=snr, group_snr_db=[None if math.isinf(v) else v for v in per_group])
                json.dump(cache, open(cache_path, "w"))
            c = cache[key]
            secs, snr = c["seconds"], c["snr_db"]
            per_group = [math.inf if v is None else v for v in c["group_snr_db"]]
            our_groups = [math.inf if v is None else v for v in mine["group_snr_db"][: len(per_group)]]
            deltas = [o - c for o, c in zip(our_groups, per_group) if not (math.isinf(o) and math.isinf(c))]
            n_worse = sum(1 for d in deltas if d < -1e-9)
            worse += n_worse
            if a.groups:
                # SNR over the timed groups only, from per-group SNRs is not additive: report mean Δ.
                our_snr = float("nan")
            else:
                our_snr = mine["snr_db"] if mine["snr_db"] is not None else math.inf
            min_d = min(deltas) if deltas else 0.0
            print(f"{data:<16} {case:<9} {secs:>8.2f} {mine['seconds']:>8.3f} {snr:>8.3f} {our_snr:>9.3f} "
                  f"{our_snr - snr:>7.3f} {len(per_group):>6} {n_worse:>8} {min_d:>9.4f}", flush=True)
            rows_out.append(dict(data=data, lut=case, coremltools_seconds=secs, ours_seconds=mine["seconds"],
                                 coremltools_snr_db=snr, ours_snr_db=our_snr, groups=len(per_group),
                                 groups_ours_worse=n_worse, min_group_delta_db=min_d))
    if a.json:
        json.dump(rows_out, open(a.json, "w"), indent=1)
    if worse:
        print(f"FAIL: anec worse than coremltools on {worse} group(s)")
        return 1
    print("OK: anec is never worse than coremltools on any group")
    return 0


if __name__ == "__main__":
    sys.exit(main())
