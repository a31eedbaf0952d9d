"""The compression frontier: grid, resume, Pareto front, files and figures."""

import json

import numpy as np
import pytest

from keras_dropneuron import cli
from keras_dropneuron.experiments import frontier, grid, pareto, plots, runner


def test_pareto_front_of_a_hand_made_example():
    # (error, size): b beats a on size at the same error, d is beaten by c on
    # both, e ties c exactly (neither dominates the other).
    points = [
        {"error": 2.0, "size": 50},  # a: dominated by b
        {"error": 2.0, "size": 40},  # b
        {"error": 1.5, "size": 80},  # c
        {"error": 1.6, "size": 90},  # d: dominated by c
        {"error": 1.5, "size": 80},  # e: equal to c
        {"error": 3.0, "size": 10},  # f
        {"error": 1.0, "size": 200},  # g
    ]
    assert pareto.pareto_front(points, ["error", "size"]) == [1, 2, 4, 5, 6]
    assert pareto.pareto_front(points, ["error"]) == [6]
    assert pareto.pareto_front([], ["error"]) == []


def test_parse_grid_is_the_product_of_its_axes_and_ties_keys():
    configs = grid.parse_grid(
        "lenet-300-100", ["li+lo=2e-4,4e-4", "prox_li=0.5", "auto_threshold=0,0.1"]
    )
    assert configs == [
        {"penalties": {"li": li, "lo": li, "prox_li": 0.5}, "auto_threshold": auto}
        for li in (2e-4, 4e-4)
        for auto in (0.0, 0.1)
    ]
    assert grid.config_label(configs[1]) == "li=0.0002,lo=0.0002,prox_li=0.5,auto=0.1"
    assert grid.parse_grid("lenet-300-100", []) == [{"penalties": {}, "auto_threshold": None}]


@pytest.mark.parametrize(
    "specs, match",
    [
        (["li"], "KEY=V1,V2"),
        (["li="], "KEY=V1,V2"),
        (["nope=1"], "'nope'"),
        (["li=1", "li+lo=2"], "given twice"),
        (["li=x"], "numbers"),
        (["li=-1"], "finite float >= 0"),
        (["li=inf"], "finite float >= 0"),
    ],
)
def test_parse_grid_rejects_bad_axes(specs, match):
    with pytest.raises(ValueError, match=match):
        grid.parse_grid("lenet-300-100", specs)


def _point(label, seed, error, alive, params, macs, epochs=100):
    return {
        "experiment": "lenet-300-100",
        "label": label,
        "config": {"penalties": {}, "auto_threshold": None},
        "epochs": epochs,
        "finetune_epochs": 10,
        "seed": seed,
        "quick": False,
        "error": error,
        "units": [
            {"label": name, "alive": a, "total": t}
            for name, a, t in zip(("inputs", "fc1", "fc2"), alive, (784, 300, 100), strict=True)
        ],
        "slim_params": params,
        "params": 266610,
        "slim_macs": macs,
        "macs": 266200,
        "speedup": 1.5 + seed,
        "train_seconds": 100.0 * (seed + 1),
        "slim_matches": True,
    }


def test_summarize_points_means_spreads_and_fronts():
    points = [
        _point("small", 0, 2.0, (100, 50, 20), 10_000, 9_000),
        _point("small", 1, 2.2, (110, 52, 24), 11_000, 10_000),
        _point("big", 0, 1.5, (500, 200, 80), 90_000, 80_000),
        _point("worse", 0, 2.5, (200, 60, 30), 20_000, 5_000),  # beaten on units and params
    ]
    rows = {r["label"]: r for r in pareto.summarize_points(points)}
    small = rows["small"]
    assert small["mean"] == pytest.approx(2.1)
    assert small["std"] == pytest.approx(np.std([2.0, 2.2], ddof=1))
    assert small["per_seed"] == [2.0, 2.2] and small["seeds"] == [0, 1]
    assert [u["alive"] for u in small["layers"]] == [105, 51, 22]
    assert small["layers"][0]["std"] == pytest.approx(np.std([100, 110], ddof=1))
    assert small["units"] == pytest.approx((170 + 186) / 2)
    assert small["slim_params"] == 10_500 and small["speedup"] == 2.0
    assert small["train_seconds"] == 150.0
    assert small["front"] == ["units", "slim_params", "slim_macs"]
    assert rows["big"]["front"] == ["units", "slim_params", "slim_macs"]
    # Fewest multiply-adds of all, so on that front only.
    assert rows["worse"]["front"] == ["slim_macs"]
    assert rows["worse"]["std"] == 0.0


