r"""Schedule lab: exact KL between a synthetic target and the oracle masking sampler's output,
for each unmasking law, as a function of the number of iterations K.

  python -m dlm_jax.analysis.schedule_lab --output=docs/schedule_lab [--L=8] [--max_K=8]

Families (dlm_jax/analysis/synthetic.py), binary unless stated: independent copy blocks,
Markov chains with flip probability 0.02..0.4, parity, ternary blocks. For every family
the lab computes TC and DTC, and KL(p || q_K) for K = 1..max_K under the `ancestral`,
`fixed` and `random` laws. Writes <output>.json, <output>.md (KL at K = L/4, L/2 and
TC/DTC per family) and <output>.png (KL vs K per family; KL vs TC and vs DTC at K = L/2).
Every KL is exact (enumeration), not an estimate.
"""

from __future__ import annotations

import sys
import time

from absl import app, flags

from dlm_jax import reports
from dlm_jax.analysis import synthetic

from dlm_jax.samplers.unmasking import RANDOM_ORDER_LAWS as LAWS  # noqa: E402


def define_flags():
  flags.DEFINE_string("output", "schedule_lab", "Output stem (.json, .md, .png).")
  flags.DEFINE_integer("L", 8, "Sequence length (binary families: 2^L states).")
  flags.DEFINE_integer("max_K", 8, "Largest number of iterations.")


def families(L: int):
  out = {f"blocks(copy, b=2)": synthetic.independent_blocks(2, L, 2, 1.0),
         f"blocks(copy=0.7, b=4)": synthetic.independent_blocks(2, L, 4, 0.7)}
  for flip in (0.02, 0.1, 0.25, 0.4):
    out[f"markov(flip={flip})"] = synthetic.markov_chain(2, L, flip)
  out["parity"] = synthetic.parity(L)
  half = max(L * 3 // 4 // 2 * 2, 2)                 # ternary: keep 3^L small
  out[f"ternary blocks(b=2, L={half})"] = synthetic.independent_blocks(3, half, 2, 0.9)
  return out


def run(L: int, max_K: int) -> dict:
  report = {"L": L, "max_K": max_K, "what": "exact KL(p || q_K) in nats, oracle denoiser",
            "families": {}}
  for name, p in families(L).items():
    start = time.time()
    entry = {"L": p.ndim, "V": p.shape[0], "TC": synthetic.total_correlation(p),
             "DTC": synthetic.dual_total_correlation(p), "entropy": synthetic.entropy(p),
             "kl": {law: [synthetic.kl(p, synthetic.sampler_law(p, law, K))
                          for K in range(1, max_K + 1)] for law in LAWS}}
    entry["seconds"] = time.time() - start
    report["families"][name] = entry
    print(f"{name}: TC={entry['TC']:.3f} DTC={entry['DTC']:.3f} "
          + " ".join(f"{law}@K=L/2={entry['kl'][law][min(p.ndim // 2, max_K) - 1]:.4f}"
                     for law in LAWS), flush=True)
  return report


def markdown(report) -> str:
  Ks = sorted({max(report["L"] // 4, 1), max(report["L"] // 2, 1)})
  head = "| family | V | L | TC | DTC | " + " | ".join(
      f"KL {law} K={K}" for K in Ks for law in LAWS) + " |"
  lines = [head, "|---" * (5 + len(Ks) * len(LAWS)) + "|"]
  for name, e in report["families"].items():
    cells = [f"{e['kl'][law][min(K, report['max_K']) - 1]:.4f}" for K in Ks for law in LAWS]
    lines.append(f"| {name} | {e['V']} | {e['L']} | {e['TC']:.3f} | {e['DTC']:.3f} | "
                 + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(report, path):
  plt = reports.pyplot()
  fams = report["families"]
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
  Ks = range(1, report["max_K"] + 1)
  styles = {"ancestral": "-", "fixed": "--", "random": ":"}
  for i, (name, e) in enumerate(fams.items()):
    color = f"C{i}"
    for law in LAWS:
      axes[0].semilogy(Ks, [max(v, 1e-6) for v in e["kl"][law]], styles[law], color=color,
                       label=name if law == "ancestral" else None)
  axes[0].set(xlabel="iterations K", ylabel="exact KL(p || q_K) (nats)",
              title="KL vs K (solid ancestral, dashed fixed, dotted random)")
  axes[0].legend(fontsize=7)
  for ax, key in ((axes[1], "TC"), (axes[2], "DTC")):
    for law in LAWS:
      xs = [e[key] for e in fams.values()]
      ys = [e["kl"][law][min(e["L"] // 2, report["max_K"]) - 1] for e in fams.values()]
      ax.scatter(xs, ys, label=law, marker={"ancestral": "o", "fixed": "s", "random": "^"}[law])
    ax.set(xlabel=f"{key} (nats)", ylabel="exact KL at K = L/2", title=f"KL vs {key}")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv):
  del argv
  f = flags.FLAGS
  if f.L < 2 or f.L > 10 or f.max_K < 1:
    sys.exit("schedule_lab: error: need 2 <= --L <= 10 (exact enumeration) and --max_K >= 1")
  report = run(f.L, f.max_K)
  written = reports.write(f.output, report, markdown(report), lambda path: plot(report, path))
  print(markdown(report))
  print(f"wrote {', '.join(written)}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
