"""Fine-tuning by distillation from the original: `distill_fit`, `prune_to_budget(distill=)`."""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy

from keras_dropneuron import prune_to_budget
from keras_dropneuron.budget import pipeline
from keras_dropneuron.budget.distill import distill_fit, distillation_loss
from keras_dropneuron.cli import main

L = keras.layers


def _data(n=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 20)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int32") + (x[:, 3] > 1).astype("int32")
    return x, y  # three classes


def _model(end="dense_softmax", classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    if end == "dense_softmax":
        last = [L.Dense(classes, activation="softmax", name="out")]
    elif end == "softmax_layer":
        last = [L.Dense(classes, name="out"), L.Softmax()]
    else:
        last = [L.Dense(classes, activation=end, name="out")]
    return keras.Sequential([keras.Input((20,)), L.Dense(16, activation="relu", name="h"), *last])


def _softmax(z, temperature=1.0):
    z = z / temperature
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _logits(model, x):
    """The pre-softmax logits of `_model`, in numpy, from its weights."""
    hidden, out = model.get_layer("h"), model.get_layer("out")
    h = np.maximum(x @ to_numpy(hidden.kernel) + to_numpy(hidden.bias), 0)
    return h @ to_numpy(out.kernel) + to_numpy(out.bias)


def _pruned_student(teacher):
    """A copy of `teacher` with about 40% of its kernels' weights set to zero.

    Single weights, not whole units: a dead ReLU unit gets no gradient and
    would stay zero without any holding.
    """
    student = keras.models.clone_model(teacher)
    student.set_weights(teacher.get_weights())
    rng = np.random.default_rng(7)
    for name in ("h", "out"):
        kernel = student.get_layer(name).kernel
        value = to_numpy(kernel)
        kernel.assign(np.where(rng.random(value.shape) < 0.4, 0, value).astype("float32"))
    return student


def test_the_distillation_loss_is_the_tempered_kl():
    rng = np.random.default_rng(1)
    teacher, student = rng.normal(size=(2, 4, 5)).astype("float32") * 3
    loss = distillation_loss(2.5)
    got = float(to_numpy(loss.compute_loss(teacher, student)))
    p, q = _softmax(teacher, 2.5), _softmax(student, 2.5)
    expected = 2.5**2 * np.mean(np.sum(p * np.log(p / q), axis=-1))
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("end", ["dense_softmax", "softmax_layer"])
def test_distill_fit_loss_is_on_the_pre_softmax_logits(end):
    """One full batch, learning rate 0: the logged losses are the formula's, weights unchanged."""
    x, y = _data(64)
    teacher = _model(end)
    student = _pruned_student(teacher)
    student.get_layer("out").kernel.assign(to_numpy(student.get_layer("out").kernel) * 1.7)
    student.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
    history = distill_fit(
        student, teacher, x, y, epochs=1, batch_size=64, temperature=3.0, alpha=0.3
    )
    t, s = _logits(teacher, x), _logits(student, x)
    p, q = _softmax(t, 3.0), _softmax(s, 3.0)
    distillation = 9.0 * np.mean(np.sum(p * np.log(p / q), axis=-1))
    labels = np.mean(-np.log(_softmax(s)[np.arange(len(y)), y]))
    logs = {name: values[-1] for name, values in history.history.items()}
    assert logs["distillation_loss"] == pytest.approx(distillation, rel=1e-4)
    assert logs["student_loss"] == pytest.approx(labels, rel=1e-4)
    assert logs["loss"] == pytest.approx(0.3 * labels + 0.7 * distillation, rel=1e-4)


@pytest.mark.parametrize("end", ["dense_softmax", "softmax_layer"])
def test_distill_fit_keeps_the_zeros_and_gives_back_a_normal_model(end):
    x, y = _data()
    teacher = _model(end)
    teacher.compile("adam", "sparse_categorical_crossentropy")
    teacher.fit(x, y, epochs=2, verbose=0)
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    student = _pruned_student(teacher)
    student.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    before = [to_numpy(v).copy() for v in student.weights]
    zeros = [value == 0 for value in before]
    assert sum(int(z.sum()) for z in zeros) >= 0.3 * (20 * 16 + 16 * 3)

    seen = []

    class Records(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            # The user's callbacks see the student, with its softmax output.
            seen.append((self.model is student, to_numpy(self.model(x[:4])).sum(axis=-1)))

    distill_fit(student, teacher, x, y, epochs=3, batch_size=32, callbacks=[Records()])
    after = [to_numpy(v) for v in student.weights]
    for value, zero in zip(after, zeros, strict=True):
        assert np.all(value[zero] == 0)  # exactly zero
    assert any(
        np.any(value[~zero] != old[~zero])
        for value, zero, old in zip(after, zeros, before, strict=True)
    )
    for w, old in zip(teacher.get_weights(), teacher_weights, strict=True):
        np.testing.assert_array_equal(w, old)
    assert teacher.trainable and all(layer.trainable for layer in teacher.layers)
    assert [is_student for is_student, _ in seen] == [True] * 3
    for _, sums in seen:
        np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
    # A normal model again: its own class, its config a softmax, equal to a fresh copy.
    assert type(student) is keras.Sequential
    fresh = keras.Sequential.from_config(student.get_config())
    fresh.set_weights(student.get_weights())
    out = to_numpy(student.predict(x[:16], verbose=0))
    np.testing.assert_allclose(out, to_numpy(fresh.predict(x[:16], verbose=0)), atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)


def test_prune_to_budget_distills_the_fine_tuning(monkeypatch):
    x, y = _data(1536)
    model = _model("softmax_layer", classes=3)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x[:1024], y[:1024], epochs=5, batch_size=64, verbose=0)
    weights = [w.copy() for w in model.get_weights()]
    calls = []

    def spy(student, teacher, *args, **kwargs):
        calls.append((teacher, kwargs["temperature"], kwargs["alpha"], kwargs["epochs"]))
        return distill_fit(student, teacher, *args, **kwargs)

    monkeypatch.setattr(pipeline, "distill_fit", spy)
    slim, report = prune_to_budget(
        model,
        (x[:1024], y[:1024]),
        (x[1024:], y[1024:]),
        target_units=0.6,
        li=1e-3,
        lo=1e-3,
        epochs=10,
        finetune_epochs=2,
        max_accuracy_drop=0.1,
        batch_size=64,
        distill=True,
        distill_temperature=4.0,
        distill_alpha=0.25,
    )
    assert calls == [(model, 4.0, 0.25, 2)]
    assert report.distillation == {"temperature": 4.0, "alpha": 0.25}
    assert "distillation" in str(report)
    assert report.ratios["units"] <= 0.6
    assert report.slim_report.max_deviation <= report.slim_report.tolerance  # verified
    assert slim.get_layer("h").units < 16
    for w, old in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(w, old)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"distill_temperature": 0.0},
            ValueError,
            r"`distill_temperature`: expected a finite float > 0",
        ),
        (
            {"distill_temperature": -2.0},
            ValueError,
            r"expected a finite float > 0. Received: distill_temperature=-2.0",
        ),
        ({"distill_temperature": float("nan")}, ValueError, r"`distill_temperature`"),
        ({"distill_temperature": "2"}, TypeError, r"`distill_temperature`: expected a float"),
        ({"distill_alpha": 1.5}, ValueError, r"`distill_alpha`: expected a float in \[0, 1\]"),
        ({"distill": "yes"}, TypeError, r"`distill`: expected a bool. Received: distill='yes'"),
    ],
)
def test_bad_distill_arguments_name_themselves(kwargs, error, match):
    x, y = _data(64)
    model = _model()
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(error, match=match):
        prune_to_budget(model, (x, y), (x, y), target_macs=0.5, **kwargs)


