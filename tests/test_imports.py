"""Every module imports from what ``setup.py`` declares, and nothing else.

A package that the code imports but no dependency list names works on the machine that happens
to have it and fails on a user's clean one (issue 21: ``grain`` and ``cleanlab``). Two checks:

* statically, from the source (``ast``): each third-party import of the library, configs,
  experiments and examples is declared in ``install_requires`` (at module level) or in an extra
  (inside a function: an optional package loaded only where needed); each of the tests' imports
  is declared in ``install_requires`` or the ``test`` extra, which the README's test command
  installs;
* by importing: every module of ``gdw_jax``, ``configs``, ``experiments`` and ``examples``
  imports in a fresh interpreter in which the optional extras cannot be imported, and a command
  that needs one says so on one line naming the ``pip install`` that fixes it.
"""
import ast
import functools
import importlib.metadata
import json
import os
import re
import runpy
import subprocess
import sys
from unittest import mock

import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("gdw_jax", "configs", "experiments", "examples")
LOCAL = set(SOURCES) | {"tests"} | {f[:-3] for f in os.listdir(os.path.join(ROOT, "tests"))
                                    if f.endswith(".py")}
# Imported packages that come with a declared one by construction (jax requires its own jaxlib).
PROVIDED_BY = {"jaxlib": "jax"}
# The extras that are optional to the library (the test extra is the suite's).
OPTIONAL = ("tensorboard", "compare")


def _norm(name: str) -> str:
  """A distribution's name as pip compares them (PEP 503): case and -_. don't matter."""
  return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
  return _norm(re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0])


def declared():
  """(install_requires, extras) as ``setup.py`` passes them to setuptools (run, not parsed, so
  lists built from other lists are read as pip reads them)."""
  seen = {}
  stand_in = types.SimpleNamespace(setup=lambda **kw: seen.update(kw),
                                   find_packages=lambda **kw: [])
  with mock.patch.dict(sys.modules, {"setuptools": stand_in}):
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
      runpy.run_path(os.path.join(ROOT, "setup.py"), run_name="__main__")
    finally:
      os.chdir(cwd)
  core = {_requirement_name(r) for r in seen["install_requires"]}
  extras = {k: {_requirement_name(r) for r in v} for k, v in seen["extras_require"].items()}
  return core, extras


def imports(path: str):
  """(top-level module name, line, inside a function) of each absolute import in ``path``."""
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  found = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
      if isinstance(child, ast.Import):
        found.extend((a.name.split(".")[0], child.lineno, in_function) for a in child.names)
      elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
        found.append((child.module.split(".")[0], child.lineno, in_function))
      visit(child, inner)

  visit(tree, False)
  return found


def python_files(folder: str):
  for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
    for f in sorted(files):
      if f.endswith(".py"):
        yield os.path.join(dirpath, f)


@functools.lru_cache(maxsize=None)
def _installed():
  return importlib.metadata.packages_distributions()


def distributions_of(module: str):
  """The distributions that install top-level ``module`` here (none: not installed)."""
  if module in PROVIDED_BY:
    return {_norm(PROVIDED_BY[module])}
  return {_norm(d) for d in _installed().get(module, [])}


def undeclared(folders, allowed_at_top, allowed_in_functions):
  """'file:line imports X (distribution D), not declared' for each import outside the lists."""
  problems = []
  for folder in folders:
    for path in python_files(folder):
      for module, line, in_function in imports(path):
        if module in sys.stdlib_module_names or module in LOCAL:
          continue
        dists = distributions_of(module)
        allowed = allowed_in_functions if in_function else allowed_at_top
        if not dists & set(allowed):
          where = os.path.relpath(path, ROOT)
          named = ", ".join(sorted(dists)) or "none installed"
          problems.append(f"{where}:{line} imports {module} (distribution {named})"
                          f"{' inside a function' if in_function else ''}, not declared")
  return problems


