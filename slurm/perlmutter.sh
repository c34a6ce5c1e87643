#!/bin/bash
# Hyperparameter search of the GAN inverse solver on NERSC Perlmutter GPU nodes: DeepHyper's centralized Bayesian
# optimisation over MPI, one manager rank plus one worker rank per GPU, each worker bound to its own GPU.
#
#   export SBATCH_ACCOUNT=m0000                       # your NERSC project (or edit the -A line below)
#   sbatch slurm/perlmutter.sh                        # from the repository root
#   QCDGIP_CONFIG=configs/hpo_vaim.yaml sbatch -N 2 slurm/perlmutter.sh
#
# Resubmitting the same command continues the search in the same run directory (python -m hpo.search --resume):
# finished trials are kept, the budget counts them. Knobs (environment variables) are in slurm/README.md.
#
# ---- EDIT HERE (or override on the sbatch command line / with SBATCH_* variables) ---------------------------------
#SBATCH --job-name=qcdgip-hpo
#SBATCH -C gpu
#SBATCH -q regular
#SBATCH -N 1
#SBATCH --gpus-per-node=4
#SBATCH -t 01:00:00
#SBATCH --output=%x-%j.out
##SBATCH -A m0000                # EDIT: remove one '#' and put your project here, or export SBATCH_ACCOUNT
# ---------------------------------------------------------------------------------------------------------------------

set -euo pipefail
source "${QCDGIP_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}/slurm/env.sh"

config_and_run_dir configs/hpo_gan.yaml ""

# One worker per GPU on every node, plus the manager (rank 0, on the first node).
NODES=${SLURM_JOB_NUM_NODES:-1}
GPUS=${SLURM_GPUS_PER_NODE:-}
GPUS=${GPUS##*:}                                   # "a100:4" -> "4"
if [[ -z "$GPUS" && -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
    GPUS=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)
fi
WORKERS_PER_NODE=${QCDGIP_WORKERS_PER_NODE:-${GPUS:-4}}
WORKERS=$(( NODES * WORKERS_PER_NODE ))
TASKS=$(( WORKERS + 1 ))
cpus_per_task $(( WORKERS_PER_NODE + 1 ))

ARGS=(--evaluator mpi --config "$CONFIG" --out "$RUN_DIR")
if [[ -f "$RUN_DIR/config.yaml" ]]; then
    ARGS+=(--resume)                               # a resubmission continues the search
fi
# Stop submitting trials before the job's time limit, so that the summary and best.yaml get written.
MARGIN=${QCDGIP_MARGIN:-300}
LEFT=$(squeue -h -j "${SLURM_JOB_ID:-0}" -o %L 2>/dev/null || true)
if [[ "$LEFT" =~ ^(([0-9]+)-)?(([0-9]+):)?([0-9]+):([0-9]+)$ ]]; then
    SECONDS_LEFT=$(( 10#${BASH_REMATCH[2]:-0} * 86400 + 10#${BASH_REMATCH[4]:-0} * 3600
                     + 10#${BASH_REMATCH[5]} * 60 + 10#${BASH_REMATCH[6]} ))
    ARGS+=(--time-left $(( SECONDS_LEFT > MARGIN + 60 ? SECONDS_LEFT - MARGIN : 60 )))
fi
# shellcheck disable=SC2206
ARGS+=(${QCDGIP_ARGS:-})

echo "== $(date -Is) job ${SLURM_JOB_ID:-?}: $NODES node(s), $WORKERS workers + 1 manager, $CPUS_PER_TASK CPUs per" \
     "task, GPUs per node: ${GPUS:-none}; run directory $RUN_DIR"
echo "== srun -n $TASKS --kill-on-bad-exit=1 ${SRUN_CPU_ARGS[*]} $PYTHON -m hpo.search ${ARGS[*]}"
# --kill-on-bad-exit: a crashed rank ends the job (resubmit to continue) instead of leaving the manager waiting.
srun --ntasks="$TASKS" --kill-on-bad-exit=1 "${SRUN_CPU_ARGS[@]}" "$PYTHON" -m hpo.search "${ARGS[@]}"
echo "== $(date -Is) done: $RUN_DIR/results.csv, best.yaml, report.md"