def test_a_model_without_class_scores_is_refused_before_training():
    x, y = _data(64)
    model = _model("sigmoid", classes=1)
    model.compile("adam", "binary_crossentropy")
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"argument `model`.*class scores.*sigmoid"):
        prune_to_budget(model, (x, y), (x, y), target_macs=0.5, distill=True)
    for w, old in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(w, old)


def test_a_teacher_that_does_not_match_is_refused():
    x, y = _data(64)
    student = _model(classes=3)
    student.compile("adam", "sparse_categorical_crossentropy")
    teacher = _model(classes=4)
    message = (
        r"argument `teacher`: expected a model whose output shape is the student's, \(None, 3\)"
    )
    with pytest.raises(ValueError, match=message + r".*\(None, 4\)"):
        distill_fit(student, teacher, x, y)
    with pytest.raises(ValueError, match=r"argument `alpha`: expected a float in \[0, 1\]"):
        distill_fit(student, _model(), x, y, alpha=-0.1)


def test_the_cli_flags_reach_prune_to_budget(tmp_path, monkeypatch, capsys):
    from keras_dropneuron import budget

    x, y = _data(64)
    model = _model()
    model.compile("adam", "sparse_categorical_crossentropy")
    path, data = tmp_path / "model.keras", tmp_path / "data.npz"
    model.save(path)
    np.savez(data, x=x, y=y)
    received = []

    def fake(model, train, val, **kwargs):
        received.append(kwargs)
        return model, "the report"

    monkeypatch.setattr(budget, "prune_to_budget", fake)
    command = ["prune", str(path), "--data", str(data), "-o", str(tmp_path / "s.keras")]
    assert main([*command, "--target-macs", "0.5"]) == 0
    assert main([*command, "--target-macs", "0.5", "--distill", "--distill-temperature", "3"]) == 0
    assert main([*command, "--target-macs", "0.5", "--distill", "--distill-alpha", "0.2"]) == 0
    distill = [(k["distill"], k["distill_temperature"], k["distill_alpha"]) for k in received]
    assert distill == [(False, 2.0, 0.5), (True, 3.0, 0.5), (True, 2.0, 0.2)]
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([*command, "--target-macs", "0.5", "--distill-temperature", "0"])
    assert info.value.code == 2
    assert "--distill-temperature: expected a finite float > 0" in capsys.readouterr().err