def test_published_points_cost_follows_from_their_units():
    (dropneuron, *_) = pareto.published_points("lenet-300-100")
    assert dropneuron["source"].startswith("DropNeuron") and dropneuron["error"] == 1.83
    a, b, c = 542, 83, 61
    assert dropneuron["slim_macs"] == a * b + b * c + c * 10
    assert dropneuron["slim_params"] == a * b + b + b * c + c + c * 10 + 10
    assert dropneuron["units_total"] == a + b + c
    assert pareto.published_points("lenet-5") == []


def test_conv_net_records_give_error_and_units_only():
    bc, l0 = pareto.published_points("lenet-5-caffe")
    assert (bc["units"], bc["units_total"], bc["error"]) == ([5, 10, 76, 16], 107, 1.0)
    assert (l0["units"], l0["units_total"], l0["error"]) == ([9, 18, 65, 25], 117, 1.0)
    assert "slim_params" not in bc and "slim_macs" not in l0
    lines = pareto.markdown([], "lenet-5-caffe").splitlines()
    assert "| L0-sep (Louizos et al. 2018) | 1.00% | 9-18-65-25 | - | - |" in lines


def test_frontier_quick_lenet_5_caffe_prunes_filters_and_slims_exactly(
    mnist_path, tmp_path, capsys
):
    grid = "li+lo+conv_li+conv_lo=1e-3"
    args = ["frontier", "lenet-5-caffe", "--quick", "--seeds", "1", "--grid", grid]
    assert cli.main([*args, "--mnist", str(mnist_path), "--out", str(tmp_path)]) == 0
    assert "1 runs trained, 0 found" in capsys.readouterr().out
    (path,) = (tmp_path / "points").glob("*.json")
    run = json.loads(path.read_text())
    assert run["slim_matches"] and run["slim_error"] == pytest.approx(run["error"], abs=1e-9)
    assert [(u["label"], u["total"]) for u in run["units"]] == [
        ("conv1 filters", 20),
        ("conv2 filters", 50),
        ("fc1 inputs", 800),
        ("fc1", 500),
    ]
    assert all(0 < u["alive"] <= u["total"] for u in run["units"])
    assert run["slim_params"] <= run["params"] == 431_080
    assert "alive_inputs" not in run  # no pixel rows: fc1 reads feature maps
    document = json.loads((tmp_path / "frontier.json").read_text())
    assert [r["label"] for r in document["rows"]] == [
        "conv_li=0.001,conv_lo=0.001,li=0.001,lo=0.001"
    ]
    assert [p["units"] for p in document["published"]] == [[5, 10, 76, 16], [9, 18, 65, 25]]
    assert (tmp_path / "frontier.png").stat().st_size > 0
    assert not (tmp_path / "pixels.png").exists()


def _quick_frontier(mnist_path, out, *extra):
    return cli.main(
        [
            "frontier",
            "lenet-300-100",
            "--quick",
            "--seeds",
            "1",
            "--grid",
            "li+lo=2e-4,4e-4",
            "--mnist",
            str(mnist_path),
            "--out",
            str(out),
            *extra,
        ]
    )


def test_frontier_quick_writes_files_and_resumes(mnist_path, tmp_path, capsys, monkeypatch):
    assert _quick_frontier(mnist_path, tmp_path) == 0
    printed = capsys.readouterr().out
    assert "2 runs trained, 0 found" in printed
    points = sorted((tmp_path / "points").glob("*.json"))
    assert [p.name for p in points] == [
        "lenet-300-100_li=0.0002_lo=0.0002_e1_seed0_quick.json",
        "lenet-300-100_li=0.0004_lo=0.0004_e1_seed0_quick.json",
    ]
    run = json.loads(points[0].read_text())
    assert run["penalties"] == {"li": 2e-4, "lo": 2e-4} and run["slim_matches"]
    document = json.loads((tmp_path / "frontier.json").read_text())
    assert sorted(r["label"] for r in document["rows"]) == [
        "li=0.0002,lo=0.0002",
        "li=0.0004,lo=0.0004",
    ]
    assert all(r["slim_exact"] for r in document["rows"])
    sources = [p["source"] for p in document["published"]]
    assert "VIBNet (Dai et al. 2018)" in sources
    table = (tmp_path / "frontier.md").read_text()
    assert "| li=0.0002,lo=0.0002 |" in table and "| VIBNet (Dai et al. 2018) |" in table
    for figure in ("frontier.png", "pixels.png"):
        assert (tmp_path / figure).stat().st_size > 0
    # A second call finds both runs and trains nothing.
    monkeypatch.setattr(runner, "run_once", lambda *a, **k: pytest.fail("trained again"))
    assert _quick_frontier(mnist_path, tmp_path, "--no-plots") == 0
    assert "0 runs trained, 2 found" in capsys.readouterr().out


