"""Choose the pruning threshold by the paper's own principle."""

import keras
import numpy as np

from keras_dropneuron import model_utils, pruning


def _default_score(y_true, y_pred):
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true)
    if y_pred.ndim == 2 and y_pred.shape[1] > 1 and y_true.size == y_pred.shape[0]:
        return float(np.mean(np.argmax(y_pred, axis=1) != y_true.reshape(-1)))
    return float(np.mean(np.square(y_pred - y_true.reshape(y_pred.shape))))


def choose_threshold(
    model, x, y, tolerance=0.0, thresholds=None, mode="weight", score=None, batch_size=256
):
    """Returns the largest threshold whose pruned model loses nothing on `(x, y)`.

    Dropping principle 1 of DropNeuron: prune with the largest threshold that
    keeps the validation score within `tolerance` of the unpruned model's.
    Each candidate is tried on a copy; `model` is not modified.

    Args:
        model: A Sequential or Functional model.
        x, y: Validation data.
        tolerance: Allowed increase of the score (lower is better).
            Defaults to `0.0`.
        thresholds: Candidates. Defaults to `None`: 25 values from 1e-4 to 1
            on a log scale.
        mode: Pruning mode, see `prune_weights`. Defaults to `"weight"`.
        score: `score(y_true, y_pred) -> float`, lower is better. Defaults to
            `None`: the error rate for class scores with integer labels, else
            the mean squared error.
        batch_size: Prediction batch size. Defaults to `256`.

    Returns:
        `(threshold, scores)`: the chosen threshold (0.0 if none qualifies) and
        a dict mapping every tried threshold to its score. The search stops at
        the first threshold that loses more than `tolerance` or would remove
        every unit of a layer (see `prune_weights`).
    """
    tolerance = pruning.check_threshold(tolerance, name="tolerance")
    model_utils.check_model(model)
    score = score or _default_score
    candidates = np.geomspace(1e-4, 1.0, 25) if thresholds is None else thresholds
    candidates = sorted(pruning.check_threshold(t, name="thresholds") for t in candidates)
    baseline = score(y, model.predict(x, batch_size=batch_size, verbose=0))
    trial = keras.models.clone_model(model)
    scores = {0.0: baseline}
    chosen = 0.0
    for threshold in candidates:
        trial.set_weights(model.get_weights())
        try:
            pruning.prune_weights(trial, threshold, mode=mode)
        except ValueError:
            break  # it would remove every unit of a layer, as would larger ones
        scores[threshold] = score(y, trial.predict(x, batch_size=batch_size, verbose=0))
        if scores[threshold] <= baseline + tolerance:
            chosen = threshold
        else:
            break  # larger thresholds prune a superset and only get worse
    return chosen, scores
