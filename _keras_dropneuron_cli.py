"""The `keras-dropneuron` command: starts TensorFlow quietly, then runs `keras_dropneuron.cli`.

This module lives outside the `keras_dropneuron` package on purpose. Importing
anything from the package runs `keras_dropneuron/__init__.py`, which imports
Keras and so TensorFlow, and TensorFlow prints its start-up messages while it
loads: only code that runs before that import can quiet them.

`TF_CPP_MIN_LOG_LEVEL` (0 all, 1 no INFO, 2 no WARNING, 3 no ERROR) does not
reach those messages: TensorFlow 2.21 writes them from static initializers,
before it reads the variable, and twice, because two of its native libraries
(`_pywrap_tensorflow_internal` and `_pywrap_profiler_plugin`) each carry their
own copy of that start-up code. So the command captures what TensorFlow writes
to stderr while it loads and finds its devices, and passes on only the messages
at or above the level; anything else written meanwhile passes through.

Unless the user sets `TF_CPP_MIN_LOG_LEVEL`, none of the start-up messages show
(on a machine without a GPU they include an ERROR saying CUDA failed to start),
and afterwards TensorFlow's errors do but its warnings do not
(`TF_CPP_MIN_LOG_LEVEL=2`). A level the user sets applies to both.
"""

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
_SEVERITIES = "IWEF"  # INFO, WARNING, ERROR, FATAL: levels 0 to 3
# A log line of TensorFlow's native code, in absl's format
# (`I0000 00:00:1795775311.579897    3426 port.cc:153] ...`) or in TensorFlow's own
# (`2025-09-17 14:44:05.157831: I external/.../cudart_stub.cc:32] ...`).
_LOG_LINE = re.compile(r"([IWEF])\d{4} [\d:.]+ +\d+ |\d{4}-\d\d-\d\d [\d:.]+: ([IWEF]) ")
_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called"


def _start_up_level(environ):
    value = environ.get(LOG_LEVEL_ENV)
    if value is None:
        return 3
    try:
        return int(value)
    except ValueError:
        return 0


def filter_log(text: str, level: int) -> str:
    """Returns `text` without the native log messages below `level` (0 to 3).

    A line that does not start a message continues the one before it (the
    CPU-feature message takes two lines), or is not a log message at all. absl's
    banner ("All log messages before absl::InitializeLog() ...") goes too.

    Args:
        text: What TensorFlow's native code wrote, lines and all.
        level: The lowest severity kept: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL.

    Returns:
        The lines kept, unchanged.
    """
    kept = []
    keep = True
    for line in text.splitlines(keepends=True):
        match = _LOG_LINE.match(line)
        if match:
            keep = _SEVERITIES.index(match.group(1) or match.group(2)) >= level
        elif line.startswith(_ABSL_BANNER):
            keep = False  # about absl, not a message; the ones it precedes decide
        if keep:
            kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def native_stderr_filtered(level: int) -> Iterator[None]:
    """Captures file descriptor 2 and writes back only what `filter_log` keeps.

    Args:
        level: The lowest severity kept (see `filter_log`); at 0, or without a
            stderr to capture, nothing is captured.

    Example:

    >>> with native_stderr_filtered(3):
    ...     import tensorflow
    """
    try:
        saved = os.dup(2) if level > 0 else None
    except OSError:  # no stderr to filter
        saved = None
    if saved is None:
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = filter_log(captured.read().decode(errors="replace"), level)
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def main() -> int:
    """Runs `keras_dropneuron.cli.main` after starting TensorFlow quietly.

    Returns:
        The exit status of the command.
    """
    level = _start_up_level(os.environ)
    os.environ.setdefault(LOG_LEVEL_ENV, "2")
    with native_stderr_filtered(level):
        from keras_dropneuron import cli

        tensorflow = sys.modules.get("tensorflow")
        if tensorflow is not None:
            tensorflow.config.list_physical_devices()  # CUDA's start-up messages
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
