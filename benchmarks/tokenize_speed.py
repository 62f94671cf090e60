r"""bert-base-uncased WordPiece speed on LM1B-sized sentences, and id parity with the reference.

  python benchmarks/tokenize_speed.py [--sentences=200000] [--reference]

Sentences are the quickstart corpus's lines joined in fours (~25 words; LM1B averages ~27 tokens), cycled
to --sentences. Prints sentences/s of dlm_jax's WordPiece (Hugging Face `tokenizers`, batch
encoding, all cores) and the hours it needs for LM1B's 30.3M training sentences; with
--reference also of transformers' BertTokenizer (Python, the tokenizer MDLM's LM1B pipeline
uses) on a tenth of them, and whether the two give identical ids there.
"""

import argparse
import glob
import itertools
import time

from dlm_jax.data.sources import files
from dlm_jax.data.tokenizer import WordPieceTokenizer

LM1B_TRAIN_SENTENCES = 30_301_028


def sentences(n: int) -> list[str]:
  lines = []
  for path in sorted(glob.glob(files.quickstart_pattern())):
    with open(path, encoding="utf-8") as f:
      lines.extend(line.strip() for line in f if line.strip())
  joined = [" ".join(lines[i:i + 4]) for i in range(0, len(lines) - 3, 4)]
  return list(itertools.islice(itertools.cycle(joined), n))


def rate(encode, texts) -> tuple[float, list]:
  start = time.perf_counter()
  ids = encode(texts)
  return len(texts) / (time.perf_counter() - start), ids


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--sentences", type=int, default=200_000)
  parser.add_argument("--reference", action="store_true")
  args = parser.parse_args()
  texts = sentences(args.sentences)
  words = sum(len(t.split()) for t in texts) / len(texts)
  tok = WordPieceTokenizer()
  ours, ids = rate(tok.encode, texts)
  print(f"{len(texts)} sentences, {words:.1f} words each")
  print(f"dlm_jax WordPiece (tokenizers): {ours:,.0f} sentences/s; LM1B train: "
        f"{LM1B_TRAIN_SENTENCES / ours / 3600:.2f} h")
  if args.reference:
    from transformers import BertTokenizer  # pylint: disable=g-import-not-at-top
    ref = BertTokenizer(tok.path, do_lower_case=True)
    subset = texts[: len(texts) // 10]
    theirs, ref_ids = rate(lambda ts: [ref.convert_tokens_to_ids(ref.tokenize(t)) for t in ts],
                           subset)
    same = sum(a == b for a, b in zip(ids, ref_ids))
    print(f"transformers BertTokenizer (Python): {theirs:,.0f} sentences/s; LM1B train: "
          f"{LM1B_TRAIN_SENTENCES / theirs / 3600:.2f} h; identical ids on {same}/{len(subset)}")


if __name__ == "__main__":
  main()