def test_setup_declares_what_the_readme_needs():
  core, extras = declared()
  assert {"grain", "jax", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets"} <= core
  # The README's test command installs only [test]: it must carry every optional extra.
  assert set().union(*(extras[k] for k in OPTIONAL)) <= extras["test"]
  assert {"pytest", "pytest-xdist", "cleanlab", "tensorboardx"} <= extras["test"]


def test_library_imports_only_declared_packages():
  core, extras = declared()
  optional = core.union(*(extras[k] for k in OPTIONAL))
  assert undeclared(SOURCES, core, optional) == []


def test_tests_import_only_declared_packages():
  core, extras = declared()
  allowed = core | extras["test"]
  assert undeclared(["tests"], allowed, allowed) == []


def test_the_check_finds_an_undeclared_import(tmp_path, monkeypatch):
  """The static check is not vacuous: an import of a package no list names is reported, with
  its file and line; one inside a function may come from an extra, not at module level."""
  folder = tmp_path / "pkg"
  folder.mkdir()
  (folder / "m.py").write_text("import os\nimport numpy\nimport cleanlab\n\n"
                               "def f():\n  import cleanlab\n")
  monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
  found = undeclared(["pkg"], {"numpy"}, {"numpy", "cleanlab"})
  assert found == ["pkg/m.py:3 imports cleanlab (distribution cleanlab), not declared"]


# Run in a fresh interpreter: the optional extras' packages cannot be imported there, as on a
# machine that installed only `pip install -e .`.
_IMPORT_ALL = r"""
import importlib, importlib.abc, json, pkgutil, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
    return None
sys.meta_path.insert(0, Block())
names, failed = [], {}
for package in sys.argv[2].split(","):
  names.append(package)
  names += [m.name for m in pkgutil.walk_packages(importlib.import_module(package).__path__,
                                                  package + ".")]
for name in names:
  try:
    importlib.import_module(name)
  except BaseException as e:  # noqa: BLE001 (report every module, not the first)
    failed[name] = f"{type(e).__name__}: {e}"
print(json.dumps({"imported": names, "failed": failed}))
"""


def optional_modules():
  """Top-level module names the optional extras install (tensorboardX, cleanlab)."""
  _, extras = declared()
  dists = set().union(*(extras[k] for k in OPTIONAL))
  return sorted(m for m, ds in _installed().items()
                if any(_norm(d) in dists for d in ds) and not m.startswith("_"))


def test_every_module_imports_without_the_optional_extras():
  blocked = optional_modules()
  assert {"cleanlab", "tensorboardX"} <= set(blocked)
  out = subprocess.run([sys.executable, "-c", _IMPORT_ALL, ",".join(blocked), ",".join(SOURCES)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["failed"] == {}
  expected = {os.path.relpath(p, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
              for folder in SOURCES for p in python_files(folder)}
  assert expected <= set(result["imported"])


def test_a_command_that_needs_an_extra_says_so_on_one_line(monkeypatch, capsys):
  """Without cleanlab, the detection benchmark's comparison stops with one line naming the
  install; without tensorboardX, ``tensorboard=True`` is refused the same way."""
  from experiments import detect_benchmark
  from gdw_jax import metrics
  monkeypatch.setitem(sys.modules, "cleanlab", None)  # `import cleanlab` raises ImportError
  monkeypatch.setitem(sys.modules, "tensorboardX", None)
  assert detect_benchmark.main(["--seeds", "1", "--epochs", "1"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "pip install -e '.[compare]'" in err, err
  why = metrics.tensorboard_available()
  assert why is not None and "\n" not in why and "pip install 'gdw_jax[tensorboard]'" in why


@pytest.mark.parametrize("command", [0, 1])
def test_ci_runs_the_readme_commands(command):
  """``.ci/run`` runs the README's two commands as written: it reads them from README.md (the
  first ``bash`` block) with ``.ci/readme_commands.py``; they are the install-and-run and the
  install-and-test a new user types."""
  out = subprocess.run([sys.executable, os.path.join(ROOT, ".ci", "readme_commands.py"),
                        str(command)], capture_output=True, text=True, check=True)
  line = out.stdout.strip()
  readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  assert "\n" not in line and f"\n{line}\n" in readme
  assert line.startswith("pip install -e .") if command == 0 else line.startswith(
      "pip install -e '.[test]'")
  assert ("python -m gdw_jax.main --config=configs/digits.py" in line if command == 0
          else line.endswith("pytest -q"))
