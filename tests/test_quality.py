"""Sample-quality metrics against hand-computed values."""

import math

import numpy as np

from dlm_jax import quality


def test_entropy_and_distinct():
  s = np.array([1, 1, 2, 3])
  assert math.isclose(quality.unigram_entropy(s), -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
  assert quality.distinct_n(s, 1) == 3 / 4
  assert quality.distinct_n(np.array([1, 2, 1, 2, 1]), 2) == 2 / 4     # (1,2),(2,1) of 4
  assert quality.distinct_n(s, 5) == 0.0


def test_bleu_identical_disjoint_and_hand_value():
  a = [1, 2, 3, 4, 5, 6]
  assert math.isclose(quality.bleu(a, [a]), 1.0)
  assert quality.bleu(a, [[7, 8, 9, 10, 11, 12]]) == 0.0
  # hyp [1,2,3,4] vs ref [1,2,3,5]: p1 = 3/4, p2 = (2+1)/(3+1), p3 = (1+1)/(2+1), p4 = (0+1)/(1+1)
  expected = math.exp(sum(math.log(p) for p in (3 / 4, 3 / 4, 2 / 3, 1 / 2)) / 4)
  assert math.isclose(quality.bleu([1, 2, 3, 4], [[1, 2, 3, 5]]), expected)
  # Brevity penalty: a 2-token hypothesis against a 4-token reference.
  assert quality.bleu([1, 2], [[1, 2, 3, 4]]) < quality.bleu([1, 2, 3, 4], [[1, 2, 3, 4]])
  assert math.isclose(quality.self_bleu([a, a, a]), 1.0)


def test_basin_share_definition():
  # Neighbour table: 0 -> {1}, 2 -> {3}; everything else has none.
  ids = np.full((12, 1), -1)
  ids[0, 0], ids[2, 0] = 1, 3
  # Counts: 0 x3, 2 x2, 4..7 x1 each, 1 x1, 3 x1, 9 x1 -> top 5: 0, 2, then ids 1, 3, 4 (ties by id).
  s = np.array([0, 0, 0, 2, 2, 4, 5, 6, 7, 1, 3, 9])
  basin, top5 = quality.basin_shares(s, ids)
  assert math.isclose(top5, 8 / 12)                      # 0,0,0,2,2,4,1,3
  assert math.isclose(basin, 8 / 12)                     # neighbours 1 and 3 are already in F
  s2 = np.array([0, 0, 0, 0, 0, 1, 5, 6, 7, 8, 9, 10])    # F = {0, 1, 5, 6, 7}
  basin2, top52 = quality.basin_shares(s2, ids)
  assert math.isclose(top52, 9 / 12) and math.isclose(basin2, 9 / 12)
  ids[5, 0] = 8                                          # 8 becomes a neighbour of 5
  assert math.isclose(quality.basin_shares(s2, ids)[0], 10 / 12)


def test_content_tokens_drops_prompt_and_specials():
  rows = np.array([[1, 7, 8, 2, 0], [1, 9, 9, 9, 0]])
  out = quality.content_tokens(rows, {0, 1, 2}, skip=2)
  assert [o.tolist() for o in out] == [[8], [9, 9]]


def test_real_word_rate_counts_whole_words_only():
  # Words: letters with inner apostrophes, case-folded; a word touching the text's edge may be
  # cut, so it is not counted.
  assert quality.whole_words("ing the King's man, o'er 42 hi-fi 'tis end") == [
      "the", "king's", "man", "o'er", "hi", "fi", "tis"]
  assert quality.whole_words(". The end.") == ["the", "end"]
  vocabulary = frozenset({"the", "end", "king"})
  got = quality.real_word_rate([". The end. Kin. ", " the Qzx ."], vocabulary)
  assert got == {"real_word_rate": 3 / 5, "words": 5}
  assert math.isnan(quality.real_word_rate(["xyz"], vocabulary)["real_word_rate"])
  # The vocabulary: interior words of each decoded training row.
  rows = np.array([[1, 2, 3], [3, 2, 1]])
  decode = {(1, 2, 3): "ab cd ef", (3, 2, 1): "gh. ij kl"}
  vocab = quality.training_vocabulary(rows, lambda r: decode[tuple(r.tolist())])
  assert vocab == {"cd", "ij"}
  assert quality.training_vocabulary(rows, lambda r: decode[tuple(r.tolist())],
                                     max_tokens=3) == {"cd"}
  # Without training rows at hand (a workdir whose rows are not cached): no figure, no error.
  assert quality.training_vocabulary(None, str) is None
  assert quality.real_word_rate(["the end ."], None) == {}
