"""What a user installs: the wheel's contents, the import footprint, a quiet console command."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

import _keras_dropneuron_cli as launcher

REPO = pathlib.Path(__file__).resolve().parents[1]
# The severity of a log line of TensorFlow's native code (absl's format, or TensorFlow's own).
SEVERITY = re.compile(r"^(?:([IWEF])\d{4} [\d:.]+ +\d+ |\d{4}-\d\d-\d\d [\d:.]+: ([IWEF]) )", re.M)
NOISE = ("oneDNN", "cpu_feature_guard", "cudart", "cuInit", "absl::InitializeLog")


def run_python(code, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_wheel_holds_the_whole_package(tmp_path):
    # Built from a copy so the build never writes into the checkout.
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*command, "--quiet", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("keras_dropneuron-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(entry_points).decode()
    package = REPO / "keras_dropneuron"
    shipped = {
        path.relative_to(REPO).as_posix()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert shipped - names == set()
    assert "_keras_dropneuron_cli.py" in names
    assert "keras-dropneuron = _keras_dropneuron_cli:main" in entry_points


def test_every_package_folder_is_a_regular_package():
    # A folder without `__init__.py` is left out of the wheel by `packages = find:`.
    folders = {p.parent for p in (REPO / "keras_dropneuron").rglob("*.py")}
    assert [f for f in folders if not (f / "__init__.py").is_file()] == []


def test_import_loads_only_the_library():
    # Keras itself imports matplotlib when it is installed, so only what
    # keras_dropneuron adds on top of Keras and TensorFlow counts.
    result = run_python(
        "import json, sys, keras, tensorflow\n"
        "before = set(sys.modules)\n"
        "import keras_dropneuron\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    assert result.returncode == 0, result.stderr
    added = json.loads(result.stdout)
    harness = [m for m in added if m.startswith(("keras_dropneuron.experiments", "matplotlib"))]
    assert harness == []
    assert "keras_dropneuron.cli" not in added


HARNESS_PROBE = """
import sys
from keras_dropneuron import cli
for argv in VERBS:
    try:
        cli.main(argv)
    except SystemExit:
        pass
    harness = [m for m in sys.modules if m.startswith("keras_dropneuron.experiments")]
    print("harness imported:", argv[0], bool(harness))
"""


def test_cli_imports_the_harness_only_to_reproduce(tmp_path):
    verbs = [["--help"], ["--version"], ["report", "missing.keras"], ["reproduce", "?"]]
    result = run_python(f"VERBS = {verbs!r}\n{HARNESS_PROBE}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if "harness" in line] == [
        "harness imported: --help False",
        "harness imported: --version False",
        "harness imported: report False",
        "harness imported: reproduce True",
    ]


def installed_command():
    script = pathlib.Path(sysconfig.get_path("scripts")) / "keras-dropneuron"
    assert script.exists(), f"{script} is missing: install the package (pip install -e .)"
    return str(script)


def run_command(args, tmp_path, **env):
    environ = {k: v for k, v in os.environ.items() if k != launcher.LOG_LEVEL_ENV}
    return subprocess.run(
        [installed_command(), *args],
        capture_output=True,
        text=True,
        env={**environ, **env},
        cwd=tmp_path,
        timeout=300,
    )


def test_command_starts_quietly(tmp_path):
    result = run_command(["report", "missing.keras"], tmp_path)
    assert result.returncode == 1
    assert result.stderr == "keras-dropneuron: error: input model not found: missing.keras\n"


def test_command_respects_the_users_log_level(tmp_path):
    # What TensorFlow prints at start-up with every message let through; the
    # command shows the same at level 0 (at 3, the default, none: test above).
    raw = run_python("import tensorflow", env={**os.environ, launcher.LOG_LEVEL_ENV: "0"})
    expected = [line.split("] ")[-1] for line in raw.stderr.splitlines() if "] " in line]
    shown = run_command(["--help"], tmp_path, TF_CPP_MIN_LOG_LEVEL="0")
    assert shown.returncode == 0
    assert all(message in shown.stderr for message in expected)


LOG = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795775311.579897    3426 port.cc:153] oneDNN custom operations are on.
W0000 00:00:1795775311.580277    3426 some.cc:1] a warning
2025-09-17 14:44:05.176998: E external/local_xla/cuda_fft.cc:467] an error
I0000 00:00:1795775311.631229    3426 cpu_feature_guard.cc:227] This TensorFlow binary
To enable the following instructions: AVX2 FMA, in other operations, rebuild.
F0000 00:00:1795775311.631229    3426 a.cc:1] fatal
"""


@pytest.mark.parametrize("level, kept", [(1, "WEF"), (2, "EF"), (3, "F")])
def test_filter_log_keeps_messages_at_or_above_the_level(level, kept):
    text = launcher.filter_log(LOG + "a line of Python's own\n", level)
    severities = "".join(absl or tf for absl, tf in SEVERITY.findall(text))
    assert severities == kept
    assert "absl::InitializeLog" not in text and "To enable" not in text
    assert text.endswith("a line of Python's own\n")


def test_start_up_messages_go_without_losing_the_rest(capfd):
    # Through file descriptor 2, as TensorFlow's native code writes.
    with launcher.native_stderr_filtered(2):
        os.write(2, LOG.encode())
        print("printed by Python", file=sys.stderr)
    err = capfd.readouterr().err
    assert not any(noise in err for noise in NOISE)
    assert "an error" in err and "fatal" in err and "printed by Python" in err
