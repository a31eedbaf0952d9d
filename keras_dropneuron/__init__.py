"""keras-dropneuron: structured pruning for Keras 3 after DropNeuron (Pan et al., 2016)."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("keras-dropneuron")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
