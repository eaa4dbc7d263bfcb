"""What a user installs: the worker imports none of the extras, and a wheel built from the
checkout, installed into a fresh virtualenv and run from elsewhere, finds every file the commands
read (the stack's deploy configs, the shipped model, the bundled records) inside the install.

The virtualenv sees this interpreter's site-packages (torch is not downloaded again), but
seqstream itself must come from the wheel: the test runs in a temporary folder without
PYTHONPATH and checks where each package was imported from."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# The modules of the base install's commands: worker, stack, tail, view, state.
WORKER_MODULES = ("stream.worker", "stream.cli", "seqstream.cli", "seqstream.stack",
                  "seqstream.tail", "seqstream.view.server", "seqstream.state")
# What only the extras install (pyproject.toml), and the offline package.
NOT_IN_WORKER = ("lightning", "pytorch_lightning", "matplotlib", "river", "wfdb", "pandas",
                 "training")
# Package data a command reads, as folders of the checkout (every file in them must ship).
PACKAGE_DATA = ("seqstream/deploy", "seqstream/view/static", "stream/models/ecg",
                "stream/schemas", "training/bundled/mitdb", "training/configs")


# Not sources: left out of the copy the wheel is built from.
LOCAL_STATE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
               ".ruff_cache", "artifacts", "results")


def _clean_env() -> dict[str, str]:
    """This environment without the checkout on the import path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_the_worker_imports_none_of_the_extras(tmp_path: Path) -> None:
    code = (f"import importlib, pkgutil, sys, stream\n"
            f"names = [m.name for m in pkgutil.iter_modules(stream.__path__, 'stream.')]\n"
            f"for name in names + {list(WORKER_MODULES)!r}:\n"
            f"    importlib.import_module(name)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {NOT_IN_WORKER!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**_clean_env(), "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"the worker's modules imported {done.stdout.strip()}"


def test_the_base_install_leaves_the_extras_out() -> None:
    base = " ".join(PYPROJECT["project"]["dependencies"]).lower()
    for dist in ("lightning", "matplotlib", "river", "wfdb", "pandas"):
        assert dist not in base, f"{dist}: expected only in an extra, not in the base install"
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"publish", "train", "evaluate", "test"} <= set(extras)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from a copy of the checkout (setuptools writes build/ and egg-info
    into the tree it builds), offline with the installed setuptools (the test extra's)."""
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(*LOCAL_STATE))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "--disable-pip-version-check", "-q",
                           "-w", str(out), str(source)],
                          cwd=out, capture_output=True, text=True, timeout=600, env=_clean_env())
    assert done.returncode == 0, done.stdout + done.stderr
    [built] = out.glob("seqstream-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed: its python. The dependencies come from this
    interpreter's site-packages (no index, torch not downloaded again), seen through a ``.pth``
    line (as ``--system-site-packages`` would, but also when this interpreter is itself a
    virtualenv, as ``./run`` makes one); no pip of its own, whose old bundled setuptools would
    hide the recent one torch requires."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=300, env=_clean_env())
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                              "'purelib'))"], check=True, capture_output=True, text=True,
                             timeout=60).stdout.strip()
    Path(purelib, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "--no-index", "-q", "--disable-pip-version-check", str(wheel)],
                          cwd=root, capture_output=True, text=True, timeout=600,
                          env=_clean_env())
    assert done.returncode == 0, done.stdout + done.stderr
    return python


@pytest.mark.slow
def test_the_wheel_holds_the_package_data_and_only_the_design_s_packages(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in PACKAGE_DATA:
        files = [p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts]
        assert files, f"{folder}: expected files in the checkout"
        missing = sorted(set(files) - names)
        assert not missing, f"not in {wheel.name}: {missing}"
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"seqstream", "stream", "training"}


def _in_venv(python: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=_clean_env())


@pytest.mark.slow
def test_the_installed_commands_find_their_files_in_the_install(venv: Path,
                                                                tmp_path: Path) -> None:
    prefix = venv.parents[1]
    seqstream = str(venv.with_name("seqstream"))
    version = _in_venv(venv, "-m", "seqstream", "--version", cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.split() == ["seqstream", PYPROJECT["project"]["version"]]
    for command in ("stack", "demo", "worker"):
        helped = subprocess.run([seqstream, command, "--help"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=300, env=_clean_env())
        assert helped.returncode == 0, f"seqstream {command} --help: {helped.stderr}"
    code = """
import json, sys
from pathlib import Path
import seqstream, stream, training
from seqstream import stack
from seqstream.demo import SHIPPED, _lanes
from stream.artifact import DEFAULT_ECG, load_artifact
from training.sources import BUNDLED_MITDB

home = Path(sys.argv[1])
kafka = stack.KafkaServer(home / "kafka", 19092, 19093, "256m", home / "jars")
prometheus = stack.PrometheusServer(home / "prometheus", 19090, 18000)
prometheus.dir.mkdir(parents=True)
command = prometheus.command()  # writes its config and copies the alert rules from the package
lanes, _ = _lanes(2, "packaging-", ())
print(json.dumps({
    "packages": [m.__file__ for m in (seqstream, stream, training)],
    "deploy": [str(stack.DEPLOY), str(stack.KAFKA_POM)],
    "kafka_version": kafka.version(),
    "kafka_properties": "@PORT@" not in kafka.properties() and "19092" in kafka.properties(),
    "prometheus_rules": sorted(p.name for p in (prometheus.dir / "rules").iterdir()),
    "prometheus_config": "127.0.0.1:18000" in (prometheus.dir / "prometheus.yml").read_text(),
    "model": [str(SHIPPED), str(DEFAULT_ECG), load_artifact(SHIPPED).model_id],
    "bundled": str(BUNDLED_MITDB),
    "lanes": len(lanes),
}))
"""
    done = _in_venv(venv, "-c", code, str(tmp_path / "home"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    site = str(prefix)
    for path in [*found["packages"], *found["deploy"], *found["model"][:2], found["bundled"]]:
        assert path.startswith(site), f"{path}: expected inside the virtualenv {site}"
    from seqstream import stack  # the checkout's, to compare with

    assert found["kafka_version"] == stack.KafkaServer.version()
    assert found["kafka_properties"] and found["prometheus_config"]
    assert found["prometheus_rules"] == sorted(
        p.name for p in (stack.DEPLOY / "prometheus" / "rules").iterdir())
    assert found["model"][0] == found["model"][1]
    assert found["lanes"] == 2


def test_a_command_without_its_extra_names_the_extra(tmp_path: Path) -> None:
    """``seqstream train`` where the `train` extra's packages are missing (a worker-only
    install): one line naming the extra to install, not a traceback."""
    code = ("import sys\n"
            "class Missing:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('yaml', 'pytorch_lightning'):\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Missing())\n"
            "from seqstream.cli import main\n"
            "sys.exit(main(['train', '--print-config']))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**_clean_env(), "PYTHONPATH": str(REPO)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "pip install 'seqstream[train]'" in done.stderr and "Traceback" not in done.stderr
