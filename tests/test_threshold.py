import keras
import numpy as np
import pytest

from keras_dropneuron import prune_weights
from keras_dropneuron.threshold import choose_threshold, default_score

L = keras.layers


def test_chooses_the_largest_lossless_threshold_and_leaves_model_alone():
    model = keras.Sequential([keras.Input((8,)), L.Dense(6, "relu"), L.Dense(3)])
    x = np.random.randn(400, 8).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=1)  # the model is perfect on y
    before = [w.copy() for w in model.get_weights()]
    candidates = [1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]
    chosen, scores = choose_threshold(model, x, y, thresholds=candidates)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    def error(threshold):
        trial = keras.models.clone_model(model)
        trial.set_weights(before)
        prune_weights(trial, threshold)
        return float(np.mean(np.argmax(trial.predict(x, verbose=0), axis=1) != y))

    # Brute force: the largest candidate before the first one that loses accuracy.
    expected = 0.0
    for t in candidates:
        if error(t) > 0:
            break
        expected = t
    assert chosen == expected
    assert scores[0.0] == 0.0
    # Every tried threshold is scored with the error of the model pruned there.
    tried = [t for t in candidates if t <= expected] + [t for t in candidates if t > expected][:1]
    assert sorted(scores) == [0.0, *tried]
    for t in tried:
        assert scores[t] == pytest.approx(error(t))
    assert 0.0 < chosen < 1.0  # the model really has prunable and vital weights


def test_stops_before_a_threshold_that_would_empty_a_layer():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(1)])
    model.set_weights(
        [np.full((4, 3), 0.1, "float32"), np.zeros(3, "float32")]
        + [np.full((3, 1), 10.0, "float32"), np.zeros(1, "float32")]
    )
    x = np.random.randn(50, 4).astype("float32")
    # Any tolerance accepts every score; the first layer's weights (0.1) all go
    # at threshold 0.5, which prune_weights refuses.
    chosen, scores = choose_threshold(model, x, x[:, :1], tolerance=1e9, thresholds=[0.05, 0.5, 5])
    assert chosen == 0.05
    assert list(scores) == [0.0, 0.05]


def test_a_negative_tolerance_is_refused():
    model = keras.Sequential([keras.Input((2,)), L.Dense(2)])
    with pytest.raises(ValueError, match="`tolerance`"):
        choose_threshold(model, np.zeros((2, 2)), np.zeros(2), tolerance=-1)


def test_default_score_scores_sequences_per_step():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 6, 3))
    labels = rng.integers(0, 3, size=(40, 6))
    expected = np.mean(np.argmax(scores, axis=-1) != labels)
    assert default_score(labels, scores) == pytest.approx(expected)
    assert default_score(labels[..., None], scores) == pytest.approx(expected)
    values = rng.normal(size=(40, 6, 1))
    targets = rng.normal(size=(40, 6))
    squared_error = np.mean((values[..., 0] - targets) ** 2)
    assert default_score(targets, values) == pytest.approx(squared_error)
    with pytest.raises(ValueError, match=r"`y_true`.*Received: y_true of shape \(40, 5\)"):
        default_score(labels[:, :5], scores)


def test_chooses_a_threshold_for_sequence_outputs():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 4)), L.Dense(8, "relu"), L.Dense(3)])
    x = np.random.randn(40, 6, 4).astype("float32")
    y = np.argmax(model.predict(x, verbose=0), axis=-1)  # (40, 6): the model is perfect on y
    chosen, scores = choose_threshold(model, x, y, thresholds=[1e-3, 1.0, 10.0])
    assert scores[0.0] == 0.0 and chosen >= 1e-3
