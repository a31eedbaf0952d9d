"""The keras-hub scale benchmark in its tiny configuration: its own figures add up."""

import importlib
import pathlib
import sys

import pytest

pytest.importorskip("keras_hub")
pytestmark = pytest.mark.tensorflow_only("reads the process's resident memory; CI runs it once")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))


def test_tiny_run_removes_a_quarter_of_the_units(tmp_path):
    bench = importlib.import_module("bench_hub_scale")
    results = bench.main(["--tiny", "--out", str(tmp_path / "hub.json")])
    config = bench.TINY
    width, hidden = config["intermediate"], config["hidden"]
    kept = width - width // 4  # every block loses exactly the units zeroed
    for mode, r in results.items():
        assert r["units_kept"] == [kept] * config["layers"], mode
        # Each unit held an up and a gate column and a down row of `hidden` weights.
        removed = config["layers"] * (width - kept) * 3 * hidden
        assert r["params_before"] - r["params_after"] == removed, mode
        assert r["memory_ratio"] == pytest.approx(r["peak_extra_bytes"] / r["weights_bytes"])
    assert results["verified, uniform widths"]["class"] == "LlamaBackbone"
    assert results["verified, per layer"]["class"] == "Functional"
    assert (tmp_path / "hub.json").exists()
