"""The package's import graph, read from the source with ``ast`` (nothing is imported).

What it keeps (issue 22: one direction of flow):

* no import cycle between the package's modules, counting the imports inside functions too;
* no import inside a function, except the lazy imports of heavy or optional third-party packages
  listed in :data:`LAZY_OK`, each with its reason (never one of the package's own modules);
* the trainer's layers (:data:`TRAINER_LAYERS`) import only downwards, and the library below them
  imports none of them;
* the loss module knows no method.

A submodule's implicit import of its parent package (``gdw_jax.models.heads`` runs
``gdw_jax/models/__init__.py`` first) is not an edge: Python initialises the parent first and the
parent's own imports are edges of the parent.
"""
import ast
import collections
import os
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

PACKAGE = "gdw_jax"
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)

# Imports allowed inside a function: third-party packages heavy to import, or optional, loaded
# only where they are used. Each entry must be used (test_every_lazy_import_is_used).
LAZY_OK = {
    "matplotlib": "drawing (about 0.7 s to import): the first figure loads it, so the trainer "
                  "imports the analysis without it and a run with report=false never loads it",
    "sklearn": "about 2 s to import: only the digits data, CMW-Net's task families (k-means) and "
               "the label-error AUCs use it",
    "tensorflow_datasets": "slow to import (TensorFlow): only the tfds sources read it",
    "tensorboardX": "optional extra (pip install gdw_jax[tensorboard]), config.tensorboard only",
    "grain": "optional (input_pipeline=stream only)",
    "flax.nnx": "only adapters.from_nnx needs NNX (0.25 s to import)",
    "jax._src": "cpu_flags imports no jax (its flags must be set before JAX starts): it asks "
                "whether the backends started only when jax is imported already",
}

# The trainer, top to bottom (gdw_jax/train.py's docstring); a layer imports only lower ones.
TRAINER_LAYERS = (
    ("gdw_jax.pll_pipeline",),  # PRODEN -> CMW-Net: three runs of the trainer, one launch
    ("gdw_jax.main",),
    ("gdw_jax.train",),
    ("gdw_jax.loop",),
    ("gdw_jax.inputs",),
    ("gdw_jax.runs",),
    ("gdw_jax.steps", "gdw_jax.guards", "gdw_jax.train_step"),
)
# Tools outside the trainer that run a piece of it, and which.
TOOLS = {"gdw_jax.parity": ("gdw_jax.train_step",)}  # one run's step, against the official code


class Import(NamedTuple):
  module: str             # the importing module
  path: str               # its file, relative to the repository
  line: int
  function: Optional[str]  # the enclosing function ("Class.method"), None at module level
  target: str             # the dotted name imported (a module of the package, or any name)


def _modules() -> Dict[str, str]:
  """``{dotted module name: file}`` of every module of the package."""
  out = {}
  for folder, _, files in os.walk(ROOT):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
        out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
  return out


MODULES = _modules()


def _own(name: str) -> Optional[str]:
  """The package module that importing ``name`` means (longest module prefix), else None."""
  parts = name.split(".")
  while parts:
    if ".".join(parts) in MODULES:
      return ".".join(parts)
    parts.pop()
  return None


def _imports(module: str, path: str) -> List[Import]:
  """Every import statement of one file, with the function it is in (if any)."""
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
  rel = os.path.relpath(path, os.path.dirname(ROOT))
  out: List[Import] = []

  def visit(node, scope: List[str], in_function: bool):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        visit(child, scope + [getattr(child, "name", "<lambda>")], True)
      elif isinstance(child, ast.ClassDef):
        visit(child, scope + [child.name], in_function)
      else:
        for target in _targets(child, package):
          out.append(Import(module, rel, child.lineno, ".".join(scope) if in_function else None,
                            target))
        visit(child, scope, in_function)

  visit(tree, [], False)
  return out


def _targets(node, package: str) -> List[str]:
  if isinstance(node, ast.Import):
    return [a.name for a in node.names]
  if isinstance(node, ast.ImportFrom):
    base = node.module or ""
    if node.level:  # relative: from .x import y
      parts = package.split(".")[:len(package.split(".")) - node.level + 1]
      base = ".".join(parts + ([node.module] if node.module else []))
    # "from a import b" imports module a.b when there is one, else names from a
    return [f"{base}.{a.name}" if _own(f"{base}.{a.name}") == f"{base}.{a.name}" or
            _own(base) is None else base for a in node.names]
  return []


IMPORTS = [i for m, p in sorted(MODULES.items()) for i in _imports(m, p)]


def _graph() -> Dict[str, Dict[str, Import]]:
  """``{module: {imported package module: the first such import}}``, self-imports left out."""
  graph: Dict[str, Dict[str, Import]] = collections.defaultdict(dict)
  for imp in IMPORTS:
    target = _own(imp.target)
    if target is not None and target != imp.module:
      graph[imp.module].setdefault(target, imp)
  return graph


def _where(imp: Import) -> str:
  inside = f" (inside {imp.function}())" if imp.function else ""
  return f"{imp.path}:{imp.line}{inside}"


