"""A planted semantic language: token sequences whose likelihood and entropy are known exactly.

The generator (`data.source=synthetic`, `data.tokenizer=planted`):

  z ~ Uniform(topics)                       one topic per row: long-range agreement
  r_1 ~ pi, r_i | r_{i-1} ~ A               a role chain (det adj noun verb prep punct),
                                            pi = A's stationary law, so every position of
                                            a row is alike
  c_i | z, r_i ~ w[z, r_i]                  a semantic cluster: content roles (adj, noun,
                                            verb) have `CLUSTERS_PER_ROLE` clusters per topic,
                                            function roles one shared cluster
  x_i | c_i ~ e[c_i]                        a word of that cluster (8 words per cluster)

Every word belongs to exactly one cluster, every cluster to one role and (content) to one
topic. So a row determines its roles, and any content word determines its topic; hence

  H(X_1:L) = H(Z) (1 - P(no content word)) + H(R_1:L) + L * sum_r pi_r h(r),

with h(r) = E_z H(x | z, r), is computed in closed form (`entropy_per_token`), not estimated.
`log_prob` is the exact log-likelihood of any rows (the forward algorithm over roles, for each
topic); with `smoothing = eps` it scores under the per-token mixture (1 - eps) p + eps / V,
which gives every sequence (a sampler's invalid ones too) a finite score. The clusters are the
true semantics: `cluster_embeddings` are one-hot rows from which the neighbour tables
(kernels/neighbors.py) recover the clusters exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Sequence

import numpy as np
from scipy.special import logsumexp

from dlm_jax.errors import UserError

ROLES = ("det", "adj", "noun", "verb", "prep", "punct")
CONTENT_ROLES = (1, 2, 3)
FUNCTION_WORDS = {
    "det": ("the", "a", "this", "that", "every", "some", "my", "our"),
    "prep": ("of", "in", "on", "at", "with", "from", "to", "by"),
    "punct": (".", ",", ";", ":", "!", "?", "and", "but"),
}
# A[r, r']: P(next role r' | role r); rows follow ROLES.
ROLE_TRANSITIONS = np.array([
    #  det   adj  noun  verb  prep punct
    [0.00, 0.35, 0.65, 0.00, 0.00, 0.00],   # det
    [0.00, 0.15, 0.85, 0.00, 0.00, 0.00],   # adj
    [0.00, 0.00, 0.00, 0.50, 0.20, 0.30],   # noun
    [0.55, 0.10, 0.00, 0.00, 0.25, 0.10],   # verb
    [0.90, 0.10, 0.00, 0.00, 0.00, 0.00],   # prep
    [0.80, 0.20, 0.00, 0.00, 0.00, 0.00],   # punct
])
CLUSTER_SIZE = 8
CLUSTERS_PER_ROLE = 2
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")       # ids 0..3, as the tokenizers trained here
NUM_SPECIAL = len(SPECIALS)


@dataclasses.dataclass(frozen=True)
class Language:
  topic_prior: np.ndarray      # (Z,)
  initial: np.ndarray          # (R,) the stationary law of `transition`
  transition: np.ndarray       # (R, R)
  emission: np.ndarray         # (Z, R, W): P(word | topic, role)
  word_cluster: np.ndarray     # (W,) cluster id of each word
  words: tuple[str, ...]       # (W,); token id = NUM_SPECIAL + word index

  @property
  def vocab_size(self) -> int:
    return NUM_SPECIAL + len(self.words)

  @property
  def num_topics(self) -> int:
    return len(self.topic_prior)


def _stationary(transition: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eig(transition.T)
  v = np.real(vectors[:, np.argmin(np.abs(values - 1))])
  return v / v.sum()


@functools.lru_cache(maxsize=8)
def language(topics: int = 8, seed: int = 0, cluster_size: int = CLUSTER_SIZE) -> Language:
  """The planted language with `topics` topics; the word and cluster probabilities are drawn
  once from `seed` (Dirichlet), the grammar is fixed. Tests use a small `cluster_size`."""
  if topics < 1:
    raise UserError(f"data.synthetic.topics must be >= 1, got {topics}")
  if not 1 <= cluster_size <= CLUSTER_SIZE:
    raise UserError(f"cluster_size must be in [1, {CLUSTER_SIZE}], got {cluster_size}")
  rng = np.random.default_rng(seed)
  R = len(ROLES)
  words, word_cluster, clusters = [], [], []     # clusters: (topic or -1, role, weight)
  for role, name in enumerate(ROLES):
    if role in CONTENT_ROLES:
      continue
    clusters.append((-1, role, 1.0))
    words.extend(FUNCTION_WORDS[name][:cluster_size])
  for z in range(topics):
    for role in CONTENT_ROLES:
      weights = rng.dirichlet(np.full(CLUSTERS_PER_ROLE, 2.0))
      for j in range(CLUSTERS_PER_ROLE):
        clusters.append((z, role, weights[j]))
        words.extend(f"{ROLES[role][0]}{z}{'abcdefgh'[j]}{i}" for i in range(cluster_size))
  word_cluster = np.repeat(np.arange(len(clusters)), cluster_size)
  within = rng.dirichlet(np.full(cluster_size, 1.0), size=len(clusters)).ravel()
  emission = np.zeros((topics, R, len(words)))
  for c, (z, role, weight) in enumerate(clusters):
    members = word_cluster == c
    for topic in (range(topics) if z < 0 else [z]):
      emission[topic, role, members] = weight * within[members]
  return Language(np.full(topics, 1.0 / topics), _stationary(ROLE_TRANSITIONS),
                  ROLE_TRANSITIONS.copy(), emission, word_cluster, tuple(words))


def sample(lang: Language, num_rows: int, seq_len: int, seed: int) -> np.ndarray:
  """(num_rows, seq_len) int32 token ids drawn from the language."""
  rng = np.random.default_rng(seed)
  Z, R, W = lang.emission.shape
  topic = rng.choice(Z, size=num_rows, p=lang.topic_prior)
  role = np.empty((num_rows, seq_len), np.int64)
  role[:, 0] = rng.choice(R, size=num_rows, p=lang.initial)
  cumulative = np.cumsum(lang.transition, axis=1)
  for i in range(1, seq_len):
    u = rng.random(num_rows)[:, None]
    role[:, i] = np.minimum((u > cumulative[role[:, i - 1]]).sum(1), R - 1)
  # Inverse-CDF draws from every (topic, role) row at once: row k's CDF is shifted to [k, k+1].
  cdf = np.cumsum(lang.emission.reshape(Z * R, W), axis=1)
  cdf /= cdf[:, -1:]
  k = topic[:, None] * R + role                                       # (N, L)
  flat = (cdf + np.arange(Z * R)[:, None]).ravel()
  position = np.searchsorted(flat, k + rng.random(k.shape), side="right")
  word = np.minimum(position - k * W, W - 1)
  return (word + NUM_SPECIAL).astype(np.int32)


def log_prob(lang: Language, rows, smoothing: float = 0.0) -> np.ndarray:
  """Exact log p(x) in nats of each row (N,), by the forward algorithm over roles for every
  topic. `smoothing = eps` scores under the per-token mixture (1 - eps) p(x_i | z, r_i) +
  eps / V instead (every id, specials and the mask included, then has a finite score)."""
  rows = np.asarray(rows, np.int64)
  Z, R, W = lang.emission.shape
  V = lang.vocab_size
  table = np.zeros((Z, R, V + 1))                 # id V and above: the mask / out of range
  table[:, :, NUM_SPECIAL:V] = lang.emission
  if smoothing:
    table = (1.0 - smoothing) * table + smoothing / V
  with np.errstate(divide="ignore"):
    log_emit = np.log(table)[:, :, np.minimum(rows, V)]          # (Z, R, N, L)
    log_a = np.log(lang.transition)
    alpha = np.log(lang.initial)[None, :, None] + log_emit[..., 0]    # (Z, R, N)
    for i in range(1, rows.shape[1]):
      alpha = logsumexp(alpha[:, :, None, :] + log_a[None, :, :, None], axis=1) + log_emit[..., i]
    return logsumexp(np.log(lang.topic_prior)[:, None] + logsumexp(alpha, axis=1), axis=0)


def _entropy(p: np.ndarray, axis=-1) -> np.ndarray:
  with np.errstate(divide="ignore", invalid="ignore"):
    return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=axis)


def entropy_per_token(lang: Language, seq_len: int) -> float:
  """H(X_1:L) / L in nats for rows of `seq_len` tokens, in closed form (module doc)."""
  pi, A = lang.initial, lang.transition
  content = np.zeros(len(ROLES), bool)
  content[list(CONTENT_ROLES)] = True
  roles = _entropy(pi) + (seq_len - 1) * float(pi @ _entropy(A))
  emission = seq_len * float(pi @ (lang.topic_prior @ _entropy(lang.emission)))
  # P(no content word in the row): the chain restricted to function roles.
  stay = np.where(content, 0.0, pi)
  for _ in range(seq_len - 1):
    stay = stay @ np.where(content[None, :], 0.0, A)
  topic = _entropy(lang.topic_prior) * (1.0 - stay.sum())
  return (roles + emission + topic) / seq_len


def entropy_rate(lang: Language) -> float:
  """lim H(X_1:L) / L in nats: the role chain's rate plus the mean emission entropy."""
  pi = lang.initial
  return float(pi @ _entropy(lang.transition) + pi @ (lang.topic_prior @ _entropy(lang.emission)))


