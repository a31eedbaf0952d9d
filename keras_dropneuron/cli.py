"""The `keras-dropneuron` command line.

Verbs are argparse subcommands; each one is a `_add_<verb>` function that
registers its parser and a handler returning the exit status.

Example:

    keras-dropneuron slim pruned.keras -o slim.keras --tflite slim.tflite
"""

import argparse
import os
import sys

PROG = "keras-dropneuron"
_MODEL_SUFFIXES = (".keras", ".h5")


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _size(path):
    if os.path.isdir(path):
        return sum(
            os.path.getsize(os.path.join(root, name))
            for root, _, names in os.walk(path)
            for name in names
        )
    return os.path.getsize(path)


def _one_line(error):
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _load_model(path):
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # any failure to read is the same to the user
        raise CommandError(f"cannot load model {path}: {_one_line(error)}") from error


def _check_paths(args):
    if not os.path.isfile(args.input):
        raise CommandError(f"input model not found: {args.input}")
    for path in (args.output, args.saved_model, args.tflite):
        if path and os.path.exists(args.input) and os.path.exists(path):
            if os.path.samefile(path, args.input):
                raise CommandError(f"refusing to overwrite the input model: {path}")
    if not args.output.endswith(_MODEL_SUFFIXES):
        raise CommandError(f"output must end with .keras or .h5, received: {args.output}")
    if args.saved_model and os.path.exists(args.saved_model):
        raise CommandError(f"--saved-model directory already exists: {args.saved_model}")
    if args.threshold < 0 or args.threshold != args.threshold:
        raise CommandError(f"--threshold must be >= 0, received: {args.threshold}")


def _slim(args):
    _check_paths(args)

    from keras_dropneuron.surgery import slim_model
    from keras_dropneuron.surgery.export import export_saved_model, export_tflite

    model = _load_model(args.input)
    try:
        slim, report = slim_model(model, threshold=args.threshold, return_report=True)
    except (TypeError, ValueError) as error:
        raise CommandError(f"unsupported model {args.input}: {_one_line(error)}") from error
    slim.save(args.output)
    print(report)
    sizes = [("model file", args.input, args.output)]
    if args.saved_model:
        export_saved_model(slim, args.saved_model)
        sizes.append(("SavedModel", None, args.saved_model))
    if args.tflite:
        export_tflite(slim, args.tflite)
        sizes.append(("TFLite file", None, args.tflite))
    for label, before, after in sizes:
        if before:
            print(f"{label}: {_size(before):,} -> {_size(after):,} bytes ({after})")
        else:
            print(f"{label}: {_size(after):,} bytes ({after})")
    return 0


def _add_slim(subparsers):
    parser = subparsers.add_parser(
        "slim",
        help="rebuild a pruned model without its dead units",
        description="Removes provably dead units from a saved Keras model and "
        "prints a per-layer report with file sizes before and after.",
    )
    parser.add_argument("input", help="pruned model (.keras or .h5)")
    parser.add_argument("-o", "--output", required=True, help="slim model path")
    parser.add_argument("--saved-model", metavar="DIR", help="also export a SavedModel")
    parser.add_argument("--tflite", metavar="FILE", help="also write a TFLite file")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="weights with |w| <= threshold count as zero (default: 0, exact)",
    )
    parser.set_defaults(handler=_slim)


def _report(args):
    if not os.path.isfile(args.input):
        raise CommandError(f"input model not found: {args.input}")

    from keras_dropneuron import sparsity_report

    model = _load_model(args.input)
    try:
        print(sparsity_report(model, threshold=args.threshold))
    except (TypeError, ValueError) as error:
        raise CommandError(f"unsupported model {args.input}: {_one_line(error)}") from error
    return 0


def _add_report(subparsers):
    parser = subparsers.add_parser(
        "report",
        help="print the sparsity report of a saved model",
        description="Prints, per layer, the units and weights of a saved Keras model "
        "that are still alive.",
    )
    parser.add_argument("input", help="model file (.keras or .h5)")
    parser.add_argument(
        "--threshold",
        type=_non_negative_float,
        default=0.0,
        help="weights with |w| <= threshold count as zero (default: 0)",
    )
    parser.set_defaults(handler=_report)


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, received: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, received: {text}")
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, received: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, received: {text}")
    return value


