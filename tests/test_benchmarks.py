"""Runs every benchmark script once in its --tiny configuration so that none of them rots.

Speed is never judged here (the machine is shared and noisy): the measured figures must be
finite and positive, and every derived figure (ratios, shares, fits) must be the stated
formula of the measured ones stored beside it.
"""

import importlib
import json
import math
import sys

import numpy as np
import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # the scripts import their `_common` helpers


def _run(script, tmp_path, capsys, *extra):
    out = tmp_path / f"{script}.json"
    importlib.import_module(script).main(["--tiny", "--repeats", "1", "--out", str(out), *extra])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["environment"]["tensorflow"]
    assert result["rows"]
    return printed, result


def _positive(row, *keys):
    for key in keys:
        assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])


def _is(value, expected, key):
    assert value == pytest.approx(expected, rel=1e-9), (key, value, expected)


def test_training_overhead(tmp_path, capsys):
    printed, result = _run("bench_training_overhead", tmp_path, capsys)
    assert "li_lo/none" in printed and "li_lo/keras_l2" in printed
    for row in result["rows"]:
        _positive(row, "none_ms", "keras_l2_ms", "dn_l2_ms", "li_lo_ms")
        for ratio in ("li_lo/none", "li_lo/keras_l2", "keras_l2/none", "dn_l2/keras_l2"):
            numerator, denominator = ratio.split("/")
            _is(row[ratio], row[f"{numerator}_ms"] / row[f"{denominator}_ms"], ratio)


def test_callback_overhead(tmp_path, capsys):
    printed, result = _run("bench_callback_overhead", tmp_path, capsys)
    assert "share_in_hooks" in printed
    assert [row["model"] for row in result["rows"]] == ["lenet-300-100", "lenet-5"]
    for row in result["rows"]:
        _positive(row, "epoch_with_s", "epoch_without_s", "hooks_s")
        with_s, without_s = row["epoch_with_s"], row["epoch_without_s"]
        _is(row["share_in_hooks"], row["hooks_s"] / with_s, "share_in_hooks")
        assert 0 < row["share_in_hooks"] < 1
        # A difference of noisy medians: any sign.
        _is(row["share_end_to_end"], (with_s - without_s) / with_s, "share_end_to_end")
        assert 0 < row["sparsity"] < 1  # masks were active


def test_inference(tmp_path, capsys):
    printed, result = _run("bench_inference", tmp_path, capsys)
    assert "efficiency" in printed and "unstructured_speedup" in printed
    assert {row["runtime"] for row in result["rows"]} == {"keras", "saved_model", "tflite"}
    (info,) = result["models"]
    assert info["mac_ratio"] > 2 and info["params_slim"] < info["params_masked"]
    # The unstructured mask matches the slim model's non-zero count to within sampling noise.
    assert info["nonzero_unstructured"] == pytest.approx(info["nonzero_slim"], rel=0.2)
    for row in result["rows"]:
        _positive(row, "masked_ms", "slim_ms", "unstructured_ms")
        _is(row["speedup"], row["masked_ms"] / row["slim_ms"], "speedup")
        _is(row["mac_ratio"], info["mac_ratio"], "mac_ratio")
        _is(row["efficiency"], row["speedup"] / info["mac_ratio"], "efficiency")
        _is(row["unstructured_speedup"], row["masked_ms"] / row["unstructured_ms"], "unstructured")
        _is(row["slim_per_s"], 1000 * row["batch"] / row["slim_ms"], "slim_per_s")


def test_inference_of_slimmed_like_rows(tmp_path, capsys):
    """`--slimmed-like`: the slim architecture of a results row, its units checked."""
    import _models
    import keras

    model = _models.resnet20()
    units = {
        layer.name: layer.filters if hasattr(layer, "filters") else layer.units
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)
    }
    for name in [n for n in units if n.endswith("_1_conv")]:
        units[name] //= 2  # the first convolution of each block: its own units only
        units[name.replace("_conv", "_bn")] = units[name]
    row = {"model": "resnet20", "target_macs": 0.5, "seed": 0, "units_after": units}
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"rows": [row]}))
    extra = ("--slimmed-like", str(rows), "--runtimes", "keras")
    _, result = _run("bench_inference", tmp_path, capsys, *extra)
    (info,) = result["models"]
    assert info["model"] == "resnet20@0.5 seed 0"
    # Half of each block's inner filters: its first convolution's MACs, half the second's.
    assert 1.3 < info["mac_ratio"] < 2 and info["params_slim"] < info["params_masked"]
    assert {r["runtime"] for r in result["rows"]} == {"keras"}


