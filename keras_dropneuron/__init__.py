"""keras-dropneuron: structured pruning for Keras 3 after DropNeuron (Pan et al. 2016)."""

import sys as _sys
from importlib import metadata as _metadata

from keras_dropneuron.budget import BudgetCallback, BudgetError, BudgetReport, prune_to_budget
from keras_dropneuron.callbacks import PruneCallback
from keras_dropneuron.export import (
    export_model,
    export_onnx,
    export_saved_model,
    export_tflite,
)
from keras_dropneuron.layer_rules import LayerRule, WeightLayout, register_rule
from keras_dropneuron.proximal import ProximalGroupShrinkage
from keras_dropneuron.pruning import UnitsWouldVanishError, prune_weights
from keras_dropneuron.regularize import regularize_model
from keras_dropneuron.regularizers import (
    DropNeuronRegularizer,
    HeadRegularizer,
    LiRegularizer,
    LoRegularizer,
)
from keras_dropneuron.report import SparsityReport, sparsity_report
from keras_dropneuron.surgery import SlimReport, SlimVerificationError, slim_model
from keras_dropneuron.threshold import choose_threshold

try:
    __version__ = _metadata.version("keras-dropneuron")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "BudgetCallback",
    "BudgetError",
    "BudgetReport",
    "DropNeuronRegularizer",
    "HeadRegularizer",
    "LayerRule",
    "LiRegularizer",
    "LoRegularizer",
    "ProximalGroupShrinkage",
    "PruneCallback",
    "SlimReport",
    "SlimVerificationError",
    "SparsityReport",
    "UnitsWouldVanishError",
    "WeightLayout",
    "__version__",
    "choose_threshold",
    "export_model",
    "export_onnx",
    "export_saved_model",
    "export_tflite",
    "prune_to_budget",
    "prune_weights",
    "register_rule",
    "regularize_model",
    "slim_model",
    "sparsity_report",
]

if "keras_hub" in _sys.modules:  # the classes its slim models hold load from .keras files
    from keras_dropneuron.layer_rules import load_keras_hub_rules as _load_keras_hub_rules

    _load_keras_hub_rules()
