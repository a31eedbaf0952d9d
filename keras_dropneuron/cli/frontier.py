"""The `keras-dropneuron frontier` verb: sweep penalty strengths for the Pareto frontier.

Example:

    keras-dropneuron frontier lenet-300-100 --grid li+lo=2e-4,4e-4 --seeds 3
"""

import argparse
import os

from keras_dropneuron.cli import common, training
from keras_dropneuron.cli.common import CommandError, one_line

_DESCRIPTION = (
    "Trains a grid of penalty strengths (and the automatic threshold) "
    "over seeds with the reproduce set-up, one JSON per finished run in OUT/points "
    "(a run already there is not trained again: a killed sweep resumes), then writes "
    "the Pareto frontier of the test metric against alive units, slim parameters and "
    "slim multiply-adds as OUT/frontier.json and OUT/frontier.md, and OUT/frontier.png "
    "with the published records labelled with their sources; for the MNIST networks "
    "also the surviving input pixels, one 28x28 image per run (OUT/pixels/) and a "
    "grid for the front (OUT/pixels.png). Long sweeps: "
    "nohup nice -n 15 keras-dropneuron frontier ... > sweep.log &"
)
_GRID_HELP = (
    "one axis of the grid, repeatable (the grid is their product); KEY is a "
    "penalty strength of the set-up (li, lo, input_lo, ...), auto_threshold, "
    "finetune_epochs, or a training method: learning_rate, cosine_lr (1: cosine "
    "decay), sgd_momentum (SGD instead of Adam), proximal (1: proximal shrinkage with "
    "prox_li/prox_lo, the other strengths unused), ramp_epochs (penalty warm-up), "
    "cycles (prune-and-retrain, needs auto_threshold), reweight (1: reweighted group "
    "lasso on Dense kernels); 0 is the set-up's recipe (learning_rate must be > 0); "
    "ramp_epochs and reweight need TensorFlow or PyTorch; KEY1+KEY2=... ties keys, "
    "e.g. --grid li+lo=2e-4,4e-4 --grid auto_threshold=0 "
    "(default: a small grid per experiment)"
)


def _configs(args, frontier):
    """The grid's configurations: `--grid`, or the set-up's default grid."""
    specs = args.grid or frontier.DEFAULT_GRIDS.get(args.experiment)
    if specs is None:
        raise CommandError(f"--grid: {args.experiment} has no default grid, give one")
    try:
        return frontier.parse_grid(args.experiment, specs)
    except (TypeError, ValueError) as error:
        raise CommandError(f"--grid: {one_line(error)}") from error


def run(args: argparse.Namespace) -> int:
    """Runs `frontier`: trains the runs not yet in OUT/points, then writes the frontier.

    Args:
        args: The parsed command line.

    Returns:
        The exit status, 0.

    Raises:
        CommandError: If the seeds, `--out`, `--grid` or `--mnist` are
            unusable.
    """
    from keras_dropneuron.experiments import frontier

    seeds = training.seeds(args)
    out = args.out or os.path.join("runs", f"frontier-{args.experiment}")
    common.check_out_directory("--out", out)
    configs = _configs(args, frontier)
    if args.mnist is not None and not os.path.isfile(args.mnist):
        raise CommandError(f"--mnist: expected an MNIST .npz file. Received: {args.mnist!r}")
    try:  # before any training: a folder that cannot be made fails now
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise CommandError(f"--out: cannot create {out}: {error.strerror}") from error
    with training.mnist_errors():
        trained, skipped = frontier.run_frontier(
            args.experiment,
            configs,
            seeds=seeds,
            out=out,
            quick=args.quick,
            epochs=args.epochs,
            mnist=args.mnist,
            verbose=training.verbosity(args),
        )
    print(f"{trained} runs trained, {skipped} found in {out}/points (not trained again)")
    frontier.write_frontier(out, args.experiment, quick=args.quick, plots=not args.no_plots)
    return 0


def add_parser(subparsers: common.SubParsers) -> None:
    """Registers the `frontier` verb.

    Args:
        subparsers: What `argparse.ArgumentParser.add_subparsers` returned.
    """
    parser = subparsers.add_parser(
        "frontier",
        help="sweep penalty strengths over seeds: the Pareto frontier of error against size",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "experiment",
        choices=training.SetupNames(),
        metavar="EXPERIMENT",
        help="one of: %(choices)s",
    )
    parser.add_argument("--grid", metavar="KEY=V1,V2", action="append", help=_GRID_HELP)
    training.add_training_options(parser, seeds=3)
    parser.add_argument(
        "--quick", action="store_true", help="256 samples and one epoch per run, for CI"
    )
    parser.add_argument(
        "--out", metavar="DIR", help="output folder (default: runs/frontier-EXPERIMENT)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.set_defaults(handler=run)
