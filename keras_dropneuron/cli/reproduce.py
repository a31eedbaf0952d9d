"""The `keras-dropneuron reproduce` verb: run the paper's experiments.

The paper's experiments train with the penalties from scratch
(`experiments.runner`); the trained-start ones (`resnet20-trained`, ...)
train without them, then prune to a budget (`experiments.trained_start`);
`stdlib-lm` is a keras-hub language model pruned to a budget.

Example:

    keras-dropneuron reproduce lenet-300-100 --seeds 3 --method both --plots
    keras-dropneuron reproduce resnet20-trained --quick --out runs/
"""

import argparse

from keras_dropneuron.checks import argparse_type, check_non_negative_float
from keras_dropneuron.cli import common, training
from keras_dropneuron.cli.common import CommandError, one_line


def _penalty(text):
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=NUMBER, received: {text!r}")
    return key, argparse_type(f"--penalty {key}", check_non_negative_float)(value)


def run(args: argparse.Namespace) -> int:
    """Runs `reproduce`: trains, prunes, slims and reports each set-up over the seeds.

    Args:
        args: The parsed command line.

    Returns:
        The exit status, 0.

    Raises:
        CommandError: If the seeds, `--out`, a `--penalty` or MNIST are
            unusable.
    """
    from keras_dropneuron.experiments import runner, trained_setups
    from keras_dropneuron.experiments.setups import SETUPS, stdlib_lm

    if args.experiment == stdlib_lm.NAME:
        return _run_stdlib_lm(args)
    if args.experiment in trained_setups.EXPERIMENTS:
        return _run_trained_start(args)
    names = list(SETUPS) if args.experiment == "all" else [args.experiment]
    seeds = training.seeds(args)
    common.check_out_directory("--out", args.out)
    penalties = dict(args.penalty or [])
    try:
        for name in names:
            runner.check_penalties(name, penalties)
    except (TypeError, ValueError) as error:
        raise CommandError(f"--penalty: {one_line(error)}") from error
    methods = ("threshold", "proximal") if args.method == "both" else (args.method,)
    with training.mnist_errors():
        runner.reproduce(
            names,
            seeds=seeds,
            methods=methods,
            quick=args.quick,
            epochs=args.epochs,
            mnist=args.mnist,
            out=args.out,
            plots=args.plots,
            verbose=training.verbosity(args),
            auto_threshold=args.auto_threshold,
            penalties=penalties,
        )
    return 0


def _run_stdlib_lm(args: argparse.Namespace) -> int:
    """Runs the keras-hub language model of the standard library (`setups.stdlib_lm`)."""
    import importlib.util

    from keras_dropneuron.experiments.setups import stdlib_lm

    if importlib.util.find_spec("keras_hub") is None:
        raise CommandError(f"{stdlib_lm.NAME} needs keras-hub: pip install keras-hub")
    _reject_method_options(args, stdlib_lm.NAME, "a budget run")
    common.check_out_directory("--out", args.out)
    for seed in training.seeds(args):
        out = f"{args.out}/{stdlib_lm.NAME}" + (f"/seed{seed}" if args.seeds > 1 else "")
        result, _ = stdlib_lm.run(
            quick=args.quick,
            seed=seed,
            epochs=args.epochs,
            out=out,
            verbose=training.verbosity(args),
        )
        print(stdlib_lm.markdown_table(result))
    return 0


def _reject_method_options(args: argparse.Namespace, name: str, why: str) -> None:
    """Raises for `--method`, `--penalty` or `--auto-threshold` given to `name`."""
    for flag, value in (
        ("--method", args.method != "threshold"),
        ("--penalty", args.penalty),
        ("--auto-threshold", args.auto_threshold is not None),
    ):
        if value:
            raise CommandError(f"{flag} does not apply to {name} ({why})")


def _run_trained_start(args: argparse.Namespace) -> int:
    """Runs a trained-start experiment (`keras_dropneuron.experiments.trained_start`).

    The network is trained without penalties (`--epochs` of them), then
    `prune_to_budget` prunes it to each of the experiment's targets.
    """
    from keras_dropneuron.experiments import trained_start

    _reject_method_options(args, args.experiment, "a budget run from a trained model")
    seeds = training.seeds(args)
    common.check_out_directory("--out", args.out)
    with training.mnist_errors():
        trained_start.reproduce(
            [args.experiment],
            seeds=seeds,
            quick=args.quick,
            mnist=args.mnist,
            out=args.out,
            plots=args.plots,
            verbose=training.verbosity(args),
            epochs=args.epochs,
        )
    return 0


def _add_method_options(parser):
    """`--method`, `--penalty` and `--auto-threshold`."""
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


def add_parser(subparsers: common.SubParsers) -> None:
    """Registers the `reproduce` verb.

    Args:
        subparsers: What `argparse.ArgumentParser.add_subparsers` returned.
    """
    parser = subparsers.add_parser(
        "reproduce",
        help="run the paper's experiments: train, prune, slim, report",
        description="Trains each experiment with the DropNeuron penalties and "
        "PruneCallback, slims it with slim_model and prints a table next to the "
        "paper's figures; writes results.json, summary.json and results.md. The "
        "*-trained experiments train without penalties, then prune the trained model "
        "with prune_to_budget to each MAC target; they write results.json, results.md "
        "and the slim models.",
    )
    parser.add_argument(
        "experiment",
        choices=training.ExperimentNames(),
        metavar="EXPERIMENT",  # argparse would list the choices, so import the harness, at once
        help="one of: %(choices)s",
    )
    training.add_training_options(parser, seeds=1)
    parser.add_argument("--quick", action="store_true", help="a few batches, for CI")
    _add_method_options(parser)
    parser.add_argument("--out", metavar="DIR", default="runs", help="output folder")
    parser.add_argument("--plots", action="store_true", help="save PNG figures (matplotlib)")
    parser.set_defaults(handler=run)