def unigram_entropy(lang: Language) -> float:
  """Entropy (nats) of one token's marginal law: what a unigram model can reach."""
  return float(_entropy(lang.topic_prior @ np.einsum("r,zrw->zw", lang.initial, lang.emission)))


def clusters(lang: Language) -> np.ndarray:
  """(V,) the true semantic cluster of every token id (specials: their own clusters)."""
  return np.concatenate([np.arange(NUM_SPECIAL), NUM_SPECIAL + lang.word_cluster])


def word_topics(lang: Language) -> np.ndarray:
  """(V + 1,) the topic of every content word's id, -1 for function words, specials and the
  one id past the vocabulary (the mask)."""
  topic = np.full(lang.vocab_size + 1, -1)
  for z in range(lang.num_topics):
    content = lang.emission[z][list(CONTENT_ROLES)].sum(0) > 0
    topic[NUM_SPECIAL + np.nonzero(content)[0]] = z
  return topic


def topic_agreement(lang: Language, rows, prompt_tokens: int) -> np.ndarray:
  """Per row with content words on both sides: the share of the generated part's content
  words in the prompt's most used topic (1 for real rows, ~1/topics when the prompt is
  ignored). A row of the language has one topic, so this is how far a conditional sampler
  follows its prompt."""
  topic = word_topics(lang)
  rows = np.minimum(np.asarray(rows), lang.vocab_size)
  out = []
  for row in rows:
    given, generated = topic[row[:prompt_tokens]], topic[row[prompt_tokens:]]
    given, generated = given[given >= 0], generated[generated >= 0]
    if len(given) and len(generated):
      out.append(np.mean(generated == np.bincount(given).argmax()))
  return np.asarray(out)


