"""CPU quickstart (configs/quickstart.py) with SemDLM+: semantic kernel plus a late global
transition (kernel.global_kind=uniform or mask). Besides the kernel, the denoiser reads which
positions are clean (model.clean_flag, learned from train.prompt_rate = 0.5 of the training
rows carrying a random clean prompt span, left out of their loss), so that prompted and
infilled sampling (`sample --prompt/--suffix`) conditions exactly; without it a kernel that
corrupts tokens into tokens reads the prompt as possibly noisy (docs/design.md §5).
"""

from configs import base, quickstart


def get_config():
  c = base.use_kernel(quickstart.get_config(), "semdlm_plus")
  c.model.clean_flag = True
  c.train.prompt_rate = 0.5
  return c
