# Sourced by slurm/perlmutter.sh and slurm/train.sh inside a batch job: finds the repository, activates the
# Python environment, and works out how many CPUs each task gets. Not a batch script itself.
# Knobs (environment variables, all optional; see slurm/README.md):
#   QCDGIP_HOME     repository root              (default: the directory sbatch was called from)
#   QCDGIP_VENV     virtual environment          (default: $QCDGIP_HOME/.venv, if it exists)
#   QCDGIP_MODULES  modules to load first        (default on Perlmutter: "python"; elsewhere none)

set -euo pipefail

QCDGIP_HOME=${QCDGIP_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
if [[ ! -f "$QCDGIP_HOME/hpo/search/cli.py" ]]; then
    echo "error: QCDGIP_HOME=$QCDGIP_HOME is not the repository root (no hpo/search/cli.py); submit from the" \
         "repository root or export QCDGIP_HOME" >&2
    exit 2
fi
cd "$QCDGIP_HOME"

if [[ -z "${QCDGIP_MODULES+set}" && "${NERSC_HOST:-}" == "perlmutter" ]]; then
    QCDGIP_MODULES="python"
fi
if [[ -n "${QCDGIP_MODULES:-}" ]]; then
    if ! type module >/dev/null 2>&1; then
        echo "error: QCDGIP_MODULES=$QCDGIP_MODULES but there is no 'module' command on this machine" >&2
        exit 2
    fi
    set +u  # module scripts read unset variables
    # shellcheck disable=SC2086
    module load $QCDGIP_MODULES
    set -u
fi

QCDGIP_VENV=${QCDGIP_VENV:-$QCDGIP_HOME/.venv}
if [[ -f "$QCDGIP_VENV/bin/activate" ]]; then
    set +u
    # shellcheck disable=SC1091
    source "$QCDGIP_VENV/bin/activate"
    set -u
elif [[ -n "${QCDGIP_VENV_REQUIRED:-}" ]]; then
    echo "error: QCDGIP_VENV=$QCDGIP_VENV has no bin/activate" >&2
    exit 2
fi
PYTHON=${QCDGIP_PYTHON:-python}
if ! "$PYTHON" -c "import hpo, inverse" 2>/dev/null; then
    echo "error: '$PYTHON' cannot import the suite (set QCDGIP_VENV to the environment holding it;" \
         "see slurm/README.md)" >&2
    exit 2
fi
if [[ "${NERSC_HOST:-}" == "perlmutter" ]] && "$PYTHON" -m pip show -q mpich >/dev/null 2>&1; then
    echo "warning: the 'mpich' wheel is installed in $QCDGIP_VENV: mpi4py will use it instead of Cray MPICH" \
         "(pip uninstall mpich; see slurm/README.md)" >&2
fi

# config_and_run_dir DEFAULT_CONFIG RUN_PREFIX -> sets CONFIG (QCDGIP_CONFIG or the default) and RUN_DIR
# (QCDGIP_RUN_DIR, else $SCRATCH/qcdgip/<prefix><config name>, else runs/<prefix><config name>).
config_and_run_dir() {
    CONFIG=${QCDGIP_CONFIG:-$1}
    if [[ ! -f "$CONFIG" ]]; then
        echo "error: QCDGIP_CONFIG=$CONFIG does not exist (relative paths start at $QCDGIP_HOME)" >&2
        exit 2
    fi
    local name
    name=$2$(basename "$CONFIG" .yaml)
    if [[ -n "${QCDGIP_RUN_DIR:-}" ]]; then
        RUN_DIR=$QCDGIP_RUN_DIR
    elif [[ -n "${SCRATCH:-}" ]]; then
        RUN_DIR=$SCRATCH/qcdgip/$name              # Perlmutter's $SCRATCH: fast Lustre, purged after 8 weeks
    else
        RUN_DIR=$QCDGIP_HOME/runs/$name
        echo "note: \$SCRATCH is not set; run directory $RUN_DIR" >&2
    fi
    mkdir -p "$(dirname "$RUN_DIR")"
}

# cpus_per_task TASKS_ON_THE_BUSIEST_NODE -> sets CPUS_PER_TASK and SRUN_CPU_ARGS.
cpus_per_task() {
    local tasks=$1 cpus=${SLURM_CPUS_ON_NODE:-1}
    cpus=${cpus%%(*}  # "128(x2)" -> "128"
    CPUS_PER_TASK=$(( cpus / tasks ))
    SRUN_CPU_ARGS=()
    if (( CPUS_PER_TASK < 1 )); then
        # More tasks than cores on a node (a laptop-sized test cluster): let them share.
        CPUS_PER_TASK=1
        SRUN_CPU_ARGS=(--overcommit)
    fi
    SRUN_CPU_ARGS+=(--cpus-per-task="$CPUS_PER_TASK")
    export OMP_NUM_THREADS=$CPUS_PER_TASK
}
