"""The `keras-dropneuron` command line.

Each verb is a module with `add_parser(subparsers)`, which registers its
argparse subcommand, and `run(args)`, which returns the exit status; what the
verbs share (one-line errors, model loading, path checks) is in `common`. A
verb imports `common`, this module imports the verbs, and nothing imports this
module back. Heavy imports (TensorFlow's converters, the experiment harness)
wait until a verb runs, so `keras-dropneuron --help` stays fast.

Example:

    keras-dropneuron slim pruned.keras -o slim.keras --tflite slim.tflite --onnx slim.onnx
    keras-dropneuron report slim.keras
    keras-dropneuron prune model.keras --data train.npz --target-macs 0.5 -o slim.keras
"""

import argparse
import sys

from keras_dropneuron import __version__
from keras_dropneuron.cli import frontier, prune, report, reproduce, slim
from keras_dropneuron.cli.common import PROG, CommandError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser with one subparser per verb.

    Returns:
        The `argparse.ArgumentParser` of `keras-dropneuron`; each verb's parsed
        arguments carry its `handler`.
    """
    parser = argparse.ArgumentParser(
        prog=PROG, description="Structured pruning for Keras (DropNeuron)."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in (slim, prune, report, reproduce, frontier):
        verb.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line.

    Args:
        argv: Arguments without the program name. Defaults to `None`, which
            reads `sys.argv[1:]`.

    Returns:
        The exit status: 0 on success, 1 on a reported error, 2 on a usage
        error.

    Example:

    >>> main(["report", "slim.keras"])
    0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_usage(sys.stderr)
        return 2
    try:
        return args.handler(args)
    except CommandError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
