"""`register_rule`: a user's own layer class gets penalties, pruning, reports and surgery."""

import re

import keras
import numpy as np
import pytest
from backend_utils import to_numpy
from conftest import REPO
from keras import ops

from keras_dropneuron import (
    DropNeuronRegularizer,
    LayerRule,
    PruneCallback,
    SlimVerificationError,
    WeightLayout,
    register_rule,
    regularize_model,
    slim_model,
    sparsity_report,
)
from keras_dropneuron.layer_rules import (
    BARRIER,
    DenseRule,
    registry,
    rule_for,
    supported_layers_table,
)

RNG = np.random.default_rng(0)
DEAD = [0, 3, 5]  # units of "hidden" whose incoming weights are zero from the start


@keras.saving.register_keras_serializable(package="test_register_rule")
class Affine(keras.layers.Layer):
    """`activation(x @ kernel + bias)`: a layer of its own, not a subclass of `Dense`."""

    def __init__(self, units, activation=None, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units),
            initializer="glorot_uniform",
            regularizer=self.kernel_regularizer,
            name="kernel",
        )
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, x):
        return self.activation(ops.matmul(x, self.kernel) + self.bias)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }


class AffineRule(DenseRule):
    """`kernel (in, units)` and `bias (units,)`: unit `j` is column `j`, input `i` row `i`."""

    types = (Affine,)
    weights = (WeightLayout("kernel", "kernel_regularizer", input_axes=(-2,), output_axes=(-1,)),)
    state = ("kernel", "bias")
    width_argument = "units"


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    """Every test starts from the built-in rules and leaves them as they were."""
    monkeypatch.setattr(registry, "_BY_TYPE", dict(registry._BY_TYPE))


def affine_model():
    inputs = keras.Input((6,))
    hidden = Affine(12, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden))
    layer = model.get_layer("hidden")
    kernel = RNG.standard_normal(layer.kernel.shape).astype("float32")
    kernel[:, DEAD] = 0
    layer.kernel.assign(kernel)
    layer.bias.assign(RNG.standard_normal(layer.bias.shape).astype("float32"))
    return model


def alive_columns(kernel):
    return int(np.count_nonzero(np.any(kernel != 0, axis=0)))


def test_register_rule_returns_the_instance_that_rule_for_finds():
    rule = register_rule(Affine, AffineRule)
    assert isinstance(rule, AffineRule)
    assert rule_for(Affine(2)) is rule
    instance = AffineRule()
    assert register_rule(Affine, instance, replace=True) is instance
    assert rule_for(Affine(2)) is instance


def test_registered_class_joins_the_supported_layers_table():
    assert "`Affine`" not in supported_layers_table()
    register_rule(Affine, AffineRule)
    row = "| `Affine` | `kernel[..., j]` | `kernel[..., i, :]` | units removed (`units` lowered) |"
    assert row in supported_layers_table().splitlines()


def test_rule_of_a_subclass_wins_over_its_parent_rule():
    class MyDense(keras.layers.Dense):
        pass

    rule = register_rule(MyDense, AffineRule)
    assert rule_for(MyDense(2)) is rule
    assert isinstance(rule_for(keras.layers.Dense(2)), DenseRule)
    assert not isinstance(rule_for(keras.layers.Dense(2)), AffineRule)


def test_registered_layer_is_regularized_pruned_reported_and_slimmed(tmp_path):
    register_rule(Affine, AffineRule)
    li, lo = 1e-3, 2e-3
    model = regularize_model(affine_model(), li=li, lo=lo)
    hidden = model.get_layer("hidden")
    assert isinstance(hidden.kernel_regularizer, DropNeuronRegularizer)
    kernel = to_numpy(hidden.kernel)
    columns, rows = np.linalg.norm(kernel, axis=0), np.linalg.norm(kernel, axis=1)
    expected = li * columns.sum() + lo * rows.sum()
    penalty = sum(float(to_numpy(loss)) for loss in hidden.losses)
    np.testing.assert_allclose(penalty, expected, rtol=1e-5)

    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x = RNG.standard_normal((32, 6)).astype("float32")
    y = RNG.standard_normal((32, 3)).astype("float32")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[PruneCallback(1e-2)])
    kernel = to_numpy(model.get_layer("hidden").kernel)
    assert np.all(kernel[:, DEAD] == 0)  # the masks held through training

    row = next(r for r in sparsity_report(model).to_list() if r["layer"] == "hidden")
    assert row["units"] == 12
    assert row["units_alive_incoming"] == alive_columns(kernel)
    assert row["nonzero_weights"] == np.count_nonzero(kernel)

    slim, report = slim_model(model, return_report=True)
    assert slim.get_layer("hidden").units == alive_columns(kernel) == row["units_after_slim"]
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), rtol=1e-5, atol=1e-5)
    stats = next(r for r in report.to_list() if r["name"] == "hidden")
    assert stats["macs_after"] == 6 * alive_columns(kernel)

    path = tmp_path / "slim.keras"
    slim.save(path)
    loaded = keras.saving.load_model(path, custom_objects={"Affine": Affine})
    assert isinstance(loaded.get_layer("hidden"), Affine)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(slim(x)), rtol=1e-6, atol=1e-6)


