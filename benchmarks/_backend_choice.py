"""`--backend` for the benchmark scripts: Keras reads its backend once, when first imported.

A script calls `choose_from_argv()` before it imports Keras (run as a program), and
`add_argument(parser)` / `check(parser, args)` in `main`: imported as a module (the tests
run every script in-process), Keras is already loaded and another backend is refused.
"""

import os
import sys

BACKENDS = ("tensorflow", "jax", "torch")


def _from_argv(argv):
    for i, arg in enumerate(argv):
        if arg == "--backend" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--backend="):
            return arg.split("=", 1)[1]
    return None


def choose_from_argv(argv=None):
    """Sets KERAS_BACKEND from `--backend` on the command line (before Keras is imported)."""
    backend = _from_argv(sys.argv[1:] if argv is None else argv)
    if backend:
        os.environ["KERAS_BACKEND"] = backend


def add_argument(parser):
    import keras

    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=keras.backend.backend(),
        help="Keras backend (default: KERAS_BACKEND, else tensorflow)",
    )


def check(parser, args):
    import keras

    if args.backend != keras.backend.backend():
        parser.error(
            f"--backend {args.backend}: Keras was imported with the "
            f"{keras.backend.backend()!r} backend; run the script as a program"
        )
