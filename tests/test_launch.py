import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tpu_launch_dry_run_prints_commands():
  out = subprocess.run(
      [sys.executable, "launch/tpu_vm.py", "--name=dlm", "--zone=us-central2-b", "--dry_run",
       "run", "--", "python", "-m", "dlm_jax.train", "--config=configs/owt_semdlm_plus.py",
       "--workdir=gs://b/run1"], cwd=ROOT, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == (
      "gcloud compute tpus tpu-vm ssh dlm --zone=us-central2-b --worker=all "
      "'--command=cd ~/dlm_jax && nohup python -m dlm_jax.train "
      "--config=configs/owt_semdlm_plus.py --workdir=gs://b/run1 --distributed > "
      "~/dlm_jax.log 2>&1 &'")
  out = subprocess.run([sys.executable, "launch/tpu_vm.py", "--name=dlm", "--zone=z",
                        "--accelerator=v4-32", "--spot", "--dry_run", "create"], cwd=ROOT,
                       capture_output=True, text=True, check=True)
  assert out.stdout.strip() == ("gcloud compute tpus tpu-vm create dlm --zone=z "
                                "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot")


def test_slurm_script_is_valid_bash():
  subprocess.run(["bash", "-n", os.path.join(ROOT, "launch", "slurm_gpu.sbatch")], check=True)