def test_surgery(tmp_path, capsys):
    printed, result = _run("bench_surgery", tmp_path, capsys)
    assert "ms/layer" in printed
    for row in result["rows"]:
        _positive(row, "seconds", "seconds_unverified", "peak_mib")
        assert row["params_slim"] < row["params"] and row["exact"]
        verify_share = 1 - row["seconds_unverified"] / row["seconds"]
        _is(row["verify_share"], verify_share, "verify_share")
    mlp = [row for row in result["rows"] if row["family"] == "mlp"]
    slope, _ = np.polyfit([r["layers"] for r in mlp], [r["seconds"] for r in mlp], 1)
    _is(result["fits"]["mlp"]["ms_per_layer"], 1000 * slope, "ms_per_layer")


def test_rounding(tmp_path, capsys):
    printed, result = _run("bench_rounding", tmp_path, capsys)
    assert "time_per_mac_vs_1" in printed
    names = [row["rounding"] for row in result["rows"]]
    assert names == ["round_to=1", "round_to=8", "round_to=16", "round_to=32"]
    base = result["rows"][0]
    for row in result["rows"]:
        _positive(row, "ms", "macs")
        _is(row["time_vs_1"], row["ms"] / base["ms"], "time_vs_1")
        per_mac = (row["ms"] / row["macs"]) / (base["ms"] / base["macs"])
        _is(row["time_per_mac_vs_1"], per_mac, "time_per_mac_vs_1")
    # Rounding keeps dead channels: it can only add multiply-adds.
    macs = [row["macs"] for row in result["rows"]]
    assert macs[0] <= min(macs[1:])


def test_gpu_check_script_runs_in_tiny_mode(tmp_path):
    # CI has no GPU: the CPU-only mode keeps the GPU script from rotting.
    import os
    import subprocess

    env = {**os.environ, "OUT": str(tmp_path)}
    subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--tiny"], check=True, env=env
    )
    device = json.loads((tmp_path / "device.json").read_text())
    assert device["tensorflow"] and isinstance(device["gpus"], list)
    rows = json.loads((tmp_path / "inference.json").read_text())["rows"]
    assert {row["runtime"] for row in rows} == {"keras", "keras_xla", "saved_model"}
    assert json.loads((tmp_path / "training.json").read_text())["rows"]


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_gpu_check_script_runs_on_another_backend_in_tiny_mode(backend, tmp_path):
    import os
    import subprocess

    pytest.importorskip(backend)
    env = {**os.environ, "OUT": str(tmp_path)}
    script = str(REPO / "benchmarks" / "gpu_check.sh")
    subprocess.run(["bash", script, "--backend", backend, "--tiny"], check=True, env=env)
    device = json.loads((tmp_path / f"device_{backend}.json").read_text())
    assert device["backend"] == backend and isinstance(device["gpus"], list)
    inference = json.loads((tmp_path / f"inference_{backend}.json").read_text())
    assert {row["runtime"] for row in inference["rows"]} == {"native"}
    for row in inference["rows"]:
        _positive(row, "speedup")
    assert json.loads((tmp_path / f"training_{backend}.json").read_text())["rows"]


def test_export(tmp_path, capsys):
    printed, result = _run("bench_export", tmp_path, capsys)
    assert "tflite int8" in printed and "vs_original" in printed
    for model in ("lenet-5", "small-resnet"):
        rows = {(r["variant"], r["format"]): r for r in result["rows"] if r["model"] == model}
        assert {("original", "keras"), ("slim", "tflite"), ("slim+int8", "tflite int8")} <= set(
            rows
        )
        original = rows[("original", "keras")]["bytes"]
        for row in rows.values():
            _positive(row, "bytes", "seconds")
            _is(row["vs_original"], row["bytes"] / original, "vs_original")
            assert math.isfinite(row["max_dev"])
        # Float exports compute what the Keras original computes; int8 costs a little.
        assert rows[("slim", "tflite")]["max_dev"] <= 1e-4
        assert rows[("slim+int8", "tflite int8")]["bytes"] < rows[("slim", "tflite")]["bytes"]
    lenet = [r for r in result["rows"] if r["model"] == "lenet-5"]
    assert all(0 <= r["accuracy"] <= 100 for r in lenet)


