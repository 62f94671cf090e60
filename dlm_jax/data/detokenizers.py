"""The detokenizers of the MDLM / Duo evaluation suite (MDLM, arXiv 2406.07524; Duo, arXiv
2506.10892): several benchmark corpora ship pre-tokenised text ("don 't", "3 @.@ 5"), which
those papers turn back into running text before GPT-2 tokenisation. Perplexities are only
comparable with theirs when the same rewrite is applied, so each rule list below performs
their substitutions in their order (the order matters: later rules see earlier output).

A rule is (pattern, replacement, regex?). `detokenize(name, text)` applies a named list.
"""

from __future__ import annotations

import re

from dlm_jax.errors import UserError

_WIKITEXT = (
    ("s '", "s'", False),
    (r"/' [0-9]/", r"/'[0-9]/", True),
    (" @-@ ", "-", False), (" @,@ ", ",", False), (" @.@ ", ".", False),
    (" : ", ": ", False), (" ; ", "; ", False), (" . ", ". ", False),
    (" ! ", "! ", False), (" ? ", "? ", False), (" , ", ", ", False),
    (r"\(\s*([^\)]*?)\s*\)", r"(\1)", True),
    (r"\[\s*([^\]]*?)\s*\]", r"[\1]", True),
    (r"{\s*([^}]*?)\s*}", r"{\1}", True),
    (r"\"\s*([^\"]*?)\s*\"", r'"\1"', True),
    (r"'\s*([^']*?)\s*'", r"'\1'", True),
    ("= = = =", "====", False), ("= = =", "===", False), ("= =", "==", False),
    (" \u00b0 ", "\u00b0", False),
    (" \n", "\n", False), ("\n ", "\n", False),
    (" N ", " 1 ", False),
    (" 's", "'s", False),
)

_PTB = (
    (" 's", "'s", False), ("s ' ", "s' ", False), (" n't", "n't", False),
    (" \n ", "\n", False), ("\\/", "/", False),
    *((" N ", " 1 ", False),) * 10,     # overlapping " N N " needs repeated passes
    ("$ 1", "$1", False), ("# 1", "#1", False),
    ("<unk>", "?", False),
)

_LM1B = (
    ("http : / / ", "http://", False), ("https : / / ", "https://", False),
    (r" '(\w+)", r"'\1", True),
    (r" (\w+) \. ", r" \1. ", True),
    (r" (\w+) \.$", r" \1.", True),
    (" ? ", "? ", False), (r" \?$", "?", True),
    (" ! ", "! ", False), (r" \!$", "!", True),
    (" , ", ", ", False), (" : ", ": ", False), (" ; ", "; ", False), (" / ", "/", False),
    (r"\" ([^\"]+) \"", r'"\1"', True),
    (r"' ([^']+) '", r"'\1'", True),
    (r"\( ([^\(\)]+) \)", r"(\1)", True),
    (r"\[ ([^\[\]]+) \]", r"[\1]", True),
    ("$ ", "$", False), ("\u00a3 ", "\u00a3", False),
)

_LAMBADA = (("\u201c", '"', False), ("\u201d", '"', False))

RULES = {
    "wikitext": _WIKITEXT,
    "ptb": _PTB,
    "lm1b": _LM1B,
    "lambada": _LAMBADA,
    "scientific_papers": _WIKITEXT + _LM1B,
}
NAMES = ("",) + tuple(RULES)


def _apply(rules, text: str) -> str:
  for pattern, replacement, is_regex in rules:
    text = re.sub(pattern, replacement, text) if is_regex else text.replace(pattern, replacement)
  return text


def detokenize(name: str, text: str) -> str:
  """`text` rewritten by the named detokenizer ("" leaves it unchanged)."""
  if not name:
    return text
  if name not in RULES:
    raise UserError(f"data.detokenizer must be one of {list(NAMES)}, got {name!r}")
  text = _apply(RULES[name], text)
  if name == "lambada":          # the LAMBADA passages are scored as a new paragraph
    text = "\n" + text.strip()
  return text
