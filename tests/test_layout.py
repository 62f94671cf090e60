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


KERNEL_PARTS = re.compile(r"kernel\.(structure|is_absorbing|has_mask|mean_form|table_kind|"
                          r"reports_truncated|is_markov|sem|glob|mask|table)\b")


def test_the_process_answers_for_itself():
  """Nothing outside kernels/ reads the process's parts; no identity-hashed stand-ins."""
  for path in _modules().values():
    text = open(path, encoding="utf-8").read()
    assert not re.search(r"shape_only_kernel|eq=False|\.structure\b", text), path
    if os.sep + "kernels" + os.sep in path:
      continue
    for lineno, line in enumerate(text.splitlines(), 1):
      assert not KERNEL_PARTS.search(line), f"{path}:{lineno}: {line.strip()}"


def test_one_process_loss_per_kernel_module():
  """No module under kernels/ defines the loss (`integrand`) of more than one process class."""
  assert not os.path.exists(os.path.join(PACKAGE, "kernels", "markov.py"))
  for path in glob.glob(os.path.join(PACKAGE, "kernels", "*.py")):
    tree = ast.parse(open(path, encoding="utf-8").read())
    losses = [node.name for node in tree.body if isinstance(node, ast.ClassDef)
              and any(isinstance(f, ast.FunctionDef) and f.name == "integrand" for f in node.body)]
    assert len(losses) <= 1, f"{path} holds the losses of {losses}"


def test_no_table_is_a_constant_of_the_train_step():
  """The process enters the jitted train step as an argument: the lowered step of a tiny
  SemDLM+ run holds no constant with >= V elements (its tables were 6 such constants when the
  process was closed over)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import quickstart_semdlm_plus  # pylint: disable=g-import-not-at-top
  from dlm_jax import experiment, objectives, parallel  # pylint: disable=g-import-not-at-top
  from dlm_jax.data.tokenizer import VocabularyOnly  # pylint: disable=g-import-not-at-top
  from dlm_jax.kernels import family, neighbors  # pylint: disable=g-import-not-at-top
  V = 300
  for global_kind in ("uniform", "mask"):
    cfg = quickstart_semdlm_plus.get_config()
    cfg.kernel.global_kind = global_kind
    cfg.data.seq_len, cfg.train.batch_size = 16, 2
    cfg.model.num_layers, cfg.model.d_model, cfg.model.num_heads = 1, 16, 2
    emb = np.random.default_rng(0).normal(size=(V, 8))
    table = neighbors.build(emb, cfg.kernel.neighbors, cfg.kernel.k, "test", special=())
    process = family.make_process(cfg.kernel, V, table, np.arange(1.0, V + 1))
    objective = objectives.make_objective(cfg, lambda: process)
    mesh = parallel.make_mesh(-1, 1, jax.devices()[:1])
    exp = experiment.assemble(cfg, "", mesh, VocabularyOnly(V), objective)
    batch = {"tokens": jax.ShapeDtypeStruct((2, 16), np.int32, sharding=exp.batch_sharding)}
    text = exp.jit_train_step().lower(exp.abstract_state, batch, jax.random.key(0)).as_text()
    shapes = re.findall(r"stablehlo\.constant[^\n]*?: tensor<([0-9x]+)x?[a-z]", text)
    sizes = [int(np.prod([int(d) for d in s.split("x") if d])) for s in shapes]
    assert shapes and max(sizes) < V, (global_kind, sorted(sizes)[-5:])
