"""When a callback's events fall: at the end of every epoch, or every `n` batches."""


class EventSchedule:
    """Counts epochs and training batches and says when an event is due.

    With `steps_per_execution=k` Keras calls the batch hook once per `k`
    batches, with `batch` the index of the execution's last batch; a shorter
    last execution still reports `first + k - 1`, so the count is clipped to
    the epoch's length (when Keras knows it: not for a dataset of unknown
    length without `steps_per_epoch`). A call that passes several multiples
    of `frequency` is one event.

    Args:
        frequency: `"epoch"`, or an int `n`: an event after every `n`
            training batches, counted over the whole run (across epochs).
        warmup_epochs: Epochs without events at the start.

    Attributes:
        epoch: The epoch under way (0 before the first).
    """

    def __init__(self, frequency: str | int, warmup_epochs: int):
        self.frequency = frequency
        self.warmup_epochs = warmup_epochs
        self.epoch = 0
        self._batches_seen = 0
        self._epoch_batches_done = 0

    @property
    def per_epoch(self) -> bool:
        """Whether events fall at epoch ends (else every `frequency` batches)."""
        return self.frequency == "epoch"

    @property
    def started(self) -> bool:
        """Whether the warm-up is over."""
        return self.epoch >= self.warmup_epochs

    def reset(self) -> None:
        """Starts counting batches afresh (a new `fit`)."""
        self._batches_seen = 0

    def begin_epoch(self, epoch: int) -> None:
        """Records the start of `epoch`."""
        self.epoch = epoch
        self._epoch_batches_done = 0

    def resumes_after_event(self, epoch: int) -> bool:
        """Whether a run that starts at `epoch` follows an epoch-end event (a resumed run)."""
        return epoch > 0 and self.per_epoch and epoch - 1 >= self.warmup_epochs

    def epoch_event(self) -> bool:
        """Whether the end of the current epoch is an event."""
        return self.per_epoch and self.started

    def batch_event(self, batch: int, steps: int | None) -> bool:
        """Counts the batches up to index `batch`; whether an event is due after them.

        Args:
            batch: The index, in its epoch, of the last batch run.
            steps: The batches of an epoch, or `None` when unknown.

        Returns:
            `True` when the count passed a multiple of `frequency` (and the
            warm-up is over).
        """
        if self.per_epoch:
            return False
        done = min(batch + 1, steps) if steps else batch + 1
        before = self._batches_seen
        self._batches_seen += max(done - self._epoch_batches_done, 0)
        self._epoch_batches_done = done
        passed = self._batches_seen // self.frequency > before // self.frequency
        return passed and self.started
