"""Which standard-library package a snippet of Python is from: a sequence task, no download.

A snippet is the tokens of consecutive source lines of one file (names,
numbers and single symbols, a newline token between lines), as many lines
as fit in `SNIPPET_TOKENS` tokens; its label is the file's top-level package
(one of `PACKAGES`). Tokens are ids: the `VOCABULARY - 2` most frequent
training tokens are 2 and up, any other token is 1, and 0 pads a snippet to
`SNIPPET_TOKENS`, so the snippets have different lengths and a model reads
them through a mask (`mask_zero=True`).

The files of each package are split, never its snippets: every
`test_every`-th file (sorted by path) is a test file, so the test snippets
come from code the model never read.
"""

import collections
import pathlib
import re
import sysconfig

import numpy as np

from keras_dropneuron.experiments.stdlib_corpus import stdlib_files

# Packages of the standard library in Python 3.10 to 3.13, each of a dozen files or more.
PACKAGES = (
    "asyncio",
    "email",
    "idlelib",
    "importlib",
    "multiprocessing",
    "tkinter",
    "unittest",
    "xml",
)
SNIPPET_TOKENS = 32
MIN_TOKENS = 8  # shorter snippets (a lone `else:`) say little about their package
VOCABULARY = 4000  # padding, unknown, and the most frequent training tokens
PAD, UNKNOWN = 0, 1
NEWLINE = "\n"
TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|\S")

Snippet = tuple[str, ...]


def package_files(package: str, root: str | pathlib.Path | None = None) -> list[pathlib.Path]:
    """The package's `*.py` files, sorted, without its tests (`stdlib_corpus.stdlib_files`).

    Test suites stay out: their code looks alike whatever the package.
    """
    return stdlib_files(pathlib.Path(root or sysconfig.get_paths()["stdlib"]) / package)


def snippets(text: str, length: int = SNIPPET_TOKENS) -> list[Snippet]:
    """The tokens of consecutive non-blank lines of `text`, up to `length` per snippet.

    Lines are joined by a `NEWLINE` token; a line of more than `length`
    tokens is cut to `length`; a snippet of fewer than `MIN_TOKENS` tokens
    is dropped.
    """
    found, current = [], []
    for line in text.splitlines():
        tokens = TOKEN.findall(line)[:length]
        if not tokens:
            continue
        if current and len(current) + 1 + len(tokens) > length:
            found.append(tuple(current))
            current = []
        current = [*current, NEWLINE, *tokens] if current else tokens
    found.append(tuple(current))
    return [s for s in found if len(s) >= MIN_TOKENS]


def vocabulary(texts: list[Snippet], size: int = VOCABULARY) -> dict[str, int]:
    """`{token: id}` for the `size - 2` most frequent tokens of `texts`, ids from 2.

    Ties are broken by the token itself, so the vocabulary depends on the
    snippets only.
    """
    counts = collections.Counter(token for text in texts for token in text)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: size - 2]
    return {token: index + 2 for index, (token, _) in enumerate(ranked)}


def encode(texts: list[Snippet], ids: dict[str, int], length: int = SNIPPET_TOKENS) -> np.ndarray:
    """Token ids of shape `(len(texts), length)`: `UNKNOWN` outside `ids`, `PAD` after the end."""
    encoded = np.full((len(texts), length), PAD, dtype="int32")
    for row, text in enumerate(texts):
        encoded[row, : len(text[:length])] = [ids.get(t, UNKNOWN) for t in text[:length]]
    return encoded


def split_snippets(
    package: str, test_every: int = 4, root: str | pathlib.Path | None = None
) -> dict[str, list[Snippet]]:
    """`{"train": [...], "test": [...]}`: the snippets of the package's training and test files.

    Raises:
        ValueError: If the package has no training or no test file under `root`.
    """
    files = package_files(package, root)
    split = {
        "train": [f for i, f in enumerate(files) if i % test_every],
        "test": files[::test_every],
    }
    for name, chosen in split.items():
        if not chosen:
            raise ValueError(
                f"The standard library at {root or sysconfig.get_paths()['stdlib']} has no "
                f"{name} file of package {package!r} (of {PACKAGES})."
            )
    return {
        name: [
            s
            for path in chosen
            for s in snippets(path.read_text(encoding="utf-8", errors="replace"))
        ]
        for name, chosen in split.items()
    }


def load_package_snippets(
    per_package: int = 4000,
    test_per_package: int = 1000,
    test_every: int = 4,
    seed: int = 0,
    root: str | pathlib.Path | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Snippets of each package's training and test files, with their package's index.

    Each package gives at most `per_package` training and `test_per_package`
    test snippets, drawn without replacement with `seed`; both sets are
    shuffled. The vocabulary is the drawn training snippets'.

    Args:
        per_package: Training snippets per package, at most. Defaults to `4000`.
        test_per_package: Test snippets per package, at most. Defaults to `1000`.
        test_every: Every `test_every`-th file of a package (its first
            included) is a test file. Defaults to `4`.
        seed: Seed of the draw and the shuffle. Defaults to `0`.
        root: The standard library's directory; `None` is this interpreter's.
            Defaults to `None`.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: ids `(n, SNIPPET_TOKENS)` and
        labels in `range(len(PACKAGES))`.

    Raises:
        ValueError: If a package has no training or no test file under `root`.
    """
    rng = np.random.default_rng(seed)
    drawn = {"train": ([], []), "test": ([], [])}
    for label, package in enumerate(PACKAGES):
        split = split_snippets(package, test_every, root)
        for name, limit in (("train", per_package), ("test", test_per_package)):
            chosen = rng.permutation(len(split[name]))[:limit]
            drawn[name][0].extend(split[name][i] for i in chosen)
            drawn[name][1].extend([label] * len(chosen))
    ids = vocabulary(drawn["train"][0])
    arrays = []
    for texts, labels in drawn.values():
        order = rng.permutation(len(texts))
        x = encode([texts[i] for i in order], ids)
        arrays.append((x, np.asarray(labels, dtype="int32")[order]))
    return arrays[0], arrays[1]
