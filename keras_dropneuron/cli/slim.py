"""The `keras-dropneuron slim` verb: rebuild a pruned model without its dead units.

Example:

    keras-dropneuron slim pruned.keras -o slim.keras --tflite slim.tflite --onnx slim.onnx
    keras-dropneuron slim pruned.keras --format litert=slim_int8.tflite --int8 --calibration x.npy
"""

import argparse
import os

from keras_dropneuron import export
from keras_dropneuron.checks import argparse_type, check_int
from keras_dropneuron.cli import common
from keras_dropneuron.cli.common import CommandError, one_line

_FORMAT_SUFFIXES = {"keras": (".keras",), "h5": (".h5", ".hdf5")}
_FORMAT_LABELS = {
    "keras": "model file",
    "h5": "model file",
    "saved_model": "SavedModel",
    "litert": "TFLite file",
    "onnx": "ONNX file",
}


def _outputs(args):
    """`(option, format, path)` for every output the command line asks for, in order."""
    outputs = []
    if args.output:
        common.check_model_output(args.output)
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


def _check_paths(args, outputs):
    """Checks each output's suffix and path, and that no two outputs share a path."""
    written = {}
    for option, fmt, path in outputs:
        suffixes = _FORMAT_SUFFIXES.get(fmt)
        if suffixes and not path.endswith(suffixes):
            raise CommandError(
                f"{option}: a {fmt} file must end with {' or '.join(suffixes)}, received: {path}"
            )
        common.check_output(option, path, args.input, directory=fmt == "saved_model")
        same = written.setdefault(os.path.realpath(path), option)
        if same != option:
            raise CommandError(f"{same} and {option} name the same path: {path}")


def _check_requirements(args, formats):
    """Checks what the outputs need: `--int8` and `--calibration` together, ONNX's packages."""
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
        missing = export.onnx_missing_packages()
        if missing:
            raise CommandError(
                f"ONNX export needs {' and '.join(missing)}: pip install 'keras-dropneuron[onnx]'"
            )


def _check_outputs(args):
    """Checks every output path, and what the outputs need, before anything is written."""
    outputs = _outputs(args)
    _check_paths(args, outputs)
    _check_requirements(args, {fmt for _, fmt, _ in outputs})
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
        raise CommandError(f"--calibration: cannot read {path}: {one_line(error)}") from error
    return data


def _slim_model(args, model):
    """`slim_model` with the command line's options; its errors become one-line errors."""
    from keras_dropneuron.surgery import SlimVerificationError, slim_model

    try:
        return slim_model(
            model,
            threshold=args.threshold,
            return_report=True,
            verify=args.verify,
            round_to=args.round_to,
            benchmark=args.benchmark,
            widths=args.widths,
        )
    except SlimVerificationError as error:
        raise CommandError(f"verification failed, nothing written: {one_line(error)}") from error
    except (TypeError, ValueError) as error:
        raise CommandError(f"unsupported model {args.input}: {one_line(error)}") from error


def _calibration_for(args, slim, calibration):
    """The samples of `--calibration`, checked against the slim model's inputs."""
    try:
        return export.representative_dataset(slim, calibration)
    except (TypeError, ValueError) as error:
        message = one_line(error).replace("argument `representative_data`", "the samples")
        raise CommandError(f"--calibration {args.calibration}: {message}") from error


def _write_outputs(args, slim, outputs, calibration):
    for _, fmt, path in outputs:
        if fmt in ("keras", "h5"):
            common.write(path, slim.save, path)
        elif fmt == "litert" and args.int8:
            common.write(
                path,
                export.export_model,
                slim,
                path,
                fmt,
                int8=True,
                representative_data=calibration,
            )
        else:
            common.write(path, export.export_model, slim, path, fmt)


def _print_sizes(args, outputs):
    for _, fmt, path in outputs:
        label = _FORMAT_LABELS[fmt] + (" (int8)" if fmt == "litert" and args.int8 else "")
        if fmt in ("keras", "h5"):
            before, after = export.artifact_size(args.input), export.artifact_size(path)
            print(f"{label}: {before:,} -> {after:,} bytes ({path})")
        else:
            print(f"{label}: {export.artifact_size(path):,} bytes ({path})")


def run(args: argparse.Namespace) -> int:
    """Runs `slim`: checks every path, slims the model, writes and sizes each output.

    Args:
        args: The parsed command line.

    Returns:
        The exit status, 0.

    Raises:
        CommandError: If an input or output is unusable, the model cannot be
            slimmed or verified, or an output cannot be written.
    """
    common.check_input(args.input)
    outputs = _check_outputs(args)
    calibration = _load_calibration(args.calibration) if args.calibration else None
    model = common.load_model(args.input)
    slim, report = _slim_model(args, model)
    if calibration is not None:  # checked against the model's inputs before anything is written
        calibration = _calibration_for(args, slim, calibration)
    _write_outputs(args, slim, outputs, calibration)
    print(report)
    _print_sizes(args, outputs)
    return 0


def _format_output(text):
    fmt, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected FORMAT=PATH, received: {text!r}")
    if fmt not in export.EXPORT_FORMATS:
        raise argparse.ArgumentTypeError(
            f"unknown format {fmt!r}, expected one of: {', '.join(export.EXPORT_FORMATS)}"
        )
    return fmt, path


def _add_output_options(parser):
    """`-o`, `--saved-model`, `--tflite`, `--onnx`, `--format`, `--int8`, `--calibration`."""
    parser.add_argument("-o", "--output", help="slim model path (.keras or .h5)")
    parser.add_argument("--saved-model", metavar="DIR", help="also export a SavedModel")
    parser.add_argument("--tflite", metavar="FILE", help="also write a TFLite (LiteRT) file")
    parser.add_argument("--onnx", metavar="FILE", help="also write an ONNX file (onnx extra)")
    parser.add_argument(
        "--format",
        metavar="FORMAT=PATH",
        type=_format_output,
        action="append",
        help=f"also write PATH in FORMAT, one of {', '.join(export.EXPORT_FORMATS)}; repeatable "
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


def _add_surgery_options(parser):
    """`--threshold`, `--no-verify`, `--round-to`, `--widths` and `--benchmark`."""
    parser.add_argument(
        "--threshold",
        type=common.THRESHOLD,
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
        "--widths",
        choices=("uniform", "per_layer"),
        default="uniform",
        help="keras-hub models: every block at the largest width any keeps, as the model's "
        "own class (uniform, the default), or each block at its own width as a Functional "
        "model (per_layer)",
    )
    parser.add_argument(
        "--benchmark",
        metavar="BATCH",
        type=argparse_type("--benchmark", check_int, convert=int, minimum=1),
        help="also time both models at this batch size on this machine",
    )


def add_parser(subparsers: common.SubParsers) -> None:
    """Registers the `slim` verb.

    Args:
        subparsers: What `argparse.ArgumentParser.add_subparsers` returned.
    """
    parser = subparsers.add_parser(
        "slim",
        help="rebuild a pruned model without its dead units",
        description="Removes provably dead units from a saved Keras model and "
        "prints a per-layer report with file sizes before and after.",
    )
    parser.add_argument("input", help="pruned model (.keras or .h5)")
    _add_output_options(parser)
    _add_surgery_options(parser)
    parser.set_defaults(handler=run)
