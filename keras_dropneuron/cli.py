"""The `keras-dropneuron` command line.

Verbs are argparse subcommands; each one is a `_add_<verb>` function that
registers its parser and a handler returning the exit status (`prune` is in
`cli_prune.py`).

Example:

    keras-dropneuron slim pruned.keras -o slim.keras --tflite slim.tflite --onnx slim.onnx
    keras-dropneuron slim pruned.keras --format litert=slim_int8.tflite --int8 --calibration x.npy
"""

import argparse
import contextlib
import os
import sys
import zipfile

from keras_dropneuron import __version__
from keras_dropneuron.checks import argparse_type, check_int, check_non_negative_float
from keras_dropneuron.cli_prune import add_prune

PROG = "keras-dropneuron"
_MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
# `--format FORMAT=PATH`, as `keras_dropneuron.surgery.export.EXPORT_FORMATS` names them.
_FORMATS = ("keras", "h5", "saved_model", "litert", "onnx")
_FORMAT_SUFFIXES = {"keras": (".keras",), "h5": (".h5", ".hdf5")}
_FORMAT_LABELS = {
    "keras": "model file",
    "h5": "model file",
    "saved_model": "SavedModel",
    "litert": "TFLite file",
    "onnx": "ONNX file",
}
_MAX_SEED = 2**32 - 1  # numpy's legacy seeding, which keras.utils.set_random_seed uses


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _one_line(error):
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _check_input(path):
    """Checks the input model file before anything loads it (nothing ever writes to it)."""
    if not os.path.exists(path):
        raise CommandError(f"input model not found: {path}")
    if os.path.isdir(path):
        raise CommandError(f"input model is a directory, expected a .keras or .h5 file: {path}")
    if not path.endswith(_MODEL_SUFFIXES):
        raise CommandError(f"input model must be a .keras or .h5 file, received: {path}")
    if not os.access(path, os.R_OK):
        raise CommandError(f"input model is not readable (permission denied): {path}")


def _load_model(path):
    import keras

    try:
        if path.endswith(".keras"):
            # Keras reports a damaged zip as "File not found"; name the real reason.
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
            if damaged:
                raise zipfile.BadZipFile(f"damaged archive member {damaged}")
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # any failure to read is the same to the user
        raise CommandError(f"cannot read {path} as a Keras model: {_one_line(error)}") from error


