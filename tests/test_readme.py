"""The README and docs/: the quick start runs as written, links and commands are real."""

import argparse
import re

import keras
import numpy as np
import pytest
from conftest import REPO

import keras_dropneuron

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target ends at whitespace or ")".
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_CODE_BLOCK = re.compile(r"```[a-z]*\n(.*?)```", re.S)


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


def relative_links(text):
    """The link targets of a Markdown text that point into the repository."""
    targets = (match.group(1) for match in _LINK.finditer(text))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def anchors(text):
    """The anchors GitHub gives the headings of a Markdown text."""
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken_links(page):
    """The relative links of `page` whose file, folder or heading does not exist."""
    broken = []
    for target in relative_links(page.read_text()):
        path, _, anchor = target.partition("#")
        file = page.parent / path
        if not file.exists() or (anchor and anchor not in anchors(file.read_text())):
            broken.append(target)
    return broken


def test_relative_links_finds_file_and_image_links_only():
    text = "[a](docs/x.md) ![b](../y.png#z) [c](https://e.org) [d](#top) [e](mailto:x@y.z)"
    assert relative_links(text) == ["docs/x.md", "../y.png#z"]


def test_broken_links_reports_a_missing_target(tmp_path):
    (tmp_path / "there.md").write_text("# Title\n\n## The report: `sparsity_report`\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md#the-report-sparsity_report) [gone](missing.md) "
        "[no heading](there.md#nowhere) [web](https://example.org/x)"
    )
    assert broken_links(page) == ["missing.md", "there.md#nowhere"]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_points_to_a_file(page):
    assert broken_links(page) == []


def verbs_used(text):
    """The `keras-dropneuron <verb>` verbs in the code blocks of a Markdown text."""
    blocks = "\n".join(_CODE_BLOCK.findall(text))
    return set(re.findall(r"keras-dropneuron[ \t]+([a-z][a-z-]*)", blocks))


def cli_verbs():
    """The verbs the command line's parser accepts."""
    from keras_dropneuron.cli import build_parser

    actions = build_parser()._actions
    (verbs,) = [a for a in actions if isinstance(a, argparse._SubParsersAction)]
    return set(verbs.choices)


def test_verbs_used_reads_code_blocks_only():
    text = (
        "keras-dropneuron outside\n```bash\npip install keras-dropneuron\n```\n"
        "```python\nimport keras\n```\n```bash\nkeras-dropneuron slim a.keras\n```\n"
    )
    assert verbs_used(text) == {"slim"}


def test_readme_shows_the_prune_and_slim_commands():
    assert {"prune", "slim"} <= verbs_used((REPO / "README.md").read_text())


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_commands_are_real_verbs(page):
    assert verbs_used(page.read_text()) <= cli_verbs()


def test_readme_names_every_public_name():
    box = (REPO / "README.md").read_text().split("## What is in the box", 1)[1].split("\n## ")[0]
    missing = [name for name in keras_dropneuron.__all__ if f"`{name}" not in box]
    assert missing == []
