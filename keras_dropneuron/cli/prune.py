"""The `keras-dropneuron prune` verb: prune a saved model to a budget.

Example:

    keras-dropneuron prune model.keras --data train.npz --target-macs 0.5 -o slim.keras
"""

import argparse
import os

from keras_dropneuron.checks import (
    argparse_type,
    check_int,
    check_non_negative_float,
    invalid_value,
)
from keras_dropneuron.cli import common
from keras_dropneuron.cli.common import CommandError, one_line

DATA_FORMAT = (
    "a .npz file with two arrays: `x`, the inputs as the model takes them (e.g. "
    "(n, 28, 28, 1) floats), and `y`, the integer class labels (n,) or the targets"
)
_TARGETS = ("target_macs", "target_params", "target_units")
# The loss of a model saved without one, for integer class labels.
DEFAULT_LOSS = "sparse_categorical_crossentropy"


def _fraction(option):
    def parse(text):
        from keras_dropneuron.budget.targets import check_target

        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a float, received: {text!r}") from None
        try:
            check_target("prune", **{option: value})
        except (TypeError, ValueError) as error:
            raise argparse.ArgumentTypeError(str(error).split(": ", 1)[1]) from None
        return value

    parse.__name__ = f"{option}_type"
    return parse


def _read_npz(option, path):
    """The arrays `x` and `y` of the .npz file `path`."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in ("x", "y") if name not in data.files]
            if missing:
                raise CommandError(
                    f"{option}: {path} has no array {' or '.join(map(repr, missing))} "
                    f"(it has {data.files}); expected {DATA_FORMAT}"
                )
            return data["x"], data["y"]
    except CommandError:
        raise
    except Exception as error:  # any failure to read is the same to the user
        raise CommandError(f"{option}: cannot read {path}: {one_line(error)}") from error


def _load_data(option, path):
    """The samples `(x, y)` of `--data` or `--val-data`, checked."""
    import numpy as np

    if not os.path.isfile(path):
        raise CommandError(f"{option}: file not found: {path}")
    if not path.endswith(".npz"):
        raise CommandError(f"{option} must be {DATA_FORMAT}; received: {path}")
    x, y = _read_npz(option, path)
    if len(x) != len(y) or len(x) < 2:
        raise CommandError(
            f"{option}: `x` and `y` must hold the same number (>= 2) of samples; "
            f"received {len(x)} and {len(y)} in {path}"
        )
    for name, array in (("x", x), ("y", y)):
        if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
            raise CommandError(f"{option}: `{name}` in {path} holds NaN or infinite values")
    return x, y


def _check_shape(option, x, model):
    """Refuses samples that the model's (single) input cannot take, naming the option."""
    from keras_dropneuron.budget.data import input_mismatch

    expected = input_mismatch(model, x)
    if expected:
        raise CommandError(f"{option}: `x` has shape {x.shape}; the model takes {expected}")