def _cycles(graph) -> List[Tuple[List[str], Set[str]]]:
  """``(cycle, component)``: one shortest cycle through each strongly connected component of
  more than one module (modules that import each other, directly or not), and the component."""
  index, low, stack, on_stack, comps = {}, {}, [], set(), []

  def connect(v):  # Tarjan
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, {}):
      if w not in index:
        connect(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = set()
      while True:
        w = stack.pop()
        on_stack.discard(w)
        comp.add(w)
        if w == v:
          break
      if len(comp) > 1:
        comps.append(comp)

  for v in sorted(MODULES):
    if v not in index:
      connect(v)
  cycles = []
  for comp in comps:
    start = min(comp)
    parent, queue = {start: None}, collections.deque([start])
    while queue:  # breadth first, back to start
      v = queue.popleft()
      for w in sorted(graph.get(v, {})):
        if w == start:
          path = [v]
          while parent[path[-1]] is not None:
            path.append(parent[path[-1]])
          cycles.append((path[::-1] + [start], comp))
          queue.clear()
          break
        if w in comp and w not in parent:
          parent[w] = v
          queue.append(w)
  return cycles


def test_the_source_is_read():
  """The reader sees the package (a moved root would make every test below pass vacuously)."""
  assert {"gdw_jax.train", "gdw_jax.loop", "gdw_jax.losses", "gdw_jax.methods"} <= set(MODULES)
  graph = _graph()
  assert "gdw_jax.loop" in graph["gdw_jax.train"]
  assert "gdw_jax.losses" in graph["gdw_jax.methods.gdw"]


def test_no_import_cycle():
  graph = _graph()
  lines = []
  for cycle, comp in _cycles(graph):
    steps = [f"  {a} imports {b} at {_where(graph[a][b])}" for a, b in zip(cycle, cycle[1:])]
    tangle = (f" (one of the cycles among {len(comp)} modules that import each other: "
              f"{', '.join(sorted(comp))})" if len(comp) > len(cycle) - 1 else "")
    lines.append("import cycle " + " -> ".join(cycle) + tangle + ":\n" + "\n".join(steps))
  assert not lines, "\n".join(lines)


def _lazy_reason(target: str) -> Optional[str]:
  for name, reason in LAZY_OK.items():
    if target == name or target.startswith(name + "."):
      return reason
  return None


def test_no_import_inside_a_function_but_the_listed_lazy_ones():
  bad = []
  for imp in IMPORTS:
    if imp.function is None:
      continue
    if _own(imp.target) is not None:
      bad.append(f"{_where(imp)}: imports the package's own {_own(imp.target)}; import it at "
                 f"the top (a cycle it would close is a layering error to fix, not to hide)")
    elif _lazy_reason(imp.target) is None:
      bad.append(f"{_where(imp)}: imports {imp.target}; import it at the top, or add its "
                 f"package to LAZY_OK in tests/test_layers.py with the reason it must load late")
  assert not bad, "\n".join(bad)


def test_every_lazy_import_is_used():
  used = {name for name in LAZY_OK for imp in IMPORTS
          if imp.function is not None and _lazy_reason(imp.target) == LAZY_OK[name]}
  assert used == set(LAZY_OK), f"LAZY_OK lists unused entries: {sorted(set(LAZY_OK) - used)}"


def test_trainer_layers_import_only_downwards():
  graph = _graph()
  level = {m: i for i, layer in enumerate(TRAINER_LAYERS) for m in layer}
  assert set(level) <= set(MODULES), sorted(set(level) - set(MODULES))
  bad = []
  for module, targets in sorted(graph.items()):
    for target, imp in sorted(targets.items()):
      if target not in level:
        continue
      if module in level:
        if level[target] < level[module]:
          bad.append(f"{_where(imp)}: {module} imports {target}, a layer above it")
      elif target not in TOOLS.get(module, ()):
        bad.append(f"{_where(imp)}: {module} (below the trainer) imports the trainer's {target}")
  assert not bad, "\n".join(bad)


def test_losses_know_no_method():
  """What ``gdw_jax.losses`` imports, directly or not, holds no method: a method passes the loss
  settings its name implies (``MethodSpec.loss_overrides``, in its own file)."""
  graph, parent, todo = _graph(), {"gdw_jax.losses": None}, ["gdw_jax.losses"]
  while todo:
    module = todo.pop()
    for target in graph.get(module, {}):
      if target not in parent:
        parent[target] = module
        todo.append(target)
  for module in parent:
    if module == "gdw_jax.methods" or module.startswith("gdw_jax.methods."):
      chain = [module]
      while parent[chain[-1]] is not None:
        chain.append(parent[chain[-1]])
      chain.reverse()
      raise AssertionError("gdw_jax.losses reaches a method: " + "; ".join(
          f"{a} imports {b} at {_where(graph[a][b])}" for a, b in zip(chain, chain[1:])))


def test_reports_name_the_cycle_and_the_import(tmp_path, monkeypatch):
  """The failure messages above name each module of a cycle and the file, line and function of
  each import (checked on a made-up graph)."""
  fake = {
      "gdw_jax.a": {"gdw_jax.b": Import("gdw_jax.a", "gdw_jax/a.py", 3, None, "gdw_jax.b")},
      "gdw_jax.b": {"gdw_jax.a": Import("gdw_jax.b", "gdw_jax/b.py", 9, "f", "gdw_jax.a")},
  }
  monkeypatch.setitem(MODULES, "gdw_jax.a", str(tmp_path / "a.py"))
  monkeypatch.setitem(MODULES, "gdw_jax.b", str(tmp_path / "b.py"))
  ((cycle, comp),) = _cycles(fake)
  assert cycle == ["gdw_jax.a", "gdw_jax.b", "gdw_jax.a"] and comp == {"gdw_jax.a", "gdw_jax.b"}
  assert _where(fake["gdw_jax.b"]["gdw_jax.a"]) == "gdw_jax/b.py:9 (inside f())"