def cluster_embeddings(lang: Language) -> np.ndarray:
  """(V, #clusters) one-hot rows: equal for words of one cluster, orthogonal otherwise, so the
  partition and top-k neighbour tables built from them are the true clusters."""
  c = clusters(lang)
  return np.eye(c.max() + 1, dtype=np.float32)[c]


class PlantedTokenizer:
  """The language's words as a vocabulary: specials 0..3 (PAD, UNK, BOS, EOS), then words."""
  kind = "planted"
  pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3
  special_ids = (0, 1, 2, 3)

  def __init__(self, lang: Language):
    self.language = lang
    self.pieces = SPECIALS + lang.words
    self._ids = {w: i for i, w in enumerate(self.pieces)}
    self.vocab_size = lang.vocab_size

  def fingerprint(self) -> str:
    digest = hashlib.sha256(" ".join(self.pieces).encode())
    digest.update(np.ascontiguousarray(self.language.emission).tobytes())
    return "planted:" + digest.hexdigest()[:16]

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    return [[self._ids.get(w, self.unk_id) for w in text.split()] for text in texts]

  def decode(self, ids: Sequence[int]) -> str:
    return " ".join("[MASK]" if int(i) >= self.vocab_size else self.pieces[int(i)]
                    for i in ids if int(i) != self.pad_id)


def config_language(data_cfg) -> Language:
  return language(data_cfg.synthetic.topics, data_cfg.synthetic.seed)


def split_rows(data_cfg, split: str) -> np.ndarray:
  """The rows of a split: seeded draws, the validation split from its own stream."""
  own = data_cfg.synthetic
  count = own.train_rows if split == "train" else own.validation_rows
  seed = own.seed * 1000 + {"train": 1, "validation": 2}[split]
  return sample(config_language(data_cfg), count, data_cfg.seq_len, seed)
