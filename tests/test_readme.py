"""The README's quick start runs as written."""

import re

import keras
import numpy as np
from conftest import REPO


def _quick_start_code():
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quick_start_runs_and_finds_the_informative_inputs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the quick start writes slim.keras
    namespace = {}
    exec(compile(_quick_start_code(), "README.md", "exec"), namespace)
    from keras_dropneuron import sparsity_report

    first = sparsity_report(namespace["model"]).to_list()[0]
    # The penalty must have removed most of the 45 uninformative inputs.
    assert first["inputs_alive"] < 25
    assert "Sparsity report" in capsys.readouterr().out
    # The slim model computes the same function with fewer parameters.
    model, slim, x = namespace["model"], namespace["slim"], namespace["x"]
    np.testing.assert_allclose(slim.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert slim.count_params() < model.count_params()
    reloaded = keras.saving.load_model(tmp_path / "slim.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), slim.predict(x, verbose=0))
