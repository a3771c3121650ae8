"""Tests of tools/ane_report.py's parts that run anywhere: arguments, folder discovery, the
comparison arithmetic, and the clean refusal off macOS. Run: python3 -m unittest discover -s tools
"""

import contextlib
import io
import json
import math
import os
import tempfile
import unittest
from unittest import mock

import ane_report


def write_output(folder, chunks=2, skip=None):
    names = {
        "embeddings": "embeddings.mlpackage",
        "lm_head": "lm_head_lut6.mlpackage",
        "ffn": f"combined_lut6_chunk_01of{chunks:02d}.mlpackage",
    }
    params = dict(names, num_chunks=chunks, context_length=512)
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump({"model_info": {"parameters": params}}, f)
    pkgs = [names["embeddings"], names["lm_head"]] + [
        f"combined_lut6_chunk_{k:02d}of{chunks:02d}.mlpackage" for k in range(1, chunks + 1)
    ]
    for p in pkgs:
        if p != skip:
            os.mkdir(os.path.join(folder, p))


class Arguments(unittest.TestCase):
    def test_defaults(self):
        a = ane_report.parse_args(["out"])
        self.assertEqual((a.output, a.anec, a.compute_units, a.token), ("out", "anec", "ALL", 1))
        self.assertFalse(a.no_infer)

    def test_bad_values_exit_2(self):
        for argv in (["out", "--token", "-1"], ["out", "--compute-units", "NPU"], []):
            with self.assertRaises(SystemExit) as e, contextlib.redirect_stderr(io.StringIO()):
                ane_report.parse_args(argv)
            self.assertEqual(e.exception.code, 2, argv)


class Discovery(unittest.TestCase):
    def test_parts_in_pipeline_order(self):
        with tempfile.TemporaryDirectory() as d:
            write_output(d, chunks=3)
            emb, chunks, head, params = ane_report.discover(d)
            self.assertEqual(os.path.basename(emb), "embeddings.mlpackage")
            self.assertEqual(
                [os.path.basename(c) for c in chunks],
                [f"combined_lut6_chunk_{k:02d}of03.mlpackage" for k in (1, 2, 3)],
            )
            self.assertEqual(os.path.basename(head), "lm_head_lut6.mlpackage")
            self.assertEqual(params["context_length"], 512)

    def test_compiled_names_map_to_their_packages(self):
        with tempfile.TemporaryDirectory() as d:
            write_output(d, chunks=1)
            meta_path = os.path.join(d, "meta.json")
            with open(meta_path) as f:
                meta = json.load(f)
            params = meta["model_info"]["parameters"]
            for key in ("embeddings", "lm_head", "ffn"):
                params[key] = params[key].replace(".mlpackage", ".mlmodelc")
            with open(meta_path, "w") as f:
                json.dump(meta, f)
            emb, chunks, head, _ = ane_report.discover(d)
            self.assertTrue(all(p.endswith(".mlpackage") for p in [emb, *chunks, head]))

    def test_missing_part_and_missing_meta_are_named(self):
        with tempfile.TemporaryDirectory() as d:
            write_output(d, skip="combined_lut6_chunk_02of02.mlpackage")
            with self.assertRaises(SystemExit) as e:
                ane_report.discover(d)
            self.assertIn("chunk_02of02", str(e.exception.code))
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(SystemExit) as e:
                ane_report.discover(d)
            self.assertIn("meta.json", str(e.exception.code))


class Comparison(unittest.TestCase):
    def test_identical(self):
        r = ane_report.compare([1.0, -2.0, 3.0], [1.0, -2.0, 3.0])
        self.assertEqual(r["max_abs"], 0.0)
        self.assertEqual(r["rel_l2"], 0.0)
        self.assertAlmostEqual(r["cosine"], 1.0)
        self.assertTrue(r["top1_match"])

    def test_numbers(self):
        r = ane_report.compare([3.0, 4.0], [3.0, 5.0])
        self.assertEqual(r["max_abs"], 1.0)
        self.assertAlmostEqual(r["rel_l2"], 1.0 / 5.0)
        self.assertAlmostEqual(r["cosine"], (9 + 20) / (5 * math.sqrt(34)))
        self.assertTrue(r["top1_match"])
        self.assertFalse(ane_report.compare([1.0, 0.0], [0.0, 1.0])["top1_match"])

    def test_mismatched_or_empty_inputs_raise(self):
        with self.assertRaises(ValueError):
            ane_report.compare([1.0], [1.0, 2.0])
        with self.assertRaises(ValueError):
            ane_report.compare([], [])


class OffMacOS(unittest.TestCase):
    def test_refuses_with_exit_2(self):
        err = io.StringIO()
        with mock.patch("platform.system", return_value="Linux"), contextlib.redirect_stderr(err):
            code = ane_report.main(["out"])
        self.assertEqual(code, 2)
        self.assertIn("needs macOS", err.getvalue())


if __name__ == "__main__":
    unittest.main()
