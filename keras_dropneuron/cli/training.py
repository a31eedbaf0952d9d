"""What `reproduce` and `frontier` share: the set-up names, seeds, training options, MNIST errors.

Both verbs train the paper's set-ups through `keras_dropneuron.experiments`;
this module imports that harness only when a verb runs or argparse needs the
set-up names, so `keras-dropneuron --help`, `slim` and `report` never load it.
"""

import argparse
import contextlib
import sys
from collections.abc import Iterator

from keras_dropneuron.checks import argparse_type, check_int
from keras_dropneuron.cli.common import CommandError, one_line

MAX_SEED = 2**32 - 1  # numpy's legacy seeding, which keras.utils.set_random_seed uses


class ExperimentNames:
    """The experiment names `reproduce` accepts (and `"all"`), read from the harness when needed.

    argparse only tests membership and iterates (for the help and error
    messages), so the harness loads then and not when the parser is built.
    """

    def _names(self) -> list[str]:
        from keras_dropneuron.experiments import trained_setups
        from keras_dropneuron.experiments.setups import SETUPS, stdlib_lm

        # stdlib-lm needs keras-hub, so "all" (the SETUPS) leaves it out, and the
        # trained-start experiments (`trained_setups.EXPERIMENTS`) run apart.
        return [*SETUPS, stdlib_lm.NAME, *trained_setups.EXPERIMENTS, "all"]

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


class SetupNames(ExperimentNames):
    """The set-up names `frontier` accepts: every set-up, without `"all"`."""

    def _names(self) -> list[str]:
        from keras_dropneuron.experiments.setups import SETUPS

        return list(SETUPS)


def seeds(args: argparse.Namespace) -> list[int]:
    """The seeds of `--seed` and `--seeds`, checked against numpy's range.

    Args:
        args: The parsed command line, with `seed` and `seeds`.

    Returns:
        `seeds` consecutive seeds from `seed` on.

    Raises:
        CommandError: If the last seed is above `MAX_SEED`.
    """
    last = args.seed + args.seeds - 1
    if last > MAX_SEED:
        raise CommandError(f"--seed + --seeds - 1 must be at most {MAX_SEED}, received: {last}")
    return list(range(args.seed, last + 1))


def verbosity(args: argparse.Namespace) -> int:
    """Keras's `verbose`: 2 (a line per epoch) with `--verbose`, else 1 on a terminal, else 0."""
    return 2 if args.verbose else int(sys.stdout.isatty())


@contextlib.contextmanager
def mnist_errors() -> Iterator[None]:
    """A missing or unreadable MNIST becomes a one-line error.

    Raises:
        CommandError: In place of the harness's error about MNIST.
    """
    from keras_dropneuron.experiments import data

    try:
        yield
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        if "MNIST" in str(error) or data.MNIST_ENV in str(error):
            raise CommandError(one_line(error).split(": ", 1)[1]) from error
        raise


def add_training_options(parser: argparse.ArgumentParser, seeds: int) -> None:
    """Adds `--epochs`, `--seed`, `--seeds`, `--mnist` and `--verbose`.

    Args:
        parser: The verb's parser.
        seeds: The default of `--seeds`.
    """
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
        "--mnist",
        metavar="PATH",
        help="local mnist.npz (else $KERAS_DROPNEURON_MNIST, else keras.datasets.mnist "
        "downloads it)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="one progress line per epoch (default: a progress bar on a terminal, else none)",
    )
