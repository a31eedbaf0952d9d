"""`slim_model` on a 0.3 B-parameter keras-hub Llama backbone: time and peak memory.

Usage:

    python benchmarks/bench_hub_scale.py          # 24 layers, hidden 1024 (about 0.35 B)
    python benchmarks/bench_hub_scale.py --tiny   # 2 layers, hidden 64, for CI

A randomly initialised `LlamaBackbone` (24 layers, hidden 1024, intermediate 2816, 16
query and 8 key/value heads, a 32,000-word vocabulary; nothing downloaded) gets a
quarter of each block's feed-forward units killed (their down-projection rows zeroed)
and a quarter of its key/value groups (their value slices zeroed). `slim_model` then runs
three ways, each in a process of its own so that the peak resident memory is its own:
verified at uniform widths (the default, a `LlamaBackbone`), verified per layer (a
Functional model), and unverified at uniform widths. Memory is the peak resident set
size sampled every 50 ms during the call, minus the size before it, as a multiple of the
weights' bytes. Targets: at most 60 s verified, at most 3x the weights; printed, never
asserted. Llama derives its head size from `hidden_dim // num_query_heads`, so its heads
are kept: only the feed-forward units go.
"""

import json
import os
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import numpy as np  # noqa: E402

FULL = dict(layers=24, hidden=1024, intermediate=2816, query_heads=16, kv_heads=8, vocab=32000)
TINY = dict(layers=2, hidden=64, intermediate=176, query_heads=4, kv_heads=2, vocab=500)
MODES = {
    "verified, uniform widths": dict(verify=True, widths="uniform"),
    "verified, per layer": dict(verify=True, widths="per_layer"),
    "unverified, uniform widths": dict(verify=False, widths="uniform"),
}
TARGET_SECONDS, TARGET_MEMORY = 60.0, 3.0


def _rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    return 0


def build(config, seed=0):
    """The backbone with a quarter of its units and of its key/value groups dead."""
    import keras_hub

    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=config["vocab"],
        num_layers=config["layers"],
        hidden_dim=config["hidden"],
        intermediate_dim=config["intermediate"],
        num_query_heads=config["query_heads"],
        num_key_value_heads=config["kv_heads"],
    )
    rng = np.random.default_rng(seed)
    width, groups = config["intermediate"], config["kv_heads"]
    for block in backbone.layers:
        if type(block).__name__ != "LlamaTransformerDecoder":
            continue
        down = block._feedforward_output_dense.kernel
        value = np.array(down.numpy())
        value[rng.permutation(width)[: width // 4]] = 0
        down.assign(value)
        kernel = block._self_attention_layer._value_dense.kernel
        value = np.array(kernel.numpy())
        value[:, rng.permutation(groups)[: groups // 4]] = 0
        kernel.assign(value)
    return backbone


def measure(config, verify, widths):
    """One `slim_model` call: seconds, peak extra memory, parameters and widths."""
    from keras_dropneuron import slim_model

    backbone = build(config)
    weights = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in backbone.weights)
    before = _rss()
    peak = [before]
    done = threading.Event()

    def watch():
        while not done.wait(0.05):
            peak[0] = max(peak[0], _rss())

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.perf_counter()
    slim = slim_model(backbone, verify=verify, widths=widths)
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    peak[0] = max(peak[0], _rss())
    blocks = [layer for layer in slim.layers if "Decoder" in type(layer).__name__]
    return {
        "seconds": seconds,
        "weights_bytes": weights,
        "peak_extra_bytes": peak[0] - before,
        "memory_ratio": (peak[0] - before) / weights,
        "params_before": backbone.count_params(),
        "params_after": slim.count_params(),
        "units_kept": [int(b._feedforward_output_dense.kernel.shape[0]) for b in blocks],
        "class": type(slim).__name__,
    }


def main(argv=None):
    parser = _common.parser(__doc__, repeats=1)
    parser.add_argument("--mode", choices=list(MODES), help="run one mode in this process")
    args = parser.parse_args(argv)
    config = TINY if args.tiny else FULL
    if args.mode:
        result = measure(config, **MODES[args.mode])
        print(json.dumps(result))
        return result
    results = {}
    for mode in MODES:
        if args.tiny:  # in-process: the figures, not the memory, are what CI checks
            results[mode] = measure(config, **MODES[mode])
            continue
        command = [sys.executable, __file__, "--mode", mode]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
    print(f"LlamaBackbone {config}")
    for mode, r in results.items():
        print(
            f"{mode:28s} {r['seconds']:6.1f} s (target {TARGET_SECONDS:.0f}), peak +"
            f"{r['peak_extra_bytes'] / 1e9:.2f} GB = {r['memory_ratio']:.2f}x the "
            f"{r['weights_bytes'] / 1e9:.2f} GB of weights (target {TARGET_MEMORY:.0f}x), "
            f"params {r['params_before']:,} -> {r['params_after']:,}, {r['class']}"
        )
    rows = [{"mode": mode, **r} for mode, r in results.items()]
    _common.finish(args, rows, config=config)
    return results


if __name__ == "__main__":
    main()
