"""Starting and stopping the Python subprocesses that some tests need."""

import contextlib
import os
import pathlib
import socket
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = pathlib.Path(__file__).resolve().parent


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra):
    """The current environment with this checkout first on PYTHONPATH."""
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        **extra,
    }


def start(args, log, **extra_env):
    """Starts `python ARGS...` with output going to the file `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, *map(str, args)], env=env(**extra_env), stdout=out, stderr=out
        )


def tail(log, chars=3000):
    text = pathlib.Path(log).read_text(errors="replace") if pathlib.Path(log).exists() else ""
    return text[-chars:]


@contextlib.contextmanager
def killed_on_exit(*procs):
    """Kills every process still running when the block ends, even on failure."""
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
