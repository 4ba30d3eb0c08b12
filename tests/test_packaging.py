"""Packaging: ``pip install -e .`` into a throwaway environment, the wheel's contents, the ``vlmdiff`` command,
scripts without ``sys.path`` edits, and ``--help`` without torch."""

import ast
import os
import re
import shutil
import site
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from vlmdiff import cli

ROOT = Path(__file__).resolve().parents[1]
# the stage scripts (the paper's names) and the module each one wraps
SCRIPTS = {"captioner.py": "captioner", "finetune_autoencoder.py": "finetune_autoencoder",
           "build_model.py": "build_model", "train.py": "train", "test.py": "test", "scripts/demo.py": "demo"}
PACKAGES = ("ldm", "vlmdiff", "utils")


def run(cmd, cwd, **kw):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """What the package is built from, copied away from the checkout (its scripts, tests and configs left out)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy(ROOT / name, src / name)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    return src


def test_editable_install_gives_the_vlmdiff_command(source, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    # the new environment sees this one's packages (torch, pip, setuptools, ...), not the checkout
    pth = next(venv.glob("lib/python*/site-packages")) / "parent_env.pth"
    pth.write_text("\n".join(site.getsitepackages()) + "\n")
    pip = run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
               "-e", str(source)], cwd=tmp_path)
    assert pip.returncode == 0, pip.stderr
    vlmdiff = venv / "bin" / "vlmdiff"
    assert vlmdiff.is_file()
    out = run([str(vlmdiff), "--help"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert all(stage in out.stdout for stage in cli.STAGES)
    out = run([str(vlmdiff), "test", "--help"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: vlmdiff test ") and "--scorer" in out.stdout
    where = run([str(python), "-c", "import ldm, utils, vlmdiff; print(vlmdiff.__file__, ldm.__file__, utils.__file__)"],
                cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert all(Path(f).is_relative_to(source) for f in where.stdout.split())
    # only the three packages are installed: no top-level `train` or `test` (the standard library's name)
    other = run([str(python), "-c", "import importlib.util as u; print(u.find_spec('train'), u.find_spec('scripts'))"],
                cwd=tmp_path)
    assert other.stdout.split() == ["None", "None"], other.stderr


def test_wheel_holds_the_packages_the_assets_and_the_entry_point(source, tmp_path):
    build = run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_wheel({str(tmp_path)!r})"],
                cwd=source)
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("vlmdiff-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == set(PACKAGES)
    for module in ("ldm/modules/unet.py", "vlmdiff/cli/__init__.py", "vlmdiff/cli/test.py", "vlmdiff/data/datasets.py",
                   "utils/io.py", "vlmdiff/assets/tiny_sd.safetensors", "vlmdiff/assets/tiny_autoencoder.safetensors"):
        assert module in names, module
    assert not [n for n in names if "__pycache__" in n]
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert re.search(r"^\[console_scripts\]\s*^vlmdiff = vlmdiff\.cli:main$", text, re.M), text


@pytest.mark.parametrize("stage", list(cli.STAGES))
def test_vlmdiff_dispatches_each_stage(stage, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([stage, "--help"])
    assert exit_.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith(f"usage: vlmdiff {stage} ")
    assert ("--predict" in usage) == (stage in ("test", "predict"))


def test_vlmdiff_command_line_errors_and_predict(capsys):
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert cli.main(["predict", "--resume_path", "x.ckpt"]) == 2
    assert "give the image folder first" in capsys.readouterr().err
    assert cli.predict_argv(["imgs", "--threshold", "0.5"]) == ["--predict", "imgs", "--threshold", "0.5"]
    assert cli.predict_argv(["--predict", "imgs"]) == ["--predict", "imgs"]


def test_each_script_wraps_its_stage_module():
    assert set(SCRIPTS.values()) == {module for module, _ in cli.STAGES.values()}
    for script, module in SCRIPTS.items():
        assert f"from vlmdiff.cli.{module} import main" in (ROOT / script).read_text(), script


def python_files():
    skip = {"tests", "build", "dist", "runs", "models", "outputs", "venv"}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if not (rel.parts[0] in skip or any(p.startswith(".") or p == "__pycache__" for p in rel.parts)):
            yield rel


def test_no_sys_path_edits_but_the_one_checkout_helper():
    edits = {}
    for rel in python_files():
        n = len(re.findall(r"sys\.path\.(insert|append)\(", (ROOT / rel).read_text()))
        if n:
            edits[str(rel)] = n
    assert edits == {"scripts/_checkout.py": 1}


def test_nothing_imports_the_top_level_scripts():
    scripts = {Path(s).stem for s in SCRIPTS if "/" not in s}  # captioner, train, test (the stdlib's name), ...
    offenders = []
    for rel in [*python_files(), *(p.relative_to(ROOT) for p in (ROOT / "tests").rglob("*.py"))]:
        for node in ast.walk(ast.parse((ROOT / rel).read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{rel}: {n}" for n in names if n.split(".")[0] in scripts or n == "scripts.demo"]
    assert offenders == []


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_help_answers_without_torch(script, tmp_path):
    """``python <script> --help`` from another folder: the checkout needs no install, and torch is not imported."""
    start = time.perf_counter()
    out = run([sys.executable, "-X", "importtime", str(ROOT / script), "--help"], cwd=tmp_path)
    seconds = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: {Path(script).name} ")
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "vlmdiff.cli" in imported  # the importtime log is read correctly
    assert not imported & {"torch", "lightning", "transformers"}
    assert seconds < 6, f"{script} --help took {seconds:.1f} s"