def _penalty(text):
    key, sep, value = text.partition("=")
    try:
        if not sep or not key:
            raise ValueError
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KEY=NUMBER, received: {text!r}") from None


def _reproduce(args):
    from keras_dropneuron.experiments import data, runner
    from keras_dropneuron.experiments.setups import SETUPS

    names = list(SETUPS) if args.experiment == "all" else [args.experiment]
    seeds = [args.seed + i for i in range(args.seeds)]
    penalties = dict(args.penalty or [])
    try:
        for name in names:
            runner.check_penalties(name, penalties)
    except (TypeError, ValueError) as error:
        raise CommandError(f"--penalty: {_one_line(error)}") from error
    methods = ("threshold", "proximal") if args.method == "both" else (args.method,)
    try:
        runner.reproduce(
            names,
            seeds=seeds,
            methods=methods,
            quick=args.quick,
            epochs=args.epochs,
            mnist=args.mnist,
            out=args.out,
            plots=args.plots,
            verbose=2 if args.verbose else 0,
            auto_threshold=args.auto_threshold,
            penalties=penalties,
        )
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        if "MNIST" in str(error) or data.MNIST_ENV in str(error):
            raise CommandError(_one_line(error).split(": ", 1)[1]) from error
        raise
    return 0


def _add_reproduce(subparsers):
    from keras_dropneuron.experiments.setups import SETUPS

    parser = subparsers.add_parser(
        "reproduce",
        help="run the paper's experiments: train, prune, slim, report",
        description="Trains each experiment with the DropNeuron penalties and "
        "PruneCallback, slims it with slim_model and prints a table next to the "
        "paper's figures; writes results.json, summary.json and results.md.",
    )
    parser.add_argument("experiment", choices=[*SETUPS, "all"])
    parser.add_argument("--epochs", type=_positive_int, help="override the paper's epochs")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    parser.add_argument("--seeds", type=_positive_int, default=1, help="number of seeds")
    parser.add_argument("--quick", action="store_true", help="a few batches, for CI")
    parser.add_argument(
        "--method",
        choices=["threshold", "proximal", "both"],
        default="threshold",
        help="threshold pruning (the paper), proximal group shrinkage, or both",
    )
    parser.add_argument(
        "--penalty",
        metavar="KEY=VALUE",
        type=_penalty,
        action="append",
        help="override a penalty strength of the set-up, e.g. --penalty li=2e-4 "
        "(keys: li, lo, prox_li, prox_lo and per-experiment ones); repeatable",
    )
    parser.add_argument(
        "--auto-threshold",
        metavar="TOLERANCE",
        type=_non_negative_float,
        help="after training, also prune the units below the largest threshold that "
        "loses at most TOLERANCE (error in %%, or MSE) on 10%% of the training data "
        "held out for validation",
    )
    parser.add_argument(
        "--mnist", metavar="PATH", help="local mnist.npz (else $KERAS_DROPNEURON_MNIST)"
    )
    parser.add_argument("--out", metavar="DIR", default="runs", help="output folder")
    parser.add_argument("--plots", action="store_true", help="save PNG figures (matplotlib)")
    parser.add_argument("--verbose", action="store_true", help="per-epoch progress lines")
    parser.set_defaults(handler=_reproduce)


def build_parser():
    """Returns the argument parser with one subparser per verb."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Structured pruning for Keras (DropNeuron)."
    )
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    _add_slim(subparsers)
    _add_report(subparsers)
    _add_reproduce(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line.

    Args:
        argv: Arguments without the program name. Defaults to `None`, which
            reads `sys.argv[1:]`.

    Returns:
        The exit status: 0 on success, 1 on a reported error, 2 on a usage
        error.
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


if __name__ == "__main__":
    sys.exit(main())
