"""slim_model's verification sees inside the model and leaves hidden states alone.

A folding error is injected on purpose (a kept unit's bias off by a little)
into models whose last layer hides it: an argmax, a threshold. Verification
compares every tensor the source and slim graphs share, so it must name the
layer. Stateful recurrent layers carry a hidden state that no variable
list holds: verification must leave the user's model where it was and start
the slim model from the same state.
"""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy

from keras_dropneuron import SlimVerificationError, slim_model
from keras_dropneuron.layer_rules.dense import DenseRule

L = keras.layers


def _with_dead_units(model, name, count):
    kernel, bias = model.get_layer(name).get_weights()
    kernel[:, :count], bias[:count] = 0.0, 0.0
    model.get_layer(name).set_weights([kernel, bias])
    return model


def _classifier(ending):
    keras.utils.set_random_seed(0)
    x = keras.Input((12,))
    hidden = L.Dense(16, activation="relu", name="hidden")(x)
    logits = L.Dense(10, name="logits")(hidden)
    return _with_dead_units(keras.Model(x, ending(logits)), "hidden", 4)


ENDINGS = {
    "argmax": lambda t: keras.ops.argmax(t, axis=-1),
    "threshold": lambda t: keras.ops.cast(t > 0.0, "float32"),
}


@pytest.fixture
def biased_logits(monkeypatch):
    """Makes the surgeon copy the `logits` layer with its first bias off by 1e-3."""
    original = DenseRule.slice

    def slice_with_error(self, layer, kept_in, kept_out, fold):
        weights = original(self, layer, kept_in, kept_out, fold)
        if layer.name == "logits":
            weights["bias"] = weights["bias"] + np.eye(len(weights["bias"]))[0] * 1e-3
        return weights

    monkeypatch.setattr(DenseRule, "slice", slice_with_error)


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_an_error_hidden_by_the_last_layer_is_found_inside(ending, biased_logits):
    model = _classifier(ENDINGS[ending])
    with pytest.raises(SlimVerificationError, match="layer 'logits'") as info:
        slim_model(model)
    assert info.value.layer == "logits"
    # The final outputs alone agree on the verification batch: only inside shows it.
    slim = slim_model(model, verify=False)
    x = np.random.default_rng(0).standard_normal((8, 12)).astype("float32")
    np.testing.assert_array_equal(to_numpy(slim(x)), to_numpy(model(x)))


def test_a_correct_slim_model_passes_inside_verification():
    for ending in ENDINGS.values():
        slim = slim_model(_classifier(ending))
        assert slim.get_layer("hidden").units == 12


def _stateful_model(layer):
    keras.utils.set_random_seed(0)
    x = keras.Input((5, 3), batch_size=2)
    hidden = L.Dense(6, activation="relu", name="post")(layer(x))
    model = keras.Model(x, L.Dense(2, name="out")(hidden))
    return _with_dead_units(model, "post", 2)


def _states(layer):
    return [np.array(to_numpy(v)) for v in layer.states]


@pytest.mark.parametrize("cls", [L.LSTM, L.GRU, L.SimpleRNN])
def test_stateful_recurrent_layers_keep_their_state(cls):
    model = _stateful_model(cls(4, stateful=True, name="rnn"))
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((2, 5, 3)).astype("float32") for _ in range(4)]
    model(batches[0])  # the model has run: its state is not the initial one
    before = _states(model.get_layer("rnn"))
    assert max(np.abs(s).max() for s in before) > 0

    slim = slim_model(model)

    assert slim.get_layer("post").units == 4
    for old, new in zip(before, _states(model.get_layer("rnn")), strict=True):
        np.testing.assert_array_equal(old, new)  # the user's model did not move
    for old, new in zip(before, _states(slim.get_layer("rnn")), strict=True):
        np.testing.assert_array_equal(old, new)  # the slim model starts where it stands
    for batch in batches[1:]:  # and both go on together
        np.testing.assert_allclose(to_numpy(slim(batch)), to_numpy(model(batch)), atol=1e-5)
