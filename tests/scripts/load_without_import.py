"""Loads a saved model first without, then with `import keras_dropneuron`.

Usage: `python load_without_import.py MODEL.keras OUT.json`

Writes the error Keras raises without the import, and, after the import, the number
of exact zeros in each kernel of the reloaded model (default `safe_mode=True`).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def main(path, out):
    result = {"imported_before": "keras_dropneuron" in sys.modules}
    try:
        keras.saving.load_model(path)
        result["error"] = None
    except Exception as error:  # noqa: BLE001 - reporting whatever Keras raises
        result["error"] = {"type": type(error).__name__, "message": str(error)}
    import keras_dropneuron  # noqa: F401, E402 - the import under test

    model = keras.saving.load_model(path)
    result["zeros"] = {
        layer.name: int(np.sum(np.asarray(layer.kernel.numpy()) == 0)) for layer in model.layers
    }
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