def test_unregistered_layer_is_kept_whole():
    model = affine_model()
    assert rule_for(model.get_layer("hidden")) is BARRIER
    regularized = regularize_model(model, li=1e-3)
    assert regularized.get_layer("hidden").kernel_regularizer is None
    assert [row["layer"] for row in sparsity_report(model).to_list()] == ["out"]
    assert slim_model(model).get_layer("hidden").units == 12


def test_rule_that_only_declares_weights_keeps_its_layer_whole():
    class PenaltyOnlyRule(LayerRule):
        weights = AffineRule.weights

    register_rule(Affine, PenaltyOnlyRule)
    model = affine_model()
    assert isinstance(
        regularize_model(model, li=1e-3).get_layer("hidden").kernel_regularizer,
        DropNeuronRegularizer,
    )
    assert slim_model(model).get_layer("hidden").units == 12


def test_layer_class_must_be_a_layer_subclass():
    with pytest.raises(TypeError, match="argument `layer_class`"):
        register_rule("Affine", AffineRule)


def test_layer_class_instance_is_refused():
    with pytest.raises(TypeError, match="argument `layer_class`"):
        register_rule(Affine(2), AffineRule)


def test_rule_must_be_a_layer_rule():
    with pytest.raises(TypeError, match="argument `rule`"):
        register_rule(Affine, keras.layers.Dense)


def test_rule_instance_of_another_type_is_refused():
    with pytest.raises(TypeError, match="argument `rule`"):
        register_rule(Affine, object())


def test_class_with_a_rule_needs_replace():
    register_rule(Affine, AffineRule)
    with pytest.raises(ValueError, match="has the rule AffineRule"):
        register_rule(Affine, AffineRule)


def test_built_in_rule_needs_replace():
    with pytest.raises(ValueError, match="has the rule DenseRule"):
        register_rule(keras.layers.Dense, AffineRule)


def test_replace_must_be_a_bool():
    with pytest.raises(TypeError, match="argument `replace`"):
        register_rule(Affine, AffineRule, replace="yes")


def test_the_worked_example_of_the_docs_runs_as_written(tmp_path, monkeypatch):
    text = (REPO / "docs" / "custom_layers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 4
    monkeypatch.chdir(tmp_path)  # the example writes slim.keras
    namespace = {}
    exec(compile("\n".join(blocks[:3]), "custom_layers.md", "exec"), namespace)
    model, slim, x = namespace["model"], namespace["slim"], namespace["x"]
    hidden = model.get_layer("hidden")
    alive = alive_columns(to_numpy(hidden.kernel))
    assert alive < 12  # the penalty removed units of the user's own layer
    assert slim.get_layer("hidden").units == alive
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), rtol=1e-5, atol=1e-5)
    loaded = keras.saving.load_model(tmp_path / "slim.keras")
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(slim(x)), rtol=1e-6, atol=1e-6)


def test_the_transformer_block_example_of_the_docs_runs_as_written(tmp_path):
    from keras_dropneuron.layer_rules import registry

    text = (REPO / "docs" / "custom_layers.md").read_text()
    block = re.findall(r"```python\n(.*?)```", text, re.S)[3]
    namespace = {"keras": keras, "register_rule": register_rule, "slim_model": slim_model}
    try:
        exec(compile(block, "custom_layers.md", "exec"), namespace)
    finally:
        registry._BY_TYPE.pop(namespace.get("ResidualMLP"), None)
    mlp, slim = namespace["mlp"], namespace["slim_mlp"]
    assert slim.get_layer("block").down.kernel.shape == (20, 8)
    x = np.random.default_rng(0).standard_normal((4, 8)).astype("float32")
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(mlp(x)), rtol=1e-5, atol=1e-5)
    slim.save(tmp_path / "slim.keras")
    loaded = keras.saving.load_model(tmp_path / "slim.keras")
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(slim(x)), atol=1e-6)


