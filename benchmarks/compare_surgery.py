"""Times `slim_model` on ResNet50 for two source trees, alternated in one run.

Usage:

    python benchmarks/compare_surgery.py --before /path/to/old/tree --rounds 5
    python benchmarks/compare_surgery.py --tiny          # one small MLP, for CI

Each round starts one fresh process per tree (so each imports its own
`keras_dropneuron`), builds the same ResNet50 (64x64 inputs, a third of the
bottleneck filters dead, seed 0), slims it once to warm up, then times three
calls and reports their median. The trees alternate, so both see the same
machine. Printed: per-tree medians over rounds and the ratio after / before,
for the current tree with and without verification. Never asserted.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent

_CHILD = """
import inspect, json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, {tree!r})
sys.path.insert(0, {benchmarks!r})
import keras
import bench_surgery
from keras_dropneuron.surgery import slim_model
keras.utils.set_random_seed(0)
model = bench_surgery.mlp(64, 2) if {tiny} else bench_surgery.resnet("ResNet50")
kwargs = {{"verify": {verify}}} if "verify" in inspect.signature(slim_model).parameters else {{}}
slim_model(model, **kwargs)
times = []
for _ in range(3):
    start = time.perf_counter()
    slim_model(model, **kwargs)
    times.append(time.perf_counter() - start)
print(json.dumps(sorted(times)[1]))
"""


def _time(tree, verify, tiny):
    code = _CHILD.format(tree=str(tree), benchmarks=str(HERE), tiny=tiny, verify=verify)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tree
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=str(HERE.parent), help="the other source tree")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="a small MLP, for CI")
    parser.add_argument("--out", help="write the figures as JSON")
    args = parser.parse_args(argv)
    after = HERE.parent
    sides = {"before": [], "after (verified)": [], "after (verify=False)": []}
    rounds = 1 if args.tiny else args.rounds
    for _ in range(rounds):
        sides["before"].append(_time(args.before, False, args.tiny))
        sides["after (verified)"].append(_time(after, True, args.tiny))
        sides["after (verify=False)"].append(_time(after, False, args.tiny))
    medians = {name: sorted(t)[len(t) // 2] for name, t in sides.items()}
    for name, seconds in medians.items():
        ratio = seconds / medians["before"]
        print(f"{name:<22} {seconds:6.3f} s   {ratio:5.2f}x before", flush=True)
    if args.out:
        figures = {"medians_s": medians, "samples_s": sides, "load": os.getloadavg()}
        pathlib.Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
