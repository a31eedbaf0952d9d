"""The `keras-dropneuron report` verb: print the sparsity report of a saved model.

Example:

    keras-dropneuron report pruned.keras --threshold 1e-3
"""

import argparse

from keras_dropneuron.cli import common
from keras_dropneuron.cli.common import CommandError, one_line


def run(args: argparse.Namespace) -> int:
    """Runs `report`: loads the model and prints its `sparsity_report`.

    Args:
        args: The parsed command line.

    Returns:
        The exit status, 0.

    Raises:
        CommandError: If the model cannot be read or has a layer the report
            does not support.
    """
    common.check_input(args.input)

    from keras_dropneuron import sparsity_report

    model = common.load_model(args.input)
    try:
        print(sparsity_report(model, threshold=args.threshold, widths=args.widths))
    except (TypeError, ValueError) as error:
        raise CommandError(f"unsupported model {args.input}: {one_line(error)}") from error
    return 0


def add_parser(subparsers: common.SubParsers) -> None:
    """Registers the `report` verb.

    Args:
        subparsers: What `argparse.ArgumentParser.add_subparsers` returned.
    """
    parser = subparsers.add_parser(
        "report",
        help="print the sparsity report of a saved model",
        description="Prints, per layer, the units and weights of a saved Keras model "
        "that are still alive.",
    )
    parser.add_argument("input", help="model file (.keras or .h5)")
    parser.add_argument(
        "--threshold",
        type=common.THRESHOLD,
        default=0.0,
        help="weights with |w| <= threshold count as zero (default: 0)",
    )
    parser.add_argument(
        "--widths",
        choices=("uniform", "per_layer"),
        default="uniform",
        help="keras-hub models: count what `slim --widths` of the same value keeps "
        "(default: uniform)",
    )
    parser.set_defaults(handler=run)
