"""Fine-tuning's learning rate: cosine decay to zero over the fine-tuning `fit`.

After the cuts, a constant learning rate leaves the weights, and with them the
moving statistics of BatchNormalization, still moving when fine-tuning stops;
a rate that decays to zero lets both settle (the usual recipe after pruning:
Zhu and Gupta 2017, Torch-Pruning's examples).
"""

import math

import keras

from keras_dropneuron import checks, keras_internals

FINETUNE_SCHEDULES = ("cosine", "constant")


def check_finetune_schedule(value: object) -> str:
    """`value` if it is one of `FINETUNE_SCHEDULES`, else a `ValueError` naming it."""
    return checks.check_choice("finetune_schedule", value, FINETUNE_SCHEDULES)


def cosine_rate(initial: float, step: int, total: int) -> float:
    """The rate at `step` of `total`: `initial * (1 + cos(pi * step / total)) / 2`."""
    return initial * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


class CosineAnneal(keras.callbacks.Callback):
    """Decays the optimizer's learning rate from its value to 0 over one `fit`.

    Per batch, by `cosine_rate`; the rate is restored when the `fit` ends. An
    optimizer built with a `LearningRateSchedule` keeps its own schedule (its
    rate cannot be set). The rate in use is written into `logs` as
    `learning_rate`, as Keras's `LearningRateScheduler` does.
    """

    def __init__(self):
        super().__init__()
        self._initial = None
        self._step = 0
        self._total = 1

    def on_train_begin(self, logs: dict | None = None) -> None:
        optimizer = self.model.optimizer
        if keras_internals.learning_rate_schedule(optimizer) is not None:
            self._initial = None  # the user's schedule rules
            return
        self._initial = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        steps = self.params.get("steps") or 1
        self._total = max(1, steps * self.params.get("epochs", 1))
        self._step = 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self._initial is not None:
            self.model.optimizer.learning_rate = cosine_rate(
                self._initial, self._step, self._total
            )
            self._step += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._initial is not None and logs is not None:
            rate = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._initial is not None:
            self.model.optimizer.learning_rate = self._initial