def _check_directory(option, path):
    if not os.path.exists(path):
        raise CommandError(f"{option}: the directory {path} does not exist")
    if not os.path.isdir(path):
        raise CommandError(f"{option}: {path} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise CommandError(f"{option}: the directory {path} is not writable")


def _check_output(option, path, input_path, directory=False):
    """Checks that `path` can be written, before anything is written."""
    _check_directory(option, os.path.dirname(path) or os.curdir)
    if os.path.exists(path) and os.path.samefile(path, input_path):
        raise CommandError(f"refusing to overwrite the input model: {path}")
    if directory and os.path.exists(path):
        raise CommandError(f"{option} directory already exists: {path}")
    if os.path.isdir(path):
        raise CommandError(f"{option} is a directory, expected a file: {path}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise CommandError(f"{option}: {path} is not writable")


def _outputs(args):
    """`(option, format, path)` for every output the command line asks for, in order."""
    outputs = []
    if args.output:
        if not args.output.endswith(_MODEL_SUFFIXES):
            raise CommandError(f"output must end with .keras or .h5, received: {args.output}")
        fmt = "keras" if args.output.endswith(".keras") else "h5"
        outputs.append(("-o/--output", fmt, args.output))
    for option, fmt, path in (
        ("--saved-model", "saved_model", args.saved_model),
        ("--tflite", "litert", args.tflite),
        ("--onnx", "onnx", args.onnx),
    ):
        if path:
            outputs.append((option, fmt, path))
    for fmt, path in args.format or []:
        outputs.append((f"--format {fmt}", fmt, path))
    if not outputs:
        raise CommandError(
            "nothing to write: give -o/--output, --saved-model, --tflite, --onnx or --format"
        )
    return outputs


def _check_outputs(args):
    """Checks every output path, and what the outputs need, before anything is written."""
    outputs = _outputs(args)
    written = {}
    for option, fmt, path in outputs:
        suffixes = _FORMAT_SUFFIXES.get(fmt)
        if suffixes and not path.endswith(suffixes):
            raise CommandError(
                f"{option}: a {fmt} file must end with {' or '.join(suffixes)}, received: {path}"
            )
        _check_output(option, path, args.input, directory=fmt == "saved_model")
        same = written.setdefault(os.path.realpath(path), option)
        if same != option:
            raise CommandError(f"{same} and {option} name the same path: {path}")
    formats = {fmt for _, fmt, _ in outputs}
    if args.int8 and "litert" not in formats:
        raise CommandError(
            "--int8 quantizes TFLite files: add --tflite FILE or --format litert=FILE"
        )
    if args.int8 and not args.calibration:
        raise CommandError(
            "--int8 needs --calibration FILE: a .npy of representative inputs (a few hundred "
            "samples), or a .npz with one array per input name"
        )
    if args.calibration and not args.int8:
        raise CommandError("--calibration is only used with --int8")
    if "onnx" in formats:
        from keras_dropneuron.surgery.export import onnx_missing_packages

        missing = onnx_missing_packages()
        if missing:
            raise CommandError(
                f"ONNX export needs {' and '.join(missing)}: pip install 'keras-dropneuron[onnx]'"
            )
    return outputs


def _load_calibration(path):
    """The representative inputs of `--calibration`: one array (.npy) or a dict (.npz)."""
    import numpy as np

    if not os.path.exists(path):
        raise CommandError(f"--calibration: file not found: {path}")
    if os.path.isdir(path):
        raise CommandError(f"--calibration: {path} is a directory, expected a .npy or .npz file")
    if not path.endswith((".npy", ".npz")):
        raise CommandError(f"--calibration must be a .npy or .npz file, received: {path}")
    try:
        with open(path, "rb") as file:
            data = np.load(file, allow_pickle=False)
            if isinstance(data, np.lib.npyio.NpzFile):
                data = {name: data[name] for name in data.files}
    except Exception as error:  # any failure to read is the same to the user
        raise CommandError(f"--calibration: cannot read {path}: {_one_line(error)}") from error
    return data


def _check_out_directory(option, path):
    """Checks that `path` is a writable directory or can be made one."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    _check_directory(option, existing)


def _write(path, save, *args, **kwargs):
    try:
        save(*args, **kwargs)
    except Exception as error:  # e.g. TFLite's ConverterError for an op int8 cannot take
        raise CommandError(f"cannot write {path}: {_one_line(error)}") from error


def _slim(args):
    _check_input(args.input)
    outputs = _check_outputs(args)
    calibration = _load_calibration(args.calibration) if args.calibration else None

    from keras_dropneuron.surgery import SlimVerificationError, slim_model
    from keras_dropneuron.surgery.export import (
        artifact_size,
        export_model,
        representative_dataset,
    )

    model = _load_model(args.input)
    try:
        slim, report = slim_model(
            model,
            threshold=args.threshold,
            return_report=True,
            verify=args.verify,
            round_to=args.round_to,
            benchmark=args.benchmark,
        )
    except SlimVerificationError as error:
        raise CommandError(f"verification failed, nothing written: {_one_line(error)}") from error
    except (TypeError, ValueError) as error:
        raise CommandError(f"unsupported model {args.input}: {_one_line(error)}") from error
    if calibration is not None:
        try:  # checked against the model's inputs before anything is written
            calibration = representative_dataset(slim, calibration)
        except (TypeError, ValueError) as error:
            message = _one_line(error).replace("argument `representative_data`", "the samples")
            raise CommandError(f"--calibration {args.calibration}: {message}") from error
    for _, fmt, path in outputs:
        if fmt in ("keras", "h5"):
            _write(path, slim.save, path)
        elif fmt == "litert" and args.int8:
            _write(path, export_model, slim, path, fmt, int8=True, representative_data=calibration)
        else:
            _write(path, export_model, slim, path, fmt)
    print(report)
    for _, fmt, path in outputs:
        label = _FORMAT_LABELS[fmt] + (" (int8)" if fmt == "litert" and args.int8 else "")
        if fmt in ("keras", "h5"):
            before, after = artifact_size(args.input), artifact_size(path)
            print(f"{label}: {before:,} -> {after:,} bytes ({path})")
        else:
            print(f"{label}: {artifact_size(path):,} bytes ({path})")
    return 0


def _format_output(text):
    fmt, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected FORMAT=PATH, received: {text!r}")
    if fmt not in _FORMATS:
        raise argparse.ArgumentTypeError(
            f"unknown format {fmt!r}, expected one of: {', '.join(_FORMATS)}"
        )
    return fmt, path


def _add_slim(subparsers):
    parser = subparsers.add_parser(
        "slim",
        help="rebuild a pruned model without its dead units",
        description="Removes provably dead units from a saved Keras model and "
        "prints a per-layer report with file sizes before and after.",
    )
    parser.add_argument("input", help="pruned model (.keras or .h5)")
    parser.add_argument("-o", "--output", help="slim model path (.keras or .h5)")
    parser.add_argument("--saved-model", metavar="DIR", help="also export a SavedModel")
    parser.add_argument("--tflite", metavar="FILE", help="also write a TFLite (LiteRT) file")
    parser.add_argument("--onnx", metavar="FILE", help="also write an ONNX file (onnx extra)")
    parser.add_argument(
        "--format",
        metavar="FORMAT=PATH",
        type=_format_output,
        action="append",
        help=f"also write PATH in FORMAT, one of {', '.join(_FORMATS)}; repeatable "
        "(--format onnx=slim.onnx is --onnx slim.onnx)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="full-integer post-training quantization of the TFLite outputs (needs --calibration)",
    )
    parser.add_argument(
        "--calibration",
        metavar="FILE",
        help="representative inputs for --int8: a .npy array (n, *input_shape), "
        "or a .npz with one array per input name",
    )
    parser.add_argument(
        "--threshold",
        type=_THRESHOLD,
        default=0.0,
        help="weights with |w| <= threshold count as zero (default: 0, exact)",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip checking that the slim model computes the same outputs (default: check)",
    )
    parser.add_argument(
        "--round-to",
        metavar="N",
        type=argparse_type("--round-to", check_int, convert=int, minimum=1),
        default=1,
        help="keep every resized layer at a multiple of N units (default: 1, remove all dead)",
    )
    parser.add_argument(
        "--benchmark",
        metavar="BATCH",
        type=argparse_type("--benchmark", check_int, convert=int, minimum=1),
        help="also time both models at this batch size on this machine",
    )
    parser.set_defaults(handler=_slim)


def _report(args):
    _check_input(args.input)

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
        type=_THRESHOLD,
        default=0.0,
        help="weights with |w| <= threshold count as zero (default: 0)",
    )
    parser.set_defaults(handler=_report)


_THRESHOLD = argparse_type("--threshold", check_non_negative_float)


def _penalty(text):
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=NUMBER, received: {text!r}")
    return key, argparse_type(f"--penalty {key}", check_non_negative_float)(value)


class _ExperimentNames:
    """The choices of `reproduce`, read from the paper harness only when argparse needs them.

    So `keras-dropneuron --help`, `slim` and `report` never import the harness.
    """

    def _names(self):
        from keras_dropneuron.experiments.setups import SETUPS

        return [*SETUPS, "all"]

    def __contains__(self, name):
        return name in self._names()

    def __iter__(self):
        return iter(self._names())


def _seeds(args):
    """The seeds of `--seed` and `--seeds`, checked against numpy's range."""
    last = args.seed + args.seeds - 1
    if last > _MAX_SEED:
        raise CommandError(f"--seed + --seeds - 1 must be at most {_MAX_SEED}, received: {last}")
    return list(range(args.seed, last + 1))


@contextlib.contextmanager
def _mnist_errors():
    """A missing or unreadable MNIST becomes a one-line error."""
    from keras_dropneuron.experiments import data

    try:
        yield
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        if "MNIST" in str(error) or data.MNIST_ENV in str(error):
            raise CommandError(_one_line(error).split(": ", 1)[1]) from error
        raise


def _add_training_options(parser, seeds):
    """`--epochs`, `--seed`, `--seeds` (default `seeds`), `--mnist` and `--verbose`."""
    parser.add_argument(
        "--epochs",
        type=argparse_type("--epochs", check_int, convert=int, minimum=1),
        help="override the set-up's epochs (the fine-tuning epochs included)",
    )
    parser.add_argument(
        "--seed",
        type=argparse_type("--seed", check_int, convert=int, minimum=0),
        default=0,
        help="first seed (default: 0)",
    )
    parser.add_argument(
        "--seeds",
        type=argparse_type("--seeds", check_int, convert=int, minimum=1),
        default=seeds,
        help=f"number of seeds (default: {seeds})",
    )
    parser.add_argument(
        "--mnist", metavar="PATH", help="local mnist.npz (else $KERAS_DROPNEURON_MNIST)"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="one progress line per epoch (default: a progress bar on a terminal, else none)",
    )


def _reproduce(args):
    from keras_dropneuron.experiments import runner
    from keras_dropneuron.experiments.setups import SETUPS

    names = list(SETUPS) if args.experiment == "all" else [args.experiment]
    seeds = _seeds(args)
    _check_out_directory("--out", args.out)
    penalties = dict(args.penalty or [])
    try:
        for name in names:
            runner.check_penalties(name, penalties)
    except (TypeError, ValueError) as error:
        raise CommandError(f"--penalty: {_one_line(error)}") from error
    methods = ("threshold", "proximal") if args.method == "both" else (args.method,)
    with _mnist_errors():
        runner.reproduce(
            names,
            seeds=seeds,
            methods=methods,
            quick=args.quick,
            epochs=args.epochs,
            mnist=args.mnist,
            out=args.out,
            plots=args.plots,
            # One line per epoch if asked, else a progress bar on a terminal only.
            verbose=2 if args.verbose else int(sys.stdout.isatty()),
            auto_threshold=args.auto_threshold,
            penalties=penalties,
        )
    return 0


def _add_reproduce(subparsers):
    parser = subparsers.add_parser(
        "reproduce",
        help="run the paper's experiments: train, prune, slim, report",
        description="Trains each experiment with the DropNeuron penalties and "
        "PruneCallback, slims it with slim_model and prints a table next to the "
        "paper's figures; writes results.json, summary.json and results.md.",
    )
    parser.add_argument(
        "experiment",
        choices=_ExperimentNames(),
        metavar="EXPERIMENT",  # argparse would list the choices, so import the harness, at once
        help="one of: %(choices)s",
    )
    _add_training_options(parser, seeds=1)
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
        type=argparse_type("--auto-threshold", check_non_negative_float),
        help="after training, also prune the units below the largest threshold that "
        "loses at most TOLERANCE (error in %%, or MSE) on 10%% of the training data "
        "held out for validation",
    )
    parser.add_argument("--out", metavar="DIR", default="runs", help="output folder")
    parser.add_argument("--plots", action="store_true", help="save PNG figures (matplotlib)")
    parser.set_defaults(handler=_reproduce)


def _frontier(args):
    from keras_dropneuron.experiments import frontier

    seeds = _seeds(args)
    out = args.out or os.path.join("runs", f"frontier-{args.experiment}")
    _check_out_directory("--out", out)
    specs = args.grid or frontier.DEFAULT_GRIDS.get(args.experiment)
    if specs is None:
        raise CommandError(f"--grid: {args.experiment} has no default grid, give one")
    try:
        configs = frontier.parse_grid(args.experiment, specs)
    except (TypeError, ValueError) as error:
        raise CommandError(f"--grid: {_one_line(error)}") from error
    if args.mnist is not None and not os.path.isfile(args.mnist):
        raise CommandError(f"--mnist: expected an MNIST .npz file. Received: {args.mnist!r}")
    try:  # before any training: a folder that cannot be made fails now
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise CommandError(f"--out: cannot create {out}: {error.strerror}") from error
    with _mnist_errors():
        trained, skipped = frontier.run_frontier(
            args.experiment,
            configs,
            seeds=seeds,
            out=out,
            quick=args.quick,
            epochs=args.epochs,
            mnist=args.mnist,
            verbose=2 if args.verbose else int(sys.stdout.isatty()),
        )
    print(f"{trained} runs trained, {skipped} found in {out}/points (not trained again)")
    frontier.write_frontier(out, args.experiment, quick=args.quick, plots=not args.no_plots)
    return 0


class _FrontierNames(_ExperimentNames):
    def _names(self):
        from keras_dropneuron.experiments.setups import SETUPS

        return list(SETUPS)


def _add_frontier(subparsers):
    parser = subparsers.add_parser(
        "frontier",
        help="sweep penalty strengths over seeds: the Pareto frontier of error against size",
        description="Trains a grid of penalty strengths (and the automatic threshold) "
        "over seeds with the reproduce set-up, one JSON per finished run in OUT/points "
        "(a run already there is not trained again: a killed sweep resumes), then writes "
        "the Pareto frontier of the test metric against alive units, slim parameters and "
        "slim multiply-adds as OUT/frontier.json and OUT/frontier.md, and OUT/frontier.png "
        "with the published records labelled with their sources; for the MNIST networks "
        "also the surviving input pixels, one 28x28 image per run (OUT/pixels/) and a "
        "grid for the front (OUT/pixels.png). Long sweeps: "
        "nohup nice -n 15 keras-dropneuron frontier ... > sweep.log &",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "experiment", choices=_FrontierNames(), metavar="EXPERIMENT", help="one of: %(choices)s"
    )
    parser.add_argument(
        "--grid",
        metavar="KEY=V1,V2",
        action="append",
        help="one axis of the grid, repeatable (the grid is their product); KEY is a "
        "penalty strength of the set-up (li, lo, input_lo, ...), auto_threshold, "
        "finetune_epochs, or a training method: learning_rate, cosine_lr (1: cosine "
        "decay), sgd_momentum (SGD instead of Adam), proximal (1: proximal shrinkage with "
        "prox_li/prox_lo, the other strengths unused), ramp_epochs (penalty warm-up), "
        "cycles (prune-and-retrain, needs auto_threshold), reweight (1: reweighted group "
        "lasso on Dense kernels); 0 is the set-up's recipe (learning_rate must be > 0); "
        "ramp_epochs and reweight need TensorFlow or PyTorch; KEY1+KEY2=... ties keys, "
        "e.g. --grid li+lo=2e-4,4e-4 --grid auto_threshold=0 "
        "(default: a small grid per experiment)",
    )
    _add_training_options(parser, seeds=3)
    parser.add_argument(
        "--quick", action="store_true", help="256 samples and one epoch per run, for CI"
    )
    parser.add_argument(
        "--out", metavar="DIR", help="output folder (default: runs/frontier-EXPERIMENT)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.set_defaults(handler=_frontier)


def build_parser():
    """Returns the argument parser with one subparser per verb."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Structured pruning for Keras (DropNeuron)."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    _add_slim(subparsers)
    add_prune(subparsers)
    _add_report(subparsers)
    _add_reproduce(subparsers)
    _add_frontier(subparsers)
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