def _train_and_val(args, x, y):
    """The training and validation samples: `--val-data`, or the last 10% of `--data`."""
    if args.val_data:
        return (x, y), _load_data("--val-data", args.val_data)
    split = len(x) - max(1, len(x) // 10)
    return (x[:split], y[:split]), (x[split:], y[split:])


def _target(args):
    """The one `--target-*` given, as `prune_to_budget`'s keyword argument."""
    targets = {name: getattr(args, name) for name in _TARGETS if getattr(args, name) is not None}
    if len(targets) != 1:
        raise CommandError("give exactly one of --target-macs, --target-params, --target-units")
    return targets


def _load_model(args):
    """The input model, compiled as it was saved unless `--loss` replaces its loss."""
    import keras

    if args.loss is not None:
        return common.load_model(args.input)
    try:
        common.register_saved_classes(args.input)
        return keras.saving.load_model(args.input)
    except Exception as error:  # any failure: unreadable, or a loss that cannot be rebuilt
        common.load_model(args.input)  # a file it cannot read at all is said so
        raise CommandError(
            f"cannot compile {args.input} as it was saved ({one_line(error)}); "
            "give the loss to train with in --loss"
        ) from error


def _loss(args, model):
    """`--loss`; else `None`, the saved model's own loss; else `DEFAULT_LOSS`."""
    if args.loss is not None:
        return args.loss
    if getattr(model, "compiled", False) and getattr(model, "loss", None) is not None:
        return None
    return DEFAULT_LOSS


def _prune_to_budget(args, model, train, val, target):
    """`prune_to_budget` with the command line's options; its errors become one-line errors."""
    import keras

    from keras_dropneuron.budget import BudgetError, prune_to_budget

    try:
        return prune_to_budget(
            model,
            train,
            val,
            **target,
            max_accuracy_drop=args.max_accuracy_drop,
            epochs=args.epochs,
            finetune_epochs=args.finetune_epochs,
            finetune_schedule=args.finetune_schedule,
            batch_size=args.batch_size,
            li=args.li,
            lo=args.lo,
            optimizer=keras.optimizers.Adam(args.learning_rate),
            loss=_loss(args, model),
            verbose=2 if args.verbose else 0,
            schedule=args.schedule,
            loss_guard=args.loss_guard,
            distill=args.distill,
            distill_temperature=args.distill_temperature,
            distill_alpha=args.distill_alpha,
        )
    except BudgetError as error:
        raise CommandError(f"nothing written: {_as_options(one_line(error))}") from error
    except Exception as error:  # e.g. the backend's error for labels the loss cannot take
        raise CommandError(f"cannot prune {args.input}: {one_line(error)}") from error


# The advice of `BudgetError` names `prune_to_budget`'s arguments; here they are options.
_OPTIONS = {
    "`epochs=`": "`--epochs`",
    "`batch_size=`": "`--batch-size`",
    "`li=`": "`--li`",
    "`lo=`": "`--lo`",
    "`finetune_epochs=`": "`--finetune-epochs`",
    "`max_accuracy_drop=`": "`--max-accuracy-drop`",
    "`distill_temperature=`": "`--distill-temperature`",
    'schedule="gradual"': "--schedule gradual",
    "`loss_guard=`": "`--loss-guard`",
    "`distill_alpha=`": "`--distill-alpha`",
}


def _as_options(message: str) -> str:
    for argument, option in _OPTIONS.items():
        message = message.replace(argument, option)
    return message


def run(args: argparse.Namespace) -> int:
    """Runs `prune`: checks the paths and data, prunes to the budget, writes the slim model.

    Args:
        args: The parsed command line.

    Returns:
        The exit status, 0.

    Raises:
        CommandError: If a path or the data are unusable, the budget cannot be
            met within `--max-accuracy-drop`, or the output cannot be written.
    """
    common.check_input(args.input)
    common.check_model_output(args.output, suffixes=(".keras", ".h5"))
    common.check_output("-o/--output", args.output, args.input)
    x, y = _load_data("--data", args.data)
    train, val = _train_and_val(args, x, y)
    target = _target(args)
    with common.quiet(args.verbose):
        model = _load_model(args)
        _check_shape("--data", x, model)
        if args.val_data:
            _check_shape("--val-data", val[0], model)
        slim, report = _prune_to_budget(args, model, train, val, target)
    common.write(args.output, slim.save, args.output)
    print(report)
    print(f"Slim model: {args.output}")
    return 0


def _add_target_options(parser):
    """`--target-macs`, `--target-params`, `--target-units` and `--max-accuracy-drop`."""
    for kind, what in (("macs", "multiply-adds"), ("params", "parameters"), ("units", "units")):
        parser.add_argument(
            f"--target-{kind}",
            metavar="F",
            type=_fraction(f"target_{kind}"),
            help=f"fraction of the {what} the slim model may keep, in (0, 1]",
        )
    parser.add_argument(
        "--max-accuracy-drop",
        metavar="F",
        type=argparse_type("--max-accuracy-drop", check_non_negative_float),
        default=0.005,
        help="largest allowed validation accuracy drop, a fraction (default: 0.005)",
    )


def _add_training_options(parser):
    """The options of the training: epochs, batch size, strengths, learning rate, loss.

    `--epochs`, `--finetune-epochs`, `--batch-size`, `--li`, `--lo`,
    `--learning-rate` and `--loss`.
    """
    for option, minimum, default, text in (
        ("--epochs", 1, 10, "most epochs of penalized training"),
        ("--finetune-epochs", 0, 2, "epochs of fine-tuning without penalties"),
        ("--batch-size", 1, 128, "training batch size"),
    ):
        parser.add_argument(
            option,
            type=argparse_type(option, check_int, convert=int, minimum=minimum),
            default=default,
            help=f"{text} (default: {default})",
        )
    for name in ("li", "lo"):
        parser.add_argument(
            f"--{name}",
            type=argparse_type(f"--{name}", check_non_negative_float),
            default=4e-4,
            help=f"base {name} strength, scaled by the controller (default: 4e-4)",
        )
    parser.add_argument(
        "--learning-rate",
        type=argparse_type("--learning-rate", check_non_negative_float),
        default=1e-3,
        help="Adam's learning rate (default: 1e-3)",
    )
    parser.add_argument(
        "--loss",
        help="Keras loss to train with (default: the loss the model was saved with, else "
        f"{DEFAULT_LOSS})",
    )


def _loss_guard(name: str, value: str) -> float | None:
    """`--loss-guard`: a float > 0, or `none`."""
    if value.lower() == "none":
        return None
    checked = check_non_negative_float(name, value)
    if checked == 0:
        raise invalid_value(name, "a finite float > 0, or none", value)
    return checked


def _distill_check(name):
    """A check of `keras_dropneuron.budget.distill`, imported when an option is parsed."""

    def check(option, value):
        from keras_dropneuron.budget import distill

        return getattr(distill, name)(option, value)

    return check


def _add_distill_options(parser):
    """`--distill`, `--distill-temperature` and `--distill-alpha`."""
    parser.add_argument(
        "--distill",
        action="store_true",
        help="fine-tune by distillation from the input model (Keras's Distiller with "
        "LogitsDistillation on the pre-softmax logits); needs a softmax or logits output",
    )
    parser.add_argument(
        "--distill-temperature",
        metavar="T",
        type=argparse_type("--distill-temperature", _distill_check("check_temperature")),
        default=2.0,
        help="softmax temperature of the distillation, > 0 (default: 2.0)",
    )
    parser.add_argument(
        "--distill-alpha",
        metavar="A",
        type=argparse_type("--distill-alpha", _distill_check("check_alpha")),
        default=0.5,
        help="weight of the label loss in [0, 1]; the distillation term gets 1 - A (default: 0.5)",
    )


def add_parser(subparsers: common.SubParsers) -> None:
    """Registers the `prune` verb.

    Args:
        subparsers: What `argparse.ArgumentParser.add_subparsers` returned.
    """
    parser = subparsers.add_parser(
        "prune",
        help="prune a saved model to a budget (multiply-adds, parameters or units)",
        description="Trains a penalized copy of a saved Keras model until the slim model "
        "keeps the target fraction, fine-tunes it, chooses the threshold, slims and "
        "verifies it, and writes it if the validation accuracy dropped by at most "
        f"--max-accuracy-drop. DATA: {DATA_FORMAT}.",
    )
    parser.add_argument("input", help="trained model (.keras or .h5)")
    parser.add_argument(
        "--data", required=True, metavar="DATA", help=f"training data: {DATA_FORMAT}"
    )
    parser.add_argument(
        "--val-data",
        metavar="DATA",
        help="validation data in the same format (default: the last 10%% of --data)",
    )
    parser.add_argument("-o", "--output", required=True, help="slim model path (.keras or .h5)")
    _add_target_options(parser)
    _add_training_options(parser)
    parser.add_argument(
        "--schedule",
        choices=("auto", "gradual", "penalty"),
        default="auto",
        help="gradual: the weakest units are cut on a schedule (for a trained model); "
        "penalty: the penalties' strength is steered until units die; auto: gradual where "
        "cutting ranked units can reach the target, else penalty (default: auto)",
    )
    parser.add_argument(
        "--finetune-schedule",
        choices=("cosine", "constant"),
        default="cosine",
        help="the fine-tuning's learning rate: cosine decay to 0, or constant (default: cosine)",
    )
    parser.add_argument(
        "--loss-guard",
        type=argparse_type("--loss-guard", _loss_guard),
        default=1.0,
        metavar="F",
        help="how far the validation data loss may rise above its lowest value, as a "
        "fraction of it, before pruning eases off; 'none' for no guard (default: 1.0)",
    )
    _add_distill_options(parser)
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="one line per epoch, and the warnings of Keras and TensorFlow",
    )
    parser.set_defaults(handler=run)
