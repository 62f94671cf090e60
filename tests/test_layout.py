"""The layout rules of the package, checked on its source: no import cycle, commands are
shells that no module imports, one place decides a kernel's structure, and the docs cite
only files that exist."""

import ast
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "dlm_jax")
FLAG_HELPERS = {"dlm_jax.cli", "dlm_jax.distributed"}   # shared flag sets, no main


def _modules():
  out = {}
  for directory, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        out[module.removesuffix(".__init__")] = path
  return out


def _imports(path, modules):
  """dlm_jax modules imported anywhere in the file (lazy imports included)."""
  found = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    found |= {n for n in names if n in modules}
  return found


def _graph():
  modules = _modules()
  return {m: _imports(p, modules) - {m} for m, p in modules.items()}, modules


def test_no_import_cycle():
  graph, _ = _graph()
  state = {}

  def visit(node, stack):
    state[node] = "open"
    for dep in graph[node]:
      if dep.startswith(node + "."):     # a package importing its own submodule
        continue
      if state.get(dep) == "open":
        raise AssertionError("import cycle: " + " -> ".join(stack + [node, dep]))
      if dep not in state:
        visit(dep, stack + [node])
    state[node] = "done"

  for module in sorted(graph):
    if module not in state:
      visit(module, [])


def test_commands_are_not_imported():
  graph, modules = _graph()
  commands = {m for m, p in modules.items()
              if "__name__ == \"__main__\"" in open(p, encoding="utf-8").read()}
  defines_flags = {m for m, p in modules.items()
                   if re.search(r"^(config_)?flags\.DEFINE", open(p, encoding="utf-8").read(),
                                re.M)}
  assert {"dlm_jax.train", "dlm_jax.evaluate", "dlm_jax.sample"} <= commands
  for module, deps in graph.items():
    assert not deps & commands, f"{module} imports the command(s) {deps & commands}"
  assert defines_flags <= FLAG_HELPERS, f"flags defined at import time in {defines_flags}"


def test_structure_is_decided_in_the_registry_only():
  pattern = re.compile(r"structure ==|name == \"masking\"|\.causal\b|kernel is None")
  allowed = {os.path.join(PACKAGE, "kernels", "family.py"),
             os.path.join(PACKAGE, "objectives.py"),
             os.path.join(PACKAGE, "models", "transformer.py")}
  for module, path in _modules().items():
    if path in allowed:
      continue
    for lineno, line in enumerate(open(path, encoding="utf-8"), 1):
      assert not pattern.search(line), f"{path}:{lineno}: {line.strip()}"


def test_docs_cite_existing_files():
  docs = [os.path.join(ROOT, "README.md")] + [
      os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
      if f.endswith(".md")]
  cited = re.compile(r"((?:dlm_jax|docs|configs|tests|benchmarks|scripts|launch)/[\w/.]*\w)")
  for doc in docs:
    text = open(doc, encoding="utf-8").read()
    assert "DESIGN.md" not in text and "REFERENCE.md" not in text, doc
    for ref in set(cited.findall(text)):
      if "*" in ref or ref.endswith("/"):
        continue
      # a path, a path inside dlm_jax/, or an output stem (<stem>.json/.md/.png)
      assert (glob.glob(os.path.join(ROOT, ref) + "*")
              or os.path.exists(os.path.join(ROOT, "dlm_jax", ref))), \
          f"{os.path.relpath(doc, ROOT)} cites {ref}, which does not exist"


def test_models_know_nothing_of_kernels():
  graph, _ = _graph()
  for module, deps in graph.items():
    if module.startswith("dlm_jax.models"):
      assert not {d for d in deps if d.startswith("dlm_jax.kernels")}, module
      text = open(_modules()[module], encoding="utf-8").read()
      assert "noise_level" not in text and "kernel.structure" not in text, module


def test_random_streams_never_overlap():
  """Keys come from named streams (dlm_jax/rng.py) and fold_in, never key(seed + n)."""
  pattern = re.compile(r"key\(\s*\w*seed\s*\+|seed \+ [0-9]")
  for module, path in _modules().items():
    for lineno, line in enumerate(open(path, encoding="utf-8"), 1):
      assert not pattern.search(line), f"{path}:{lineno}: {line.strip()}"


def test_data_sources_are_chosen_once():
  """Only the source registry and the experiment look at config.data.source; everything else
  asks the Source (dlm_jax/data/sources/)."""
  pattern = re.compile(r"source ==|source in|source !=|\.source\b ?==")
  allowed = os.path.join(PACKAGE, "data", "sources")
  for module, path in _modules().items():
    if path.startswith(allowed) or path == os.path.join(PACKAGE, "experiment.py"):
      continue
    for lineno, line in enumerate(open(path, encoding="utf-8"), 1):
      assert not pattern.search(line), f"{path}:{lineno}: {line.strip()}"


def test_readme_layout_lists_every_module():
  text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  layout = text[text.index("## Layout"):]
  layout = layout[: layout.index("```", layout.index("```") + 3)]
  for module, path in _modules().items():
    name = os.path.basename(path)
    if name == "__init__.py" and module not in ("dlm_jax.data.sources",):
      continue
    shown = name if name != "__init__.py" else "__init__.py"
    assert shown in layout, f"README's layout does not list {os.path.relpath(path, ROOT)}"


def test_the_library_never_imports_the_shipped_configs():
  """Drivers that combine configs/ with the library live in experiments/, not in dlm_jax/."""
  for module, path in _modules().items():
    text = open(path, encoding="utf-8").read()
    assert not re.search(r"^\s*(from configs\b|import configs\b)", text, re.M), path
