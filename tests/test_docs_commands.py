"""Docs that cannot drift: every `python -m dlm_jax...` / `python -m experiments...` command in
README.md, docs/*.md and scripts/*.sh names a module that exists, flags that module defines,
config files that exist and config keys of the schema (dlm_jax/config_schema.py). And each
command's `--help` lists its own flags (exit 0)."""

import glob
import importlib
import os
import re
import shlex

from absl import flags
import pytest

from dlm_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = sorted([os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(ROOT, "docs", "*.md"))
              + glob.glob(os.path.join(ROOT, "scripts", "*.sh")))
COMMAND = re.compile(r"python -m ((?:dlm_jax|experiments)(?:\.\w+)+)(?=[\s`]|$)([^`|;&#\n]*)")


def commands():
  """(file, module, [arguments]) of every documented command; line continuations joined."""
  found = []
  for path in DOCS:
    with open(path, encoding="utf-8") as f:
      text = re.sub(r"\\\n\s*", " ", f.read())
    for match in COMMAND.finditer(text):
      try:
        args = shlex.split(match.group(2))
      except ValueError:                 # an unbalanced quote: shell text, not one command
        args = match.group(2).split()
      found.append((os.path.relpath(path, ROOT), match.group(1),
                    [a.strip("[]") for a in args]))
  return found


def module_flags(module: str) -> set:
  """The flags `python -m module` accepts: its own (define_flags) and the global ones."""
  before = set(flags.FLAGS)
  mod = importlib.import_module(module)
  if hasattr(mod, "define_flags"):
    mod.define_flags()
  names = set(flags.FLAGS)
  for name in names - before:              # leave the global FlagValues as it was
    delattr(flags.FLAGS, name)
  return names


def test_the_docs_hold_commands():
  found = commands()
  assert len(found) > 40 and {m for _, m, _ in found} >= {
      "dlm_jax.train", "dlm_jax.evaluate", "dlm_jax.sample", "dlm_jax.aot"}


@pytest.mark.parametrize("module", sorted({m for _, m, _ in commands()}))
def test_documented_commands_name_real_modules_flags_configs_and_keys(module):
  accepted = module_flags(module)
  problems = []
  for path, _, args in (c for c in commands() if c[1] == module):
    for arg in args:
      if not arg.startswith("--"):
        continue
      name, _, value = arg[2:].partition("=")
      if name.startswith("config."):
        bad = cli.unknown_override([f"--{name}=x"])
        if bad is not None:
          problems.append(f"{path}: {module} --{name}: no config key {bad!r}")
        continue
      placeholder = any(mark in value for mark in ("$", "<", "..."))
      if name == "config" and value and not placeholder:
        if not os.path.exists(os.path.join(ROOT, value.split(":")[0])):
          problems.append(f"{path}: {module} --config={value}: no such file")
      if name in accepted or (name.startswith("no") and name[2:] in accepted):
        continue
      problems.append(f"{path}: {module} has no flag --{name}")
  assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module", ["dlm_jax.train", "dlm_jax.sample", "dlm_jax.evaluate",
                                    "dlm_jax.analysis.tune_sampler", "dlm_jax.aot"])
def test_help_lists_the_commands_own_flags_and_exits_0(module, monkeypatch, capsys):
  mod = importlib.import_module(module)
  before = set(flags.FLAGS)
  monkeypatch.setattr("sys.argv", [mod.__file__, "--help"])
  monkeypatch.setitem(__import__("sys").modules, "__main__", mod)
  try:
    with pytest.raises(SystemExit) as exit_info:
      cli.run_app(module, lambda argv: None, mod.define_flags)
  finally:
    for name in set(flags.FLAGS) - before:
      delattr(flags.FLAGS, name)
  assert exit_info.value.code in (0, None)
  out = capsys.readouterr().out
  assert mod.__doc__.strip().splitlines()[0] in out
  assert "--coordinator_address" in out and "grain_" not in out      # absl's: --helpfull
  if module in ("dlm_jax.sample", "dlm_jax.evaluate"):         # defined in dlm_jax/cli.py
    assert "--temperature" in out and "--unmasking" in out
  if module == "dlm_jax.train":
    assert "--print_config" in out and "--workdir" in out