@keras.saving.register_keras_serializable(package="test_register_rule")
class Project(keras.layers.Layer):
    """`x @ kernel`: a Dense-like layer without a bias and without `use_bias`."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

    def call(self, x):
        return ops.matmul(x, self.kernel)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class ProjectRule(DenseRule):
    types = (Project,)
    weights = (WeightLayout("kernel", "kernel_regularizer", input_axes=(-2,), output_axes=(-1,)),)
    state = ("kernel",)
    width_argument = "units"


@pytest.mark.parametrize("bias", [1.0, 0.0])
def test_bias_free_layer_keeps_a_dead_unit_whose_constant_it_cannot_absorb(bias):
    register_rule(Project, ProjectRule)
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(4, activation="relu", name="dense")
    model = keras.Model(inputs, Project(2, name="project")(dense(inputs)))
    kernel = RNG.standard_normal((3, 4)).astype("float32")
    kernel[:, 0] = 0  # unit 0 is the constant relu(bias[0])
    dense.kernel.assign(kernel)
    dense.bias.assign(np.array([bias, 0.1, 0.2, 0.3], dtype="float32"))
    x = RNG.standard_normal((16, 3)).astype("float32")
    slim = slim_model(model)
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), rtol=1e-5, atol=1e-5)
    # A constant 1 has nowhere to go; a constant 0 adds nothing and the unit goes.
    assert slim.get_layer("dense").units == (4 if bias else 3)


def test_rule_for_the_base_layer_class_is_refused():
    with pytest.raises(ValueError, match="argument `layer_class`.*Received: layer_class=Layer"):
        register_rule(keras.layers.Layer, AffineRule)


def test_rule_class_that_needs_arguments_is_refused():
    class NeedsArgument(AffineRule):
        def __init__(self, scale):
            self.scale = scale

    with pytest.raises(TypeError, match="argument `rule`.*NeedsArgument"):
        register_rule(Affine, NeedsArgument)


@pytest.mark.parametrize("step", ["regularize", "report", "slim"])
def test_rule_whose_weights_the_layer_lacks_is_named(step):
    class WrongWeightRule(AffineRule):
        weights = (WeightLayout("weight", "kernel_regularizer", (-2,), (-1,)),)

    register_rule(Affine, WrongWeightRule)
    model = affine_model()
    run = {"regularize": regularize_model, "report": sparsity_report, "slim": slim_model}[step]
    with pytest.raises(ValueError, match="'hidden'.*`weight`.*WrongWeightRule"):
        run(model) if step != "regularize" else run(model, li=1e-3)


@keras.saving.register_keras_serializable(package="test_register_rule")
class DoubledDense(keras.layers.Dense):
    """A Dense whose output is doubled: not what a plain Dense rule describes."""

    def call(self, x):
        return 2.0 * super().call(x)


def test_verification_names_the_registered_rule_that_misdescribes_its_layer():
    class DoubledDenseRule(DenseRule):
        types = (DoubledDense,)

    register_rule(DoubledDense, DoubledDenseRule)
    inputs = keras.Input((3,))
    doubled = DoubledDense(4, activation="relu", name="doubled")
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(doubled(inputs)))
    doubled.kernel.assign(np.concatenate([np.zeros((3, 1)), np.ones((3, 3))], 1))
    doubled.bias.assign(np.ones(4))  # unit 0: the rule folds relu(1), the layer gives 2
    with pytest.raises(SlimVerificationError, match="register_rule.*DoubledDense"):
        slim_model(model)


def test_layer_without_the_regularizer_argument_is_named():
    register_rule(Project, ProjectRule)  # Project takes no kernel_regularizer
    inputs = keras.Input((3,))
    model = keras.Model(inputs, Project(2, name="project")(inputs))
    with pytest.raises(ValueError, match="'project'.*takes kernel_regularizer"):
        regularize_model(model, li=1e-3)
