"""The stdlib-lm experiment in quick mode: its figures recomputed from its models.

A GPT-2 causal LM on the standard library's source, pruned to half its
multiply-adds with `BudgetCallback` and slimmed both ways. Every reported
figure is checked against what the returned models compute (perplexity from
the logits, multiply-adds and parameters from the block widths by hand), and
the slim models against the pruned one.
"""

import json
import platform
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_dropneuron.cli import main
from keras_dropneuron.experiments import stdlib_corpus
from keras_dropneuron.experiments.setups import stdlib_lm

QUICK = stdlib_lm.QUICK


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    pytest.importorskip("keras_hub")
    out = tmp_path_factory.mktemp("stdlib_lm")
    result, artifacts = stdlib_lm.run(quick=True, seed=0, out=out)
    return result, artifacts, out


def _block_macs(d, f):
    # Per token: q, k, v, o projections 4 d^2, scores and values at one key
    # position 2 d, feed-forward 2 d f (embeddings and the tied output count 0).
    return 4 * d * d + 2 * d + 2 * d * f


def test_importing_the_library_and_other_experiments_does_not_import_keras_hub():
    code = (
        "import sys, keras_dropneuron, keras_dropneuron.experiments.runner, "
        "keras_dropneuron.experiments.setups.stdlib_lm, keras_dropneuron.cli.reproduce; "
        "from keras_dropneuron.cli.training import ExperimentNames; list(ExperimentNames()); "
        "assert 'keras_hub' not in sys.modules, 'keras_hub imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_lists_it_outside_all_and_refuses_threshold_options(capsys):
    from keras_dropneuron.cli.training import ExperimentNames
    from keras_dropneuron.experiments.setups import SETUPS

    assert "stdlib-lm" in ExperimentNames() and "stdlib-lm" not in SETUPS
    assert main(["reproduce", "stdlib-lm", "--quick", "--method", "proximal"]) == 1
    assert "--method does not apply" in capsys.readouterr().err


def test_corpus_is_split_by_file_and_tokens_round_trip():
    corpus = stdlib_corpus.load_stdlib_corpus(QUICK.max_chars)
    assert corpus.python_version == platform.python_version()
    assert corpus.validation_files and corpus.train_files
    assert not set(corpus.train_files) & set(corpus.validation_files)
    assert all("test" not in name.split("/")[:-1] for name in corpus.train_files)
    assert sum(map(len, corpus.train + corpus.validation)) <= QUICK.max_chars
    proto = stdlib_corpus.train_tokenizer(corpus.train, QUICK.vocabulary_size)
    text = corpus.validation[0]
    ids = stdlib_corpus.encode(proto, [text])
    assert ids[-1] == 2 and ids.max() < QUICK.vocabulary_size
    assert stdlib_corpus.decode(proto, ids) == text  # indentation and newlines kept
    windows = stdlib_corpus.token_windows(ids, 7)
    np.testing.assert_array_equal(windows.ravel(), ids[: windows.size])


@pytest.mark.slow
def test_reported_perplexities_are_exp_of_the_mean_loss(quick_run):
    result, artifacts, _ = quick_run
    validation = artifacts["validation"]
    inputs = {
        "token_ids": validation[:, :-1],
        "padding_mask": np.ones_like(validation[:, :-1], dtype=bool),
    }
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert result["validation_tokens"] == validation[:, 1:].size
    for name, model in artifacts["models"].items():
        logits = model.predict(inputs, batch_size=len(validation), verbose=0)
        nll = float(loss(validation[:, 1:], logits))
        row = result["models"][name]
        assert row["val_nll"] == pytest.approx(nll, rel=1e-5), name
        assert row["val_perplexity"] == pytest.approx(np.exp(row["val_nll"]), rel=1e-12)
    assert result["baseline_val_perplexity"] == result["models"]["baseline"]["val_perplexity"]


@pytest.mark.slow
def test_slim_models_compute_the_pruned_model(quick_run):
    import keras_hub

    result, artifacts, _ = quick_run
    models, validation = artifacts["models"], artifacts["validation"]
    assert type(models["uniform"]) is keras_hub.models.GPT2CausalLM
    assert not isinstance(models["per_layer"], keras_hub.models.CausalLM)
    batch = validation[:16, :-1]
    inputs = {"token_ids": batch, "padding_mask": np.ones_like(batch, dtype=bool)}
    pruned = np.asarray(models["pruned"].predict_on_batch(inputs))
    for name in ("uniform", "per_layer"):
        slim = np.asarray(models[name].predict_on_batch(inputs))
        np.testing.assert_allclose(slim, pruned, atol=1e-4, rtol=1e-4, err_msg=name)
        row = result["models"][name]
        assert row["max_logit_deviation"] < 1e-4
        assert row["val_nll"] == pytest.approx(result["models"]["pruned"]["val_nll"], rel=1e-6)
    assert result["greedy_tokens_identical"]


@pytest.mark.slow
def test_multiply_adds_parameters_and_files_follow_the_widths(quick_run):
    result, artifacts, out = quick_run
    figures = result["models"]
    d, f, layers = QUICK.hidden_dim, QUICK.intermediate_dim, QUICK.num_layers
    full = layers * _block_macs(d, f)
    assert figures["baseline"]["macs"] == full
    per_layer = figures["per_layer"]["block_widths"]
    assert figures["uniform"]["block_widths"] == [max(per_layer)] * layers
    for name, widths in (("uniform", [max(per_layer)] * layers), ("per_layer", per_layer)):
        row = figures[name]
        assert row["macs"] == sum(_block_macs(d, w) for w in widths)
        assert row["macs_ratio"] == pytest.approx(row["macs"] / full, rel=1e-12)
        # Each removed unit takes its up column and bias and its down row.
        removed = sum(f - w for w in widths)
        assert row["params"] == figures["baseline"]["params"] - removed * (2 * d + 1)
        assert row["keras_bytes"] == (out / f"{name}.keras").stat().st_size
        assert row["keras_bytes"] < figures["baseline"]["keras_bytes"]
    # The budget counts the uniform model, which met the target.
    assert result["budget"]["ratios"]["macs"] == pytest.approx(figures["uniform"]["macs_ratio"])
    if result["budget"]["reached_epoch"] is not None:
        assert figures["uniform"]["macs_ratio"] <= QUICK.target_macs
        # The refill revived the narrower blocks' units up to the uniform width.
        assert QUICK.refill and per_layer == [max(per_layer)] * layers
    assert all(speed > 0 for speed in result["speed_tokens_per_s"].values())
    assert json.loads((out / "results.json").read_text()) == result
    assert (out / "results.md").read_text().count("\n| ") == len(figures)
