"""The README's quick start runs as written."""

import re

from conftest import REPO


def _quick_start_code():
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_quick_start_runs_and_finds_the_informative_inputs(capsys):
    namespace = {}
    exec(compile(_quick_start_code(), "README.md", "exec"), namespace)
    from keras_dropneuron import sparsity_report

    first = sparsity_report(namespace["model"]).to_list()[0]
    # The penalty must have removed most of the 45 uninformative inputs.
    assert first["inputs_alive"] < 25
    assert "Sparsity report" in capsys.readouterr().out