def test_pixel_images_are_the_alive_rows_of_fc1(mnist_path, tmp_path, monkeypatch):
    image = pytest.importorskip("matplotlib.image")
    real_run_once = runner.run_once
    kernels = {}

    def run_once_with_dead_pixels(name, variant, seed, **kwargs):
        result, model = real_run_once(name, variant, seed, **kwargs)
        kernel = model.get_layer("fc1").kernel.numpy()
        rows = np.random.default_rng(seed).choice(784, size=300, replace=False)
        kernel[rows] = 0.0
        kernel[5, 7] = 0.0  # a row with one zero is still alive
        model.get_layer("fc1").kernel.assign(kernel)
        kernels[seed] = kernel
        return result, model

    monkeypatch.setattr(runner, "run_once", run_once_with_dead_pixels)
    config = {"penalties": {}, "auto_threshold": None}
    frontier.run_frontier(
        "lenet-300-100", [config], [0, 1], tmp_path, quick=True, mnist=mnist_path
    )
    frontier.write_frontier(tmp_path, "lenet-300-100", quick=True)
    for seed, kernel in kernels.items():
        expected = np.any(kernel != 0, axis=1).reshape(28, 28)
        assert expected.sum() == 784 - 300
        stem = grid.point_id("lenet-300-100", config, seed, 1, True)
        pixels = image.imread(tmp_path / "pixels" / f"{stem}.png")
        assert pixels.shape[:2] == (28, 28)
        np.testing.assert_array_equal(pixels[..., 0] > 0.5, expected)


def test_grid_figures_read_at_readme_width(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    # Eleven runs: rows of at most three panels, not one row of eleven.
    results = [
        {
            "experiment": f"exp{i}",
            "variant": "dropneuron",
            "method": "threshold",
            "units": [{"label": "fc1", "alive": 3, "total": 10}],
        }
        for i in range(11)
    ]
    plots.plot_alive_units(results, tmp_path / "alive.png")
    height, width = image.imread(tmp_path / "alive.png").shape[:2]
    assert width <= 1000 and height > width  # four rows of three panels
    masks = [(f"seed {i}", np.eye(28, dtype=bool)) for i in range(3)]
    plots.plot_pixel_masks(masks, tmp_path / "pixels.png", columns=3)
    assert image.imread(tmp_path / "pixels.png").shape[1] <= 1000


def test_frontier_cli_errors_and_help(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(frontier, "run_frontier", lambda *a, **k: pytest.fail("ran"))
    assert cli.main(["frontier", "lenet-300-100", "--grid", "nope=1", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--grid" in err and "'nope'" in err
    assert cli.main(["frontier", "mnist-vit", "--out", str(tmp_path)]) == 1
    assert "no default grid" in capsys.readouterr().err
    missing = str(tmp_path / "missing.npz")
    out = tmp_path / "never"
    assert cli.main(["frontier", "lenet-300-100", "--mnist", missing, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--mnist" in err and "missing.npz" in err
    assert not out.exists()  # refused before anything was made
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setattr(cli.common, "check_out_directory", lambda *a: None)
    assert cli.main(["frontier", "lenet-300-100", "--out", str(blocked / "sub")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out: cannot create" in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frontier", "lenet-300-100", "--seeds", "0"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["frontier", "--help"])
    assert "not trained again" in capsys.readouterr().out


def test_labels_tell_apart_numbers_that_share_six_digits():
    near = grid.parse_grid("lenet-300-100", ["li=1e-4,1.0000001e-4", "cosine_lr=1"])
    labels = [grid.config_label(c) for c in near]
    assert labels == ["li=0.0001,cosine_lr=1", "li=0.00010000001,cosine_lr=1"]


def test_finetune_epochs_is_a_grid_option_passed_to_the_runner(tmp_path, monkeypatch):
    configs = grid.parse_grid("lenet-300-100", ["li=1e-4", "finetune_epochs=0,30"])
    assert [c.get("finetune_epochs") for c in configs] == [0, 30]
    assert grid.config_label(configs[1]) == "li=0.0001,ft=30"
    with pytest.raises(ValueError, match="whole numbers"):
        grid.parse_grid("lenet-300-100", ["finetune_epochs=2.5"])
    calls = []

    def fake_run_once(name, variant, seed, **kwargs):
        calls.append(kwargs)
        raise KeyboardInterrupt  # stop after the arguments are seen

    monkeypatch.setattr(runner, "run_once", fake_run_once)
    with pytest.raises(KeyboardInterrupt):
        frontier.run_frontier("lenet-300-100", configs[1:], [0], tmp_path)
    assert calls[0]["finetune_epochs"] == 30 and calls[0]["penalties"] == {"li": 1e-4}
    assert not list((tmp_path / "points").glob("*"))  # nothing half-written
