"""The package-snippet task: snippets, token ids and the split by file."""

import numpy as np
import pytest

from keras_dropneuron.experiments import stdlib_packages as packages


def test_snippets_join_the_tokens_of_lines_up_to_the_length():
    text = "def f(x):\n\n    return x + 1\n" + "y = 22  # c\n" * 2 + "z\n"
    found = packages.snippets(text, length=12)
    assert found == [
        ("def", "f", "(", "x", ")", ":", "\n", "return", "x", "+", "1"),
        ("y", "=", "22", "#", "c", "\n", "y", "=", "22", "#", "c"),
    ]  # "z" would make 13 tokens: it starts a snippet, under MIN_TOKENS, dropped
    assert packages.snippets("a b\n", length=12) == []
    assert packages.snippets("x " * 40, length=12) == [("x",) * 12]


def test_vocabulary_ranks_by_count_then_token_and_encode_pads():
    texts = [("b", "a", "b"), ("c", "a", "b", "d")]
    ids = packages.vocabulary(texts, size=5)
    assert ids == {"b": 2, "a": 3, "c": 4}  # 3 b, 2 a, then c before d
    encoded = packages.encode([("a", "d", "b"), ("c",) * 6], ids, length=4)
    np.testing.assert_array_equal(encoded, [[3, packages.UNKNOWN, 2, 0], [4, 4, 4, 4]])


def test_package_files_leave_out_tests():
    for package in packages.PACKAGES:
        files = packages.package_files(package)
        assert len(files) >= 4, package
        assert not any({"test", "tests", "idle_test"} & set(f.parts) for f in files)


@pytest.fixture(scope="module")
def small_split():
    return packages.load_package_snippets(per_package=60, test_per_package=20, seed=3)


def test_snippets_are_labelled_with_their_package_and_split_by_file(small_split):
    (x, y), (x_test, y_test) = small_split
    assert x.shape == (8 * 60, packages.SNIPPET_TOKENS) and x_test.shape[0] <= 8 * 20
    np.testing.assert_array_equal(np.bincount(y, minlength=8), [60] * 8)
    for ids in (x, x_test):
        lengths = np.sum(ids != packages.PAD, axis=1)
        assert np.all(lengths >= packages.MIN_TOKENS)
        # Padding only after a snippet's end, so a mask of the zeros covers the padding.
        inside = np.arange(ids.shape[1]) < lengths[:, None]
        np.testing.assert_array_equal(ids != packages.PAD, inside)


def test_the_draw_depends_on_its_seed_only(small_split):
    (x, _), _ = small_split
    (again, _), _ = packages.load_package_snippets(per_package=60, test_per_package=20, seed=3)
    np.testing.assert_array_equal(x, again)
