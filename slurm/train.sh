#!/bin/bash
# Data-parallel training of ONE inverse GAN (python -m inverse.closure) over the GPUs of one or more Perlmutter nodes:
# one srun task per GPU, each computing its share of every step's events; gradients averaged by all-reduce (NCCL on
# GPUs, gloo on CPUs), so the result equals one process on the same global batch.
#
#   export SBATCH_ACCOUNT=m0000
#   sbatch slurm/train.sh                                            # 1 node x 4 GPUs
#   QCDGIP_CONFIG=configs/closure_gan.yaml sbatch -N 2 slurm/train.sh   # 2 nodes x 4 GPUs
#
# training.devices and training.num_nodes are set from srun's tasks per node and nodes. Resubmitting continues
# from the run directory's last checkpoint (--resume). Knobs are in slurm/README.md.
#
# ---- EDIT HERE (or override on the sbatch command line / with SBATCH_* variables) ---------------------------------
#SBATCH --job-name=qcdgip-train
#SBATCH -C gpu
#SBATCH -q regular
#SBATCH -N 1
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH -t 00:30:00
#SBATCH --output=%x-%j.out
##SBATCH -A m0000                # EDIT: remove one '#' and put your project here, or export SBATCH_ACCOUNT
# ---------------------------------------------------------------------------------------------------------------------

set -euo pipefail
source "${QCDGIP_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}/slurm/env.sh"

config_and_run_dir configs/closure_gan.yaml "train-"

NODES=${SLURM_JOB_NUM_NODES:-1}
PER_NODE=${SLURM_NTASKS_PER_NODE:-1}
PER_NODE=${PER_NODE%%(*}
cpus_per_task "$PER_NODE"
# shellcheck disable=SC2206
ARGS=(--config "$CONFIG" --out "$RUN_DIR" --resume --devices "$PER_NODE" --num-nodes "$NODES" ${QCDGIP_ARGS:-})

# The rendezvous port: free on this (the first) node now. Lightning's default, 15000 + the job id's last 4 digits, can
# collide with another job's or service's port on a shared node; a rank connecting to a foreign server aborts.
if [[ -z "${MASTER_PORT:-}" ]]; then
    MASTER_PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
    export MASTER_PORT
fi

echo "== $(date -Is) job ${SLURM_JOB_ID:-?}: $NODES node(s) x $PER_NODE processes, $CPUS_PER_TASK CPUs each;" \
     "run directory $RUN_DIR, rendezvous port $MASTER_PORT"
echo "== srun --kill-on-bad-exit=1 ${SRUN_CPU_ARGS[*]} $PYTHON -m inverse.closure ${ARGS[*]}"
# --kill-on-bad-exit: if one rank dies, the others are stopped instead of waiting for it until the time limit.
srun --ntasks-per-node="$PER_NODE" --kill-on-bad-exit=1 "${SRUN_CPU_ARGS[@]}" "$PYTHON" -m inverse.closure "${ARGS[@]}"
echo "== $(date -Is) done: $RUN_DIR/summary.json, report.md"