@pytest.mark.filterwarnings("ignore:BudgetCallback.*not reached:UserWarning")
def test_budget_overhead(tmp_path, capsys):
    printed, result = _run("bench_budget_overhead", tmp_path, capsys, "--repeats", "2")
    assert "step_ratio" in printed
    (row,) = result["rows"]
    _positive(row, "fixed_step_ms", "budget_step_ms")
    _is(row["step_ratio"], row["budget_step_ms"] / row["fixed_step_ms"], "step_ratio")
    assert row["scales"] > 1  # the controller changed the strength between epochs


@pytest.mark.filterwarnings("ignore:BudgetCallback.*not reached:UserWarning")
def test_budget_mnist_runner(tmp_path, capsys):
    out = tmp_path / "budget.jsonl"
    options = ["--nets", "lenet-300-100", "--seeds", "0", "--targets", "0.5"]
    rows = importlib.import_module("budget_mnist").main(["--tiny", *options, "--out", str(out)])
    (line,) = out.read_text().splitlines()
    assert json.loads(line) == rows[0]
    row = rows[0]
    assert row["net"] == "lenet-300-100" and row["target_macs"] == 0.5
    # Random labels in 2 epochs: reached or not, the run says what it reached.
    assert row["status"] == "ok" or row["status"].startswith("BudgetError: target_macs=0.5")
    ratios = row.get("ratios") or {"macs": row["macs_ratio"]}
    assert 0 < ratios["macs"] <= 1
    capsys.readouterr()
    importlib.import_module("budget_mnist").main(["--table", str(out)])
    assert "| lenet-300-100 | 0.5 | penalty | 1 |" in capsys.readouterr().out


def test_distill_mnist(tmp_path, capsys):
    printed, result = _run("distill_mnist", tmp_path, capsys)
    assert "test_accuracy_after" in printed
    assert [row["distill"] for row in result["rows"]] == [False, True]
    for row in result["rows"]:
        # --tiny sets a loose target so that the fine-tuning, with or without distillation, runs.
        assert row["status"] == "ok", row["status"]
        assert 0 < row["macs_ratio"] <= row["target_macs"] == 0.9
        assert 0 <= row["test_accuracy_after"] <= 1


def test_bn_criteria(tmp_path, capsys):
    printed, result = _run("bn_criteria", tmp_path, capsys)
    assert [row["criterion"] for row in result["rows"]] == ["dense", "joint", "scale"]
    for row in result["rows"]:
        _is(row["macs_ratio"], row["slim_macs"] / row["macs"], "macs_ratio")
        assert 0 < row["macs_ratio"] <= 1
        assert row["max_difference"] < 1e-4  # the slim model computes what the pruned one does
    assert result["rows"][0]["macs_ratio"] == 1.0  # nothing to remove in the dense model


def test_trained_start(tmp_path, capsys):
    printed, result = _run("trained_start", tmp_path, capsys)
    assert [row["schedule"] for row in result["rows"]] == ["penalty", "gradual"]
    gradual = result["rows"][1]
    # The ranking's final cut lands within 3% under the target.
    assert 0.97 * gradual["target_macs"] <= gradual["macs_ratio"] <= gradual["target_macs"]
    assert "gradual" in printed


@pytest.mark.filterwarnings("ignore:BudgetCallback.*not reached:UserWarning")
def test_cnn_bn_mnist(tmp_path, capsys):
    printed, result = _run("cnn_bn_mnist", tmp_path, capsys, "--model", "mobilenetv2", "lenet5")
    assert "efficiency" in printed and "drop_points" in printed
    assert [row["model"] for row in result["rows"]] == ["mobilenetv2", "lenet5"]
    for row in result["rows"]:
        # Random labels, a few steps: reached or not, the run says what it reached.
        assert row["status"] == "ok" or row["status"].startswith("BudgetError: target_macs=")
        if "speedup" not in row:
            continue
        _positive(row, "original_ms", "slim_ms", "mac_ratio")
        assert row["mac_ratio"] <= 1
        _is(row["speedup"], row["original_ms"] / row["slim_ms"], "speedup")
        _is(row["efficiency"], row["speedup"] * row["mac_ratio"], "efficiency")
        drop = 100 * (row["test_accuracy_before"] - row["test_accuracy_after"])
        _is(row["drop_points"], drop, "drop_points")
