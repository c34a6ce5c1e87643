"""A real one-node Slurm cluster on this machine, for tests that submit batch scripts written for NERSC Perlmutter.

Everything lives under one base directory: configuration, state, logs, pid files, a private MUNGE daemon (own key and
socket, so the host's munge is neither needed nor touched) and four fake GPU device files. The node is declared with
``Features=gpu Gres=gpu:4`` so that Perlmutter directives such as ``-C gpu --gpus-per-node=4 -q regular -A m0000`` are
accepted unmodified (no accounting database: any account and QOS pass), jobs see ``CUDA_VISIBLE_DEVICES=0,1,2,3``, and
``srun`` starts MPICH ranks through PMI2 without ``--mpi``. The default partition gives a job whole nodes
(``OverSubscribe=EXCLUSIVE``), so ``-N 1`` gets every CPU, as on Perlmutter.

Daemons and jobs run as root, so the helper needs root; it installs Debian's ``slurmctld slurmd slurm-client munge``
with apt when they are missing. From a shell::

    python tests/slurm_cluster.py start /tmp/slurm     # prints: export SLURM_CONF=/tmp/slurm/etc/slurm.conf
    python tests/slurm_cluster.py stop /tmp/slurm

From Python, pass :attr:`LocalSlurm.env` to every Slurm client call::

    # train.sh asks for --ntasks-per-node=4: declare at least 4 CPUs on a smaller machine
    with LocalSlurm(tmp_path_factory.mktemp("slurm"), cpus=4) as cluster:
        job = cluster.sbatch("slurm/train.sh", env={"SBATCH_ACCOUNT": "m0000"}, cwd=tmp_path)
        info = cluster.wait(job, timeout=300)
        assert info["JobState"] == "COMPLETED", info
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
"""Debian packages that provide the daemons, the clients and MUNGE."""

COMMANDS = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo", "squeue", "scancel", "munged")
"""Executables the cluster needs; any missing one triggers :func:`install`."""

FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)
"""Job states after which a job never runs again."""

NEVER_REASONS = frozenset({"BadConstraints", "PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit"})
"""Reasons a job stays PENDING that never clear on this static one-node cluster, e.g. ``PartitionConfig`` for more
``--ntasks-per-node`` than the node has CPUs (declare ``cpus=`` or submit with ``--overcommit``)."""

_DAEMONS = ("slurmd", "slurmctld", "munged")
"""Stopped in this order: compute daemon, controller, then the authentication daemon both of them use."""

_FIELD = re.compile(r"(\S+?)=(.*?)(?= \S+?=|$)")
"""One ``Key=value`` pair of ``scontrol -o`` output; values may contain spaces."""


class SlurmUnavailableError(RuntimeError):
    """Slurm cannot run here (not root, no apt, the install failed); tests should skip with this message."""


SlurmUnavailable = SlurmUnavailableError
"""The name the brief for this helper used; the class is named for ruff's N818."""


def _run(cmd: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 60, **kwargs) -> str:
    """Run a short command and return its stdout; raise RuntimeError with its output if it fails."""
    proc = subprocess.run(
        list(cmd), env=None if env is None else dict(env), capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _tail(path: Path, lines: int = 20) -> str:
    """The last lines of a text file, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not readable)"
    return "\n".join(text.splitlines()[-lines:])


def install() -> None:
    """Install Slurm and MUNGE with apt when any of :data:`COMMANDS` is missing.

    Raises:
        SlurmUnavailableError: Not root, no ``apt-get``, or the install failed (the message carries apt's output).
    """
    if os.geteuid() != 0:
        raise SlurmUnavailableError("a local Slurm cluster needs root (daemons and jobs run as root)")
    if all(shutil.which(cmd) for cmd in COMMANDS):
        return
    apt = shutil.which("apt-get")
    if apt is None:
        missing = [cmd for cmd in COMMANDS if not shutil.which(cmd)]
        raise SlurmUnavailableError(f"{', '.join(missing)} missing and no apt-get to install {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = [apt, "install", "-y", "--no-install-recommends", *PACKAGES]
    try:
        _run(cmd, env, timeout=600)
    except (RuntimeError, subprocess.TimeoutExpired):  # stale package lists: refresh them once and retry
        try:
            _run([apt, "update"], env, timeout=600)
            _run(cmd, env, timeout=600)
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            raise SlurmUnavailableError(f"installing {' '.join(PACKAGES)} failed: {str(err)[-2000:]}") from err
    missing = [cmd for cmd in COMMANDS if not shutil.which(cmd)]
    if missing:
        raise SlurmUnavailableError(f"{', '.join(missing)} still missing after installing {' '.join(PACKAGES)}")


def _free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _proc_state(pid: int) -> str | None:
    """The one-letter state of a process from ``/proc``, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (an exited daemon waits for init to reap it)."""
    return _proc_state(pid) not in (None, "Z", "X")


def _comm(pid: int) -> str:
    """The executable name of a process, '' when it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _terminate(pids: Sequence[int], grace: float = 10) -> None:
    """SIGTERM the processes, wait up to ``grace`` seconds, then SIGKILL those still alive."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        alive = [pid for pid in pids if _alive(pid)]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while any(_alive(pid) for pid in alive) and time.monotonic() < deadline:
            time.sleep(0.1)


def _descendants(roots: set[int]) -> set[int]:
    """The processes below ``roots`` in the process tree (not the roots themselves)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def parse_scontrol(line: str) -> dict[str, str]:
    """Parse one line of ``scontrol show ... -o`` output into its ``Key=value`` fields.

    Args:
        line: For example ``JobId=3 JobName=wrap ... JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0``.

    Returns:
        The fields by name, values as printed.

    Example:
        >>> parse_scontrol("JobId=3 JobName=my job JobState=FAILED ExitCode=3:0")["JobName"]
        'my job'
    """
    return dict(_FIELD.findall(line.strip()))


class LocalSlurm:
    """A one-node Slurm cluster (controller, compute daemon, MUNGE) whose files all live under ``base``.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. :meth:`stop` also works from another
    process (it reads pid files under ``base``), and :meth:`start` first stops whatever a previous cluster left running
    in the same ``base``. Clusters in different base directories use different ports and can coexist.

    Attributes:
        base: Directory that holds everything; created if missing.
        gpus: Fake GPUs declared on the node (``Gres=gpu:<gpus>``, ``Features=gpu``); 0 declares a CPU node.
        cpus: CPUs declared on the node; None takes the machine's own count from ``slurmd -C``. A larger number
            (Perlmutter GPU nodes have 128) is accepted through ``SlurmdParameters=config_overrides``, so scripts
            that ask for ``-c 32`` per task run, oversubscribing the real cores.
        conf: Path of the generated ``slurm.conf``.
        env: ``os.environ`` without any inherited ``SLURM_*``/``SBATCH_*``/``SRUN_*``/``SALLOC_*`` variables, plus
            ``SLURM_CONF``: pass it to every ``subprocess`` call of a Slurm client.
        hostname: The node's name, the machine's short hostname.
    """

    def __init__(self, base: str | Path, gpus: int = 4, cpus: int | None = None) -> None:
        self.base = Path(base).resolve()
        self.gpus = gpus
        self.cpus = cpus
        self.conf = self.base / "etc" / "slurm.conf"
        self.hostname = socket.gethostname().split(".")[0]
        # Unix socket paths (MUNGE's, slurmd's per-step sockets in its spool) must stay under ~108 bytes: a long base
        # gets a short runtime directory in /tmp instead, named after the base so that stop() finds it again.
        run = self.base / "run"
        if len(str(run)) > 60:
            digest = hashlib.sha1(str(self.base).encode()).hexdigest()[:12]
            run = Path(tempfile.gettempdir()) / f"localslurm-{digest}"
        self.run_dir = run
        self.munge_socket = run / "munge.socket"
        self.pid_files = {
            "slurmctld": run / "slurmctld.pid",
            "slurmd": run / "slurmd.pid",
            "munged": run / "munged.pid",
        }
        drop = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")
        self.env: dict[str, str] = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        self.env["SLURM_CONF"] = str(self.conf)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalSlurm:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        """Install if needed, write the configuration, start MUNGE and both Slurm daemons, wait for an idle node.

        Args:
            timeout: Seconds to wait for the node to register as idle.

        Raises:
            SlurmUnavailableError: Slurm cannot be installed or run here.
            RuntimeError: A daemon failed to start or the node did not become idle; the message has the logs' tails.
        """
        install()
        self.stop()  # whatever a previous cluster in this base left running
        for sub in ("etc", "log", "dev", "munge"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        for sub in (self.base / "state", self.run_dir / "spool"):  # a fresh cluster: no jobs, ids from 1
            shutil.rmtree(sub, ignore_errors=True)
            sub.mkdir(parents=True)
        self._start_munge()
        self._write_config()
        self._daemon("slurmctld", ["slurmctld", "-i"])
        self._daemon("slurmd", ["slurmd"])
        self._wait_idle(timeout)

    def stop(self) -> None:
        """Cancel all jobs and stop the daemons (SIGTERM, then SIGKILL); safe to call when nothing runs."""
        if self._pid("slurmctld") is not None and self.conf.exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _run(["scancel", "--quiet", "--user", "root"], self.env, timeout=10)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and _run(["squeue", "-h", "-t", "R,CG"], self.env, timeout=10):
                    time.sleep(0.2)
        for name in _DAEMONS:
            pid = self._pid(name)
            if pid is not None:
                _terminate([pid])
            self.pid_files[name].unlink(missing_ok=True)
        # Job steps outlive a killed slurmd: end the slurmstepd processes started by this cluster's slurmd (they
        # inherit its SLURM_CONF) together with the job processes below them.
        steps = {pid for pid in self._procs_named("slurmstepd") if self._ours(pid)}
        if steps:
            _terminate(sorted(steps | _descendants(steps)), grace=3)
        if not self.run_dir.is_relative_to(self.base):  # the short runtime directory in /tmp of a long base
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # ------------------------------------------------------------------ jobs

    def sbatch(
        self,
        script: str | Path | None,
        *options: str,
        script_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> int:
        """Submit a batch script unmodified and return its job id.

        Args:
            script: Path of the batch script; None with ``"--wrap", "command"`` in ``options``.
            *options: ``sbatch`` options, placed before the script (they override its ``#SBATCH`` lines).
            script_args: Arguments passed to the script.
            env: Variables added to :attr:`env` for ``sbatch``, hence for the job (``--export`` defaults to ALL).
            cwd: Submit directory: the job's working directory and where ``slurm-<id>.out`` lands by default.

        Returns:
            The job id.

        Raises:
            RuntimeError: ``sbatch`` rejected the job; the message has its error (e.g. a constraint it cannot meet).
        """
        cmd = ["sbatch", "--parsable", *options]
        if script is not None:
            cmd += [str(Path(script).resolve()), *script_args]
        out = _run(cmd, {**self.env, **(env or {})}, timeout=30, cwd=cwd)
        return int(out.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """The fields of ``scontrol show job -o <id>`` (JobState, ExitCode, StdOut, Reason, NodeList, ...)."""
        return parse_scontrol(_run(["scontrol", "show", "job", "-o", str(job_id)], self.env, timeout=30))

    def wait(self, job_id: int, timeout: float, poll: float = 0.5) -> dict[str, str]:
        """Poll a job until it reaches a final state (:data:`FINAL_STATES`) and return its fields.

        Args:
            job_id: From :meth:`sbatch`.
            timeout: Seconds to wait.
            poll: Seconds between polls.

        Returns:
            The fields of :meth:`job`, among them JobState (e.g. COMPLETED, FAILED), ExitCode (``code:signal``, e.g.
            ``3:0``), Reason and StdOut (the output file's path).

        Raises:
            RuntimeError: The job is pending for a reason in :data:`NEVER_REASONS`; it is cancelled.
            TimeoutError: The job was not done in time; it is cancelled, and the message has its state, reason and the
                tail of its output.
        """
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in FINAL_STATES:
                return info
            never = info.get("JobState") == "PENDING" and info.get("Reason") in NEVER_REASONS
            if never or time.monotonic() > deadline:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    _run(["scancel", str(job_id)], self.env, timeout=30)
            if never:
                keys = ("NumNodes", "NumCPUs", "NumTasks", "CPUs/Task", "Features", "TresPerNode")
                request = " ".join(f"{key}={info.get(key)}" for key in keys)
                raise RuntimeError(
                    f"job {job_id} can never start on this node (PENDING, Reason={info['Reason']}); cancelled. "
                    f"More tasks per node than CPUs? Declare cpus= or submit with --overcommit. Request: {request}"
                )
            if time.monotonic() > deadline:
                stdout = Path(info.get("StdOut", "")) if info.get("StdOut") else None
                raise TimeoutError(
                    f"job {job_id} still {info.get('JobState')} (Reason={info.get('Reason')}) after {timeout:g} s; "
                    f"cancelled. Tail of {stdout}:\n{_tail(stdout) if stdout else ''}"
                )
            time.sleep(poll)

    # ------------------------------------------------------------------ internals

    def _pid(self, name: str) -> int | None:
        """The live pid recorded for a daemon, if the process still runs that daemon."""
        try:
            pid = int(self.pid_files[name].read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) and _comm(pid) == name else None

    def _procs_named(self, name: str) -> list[int]:
        """Pids of live processes whose executable name starts with ``name``."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _comm(int(entry.name)).startswith(name) and _alive(int(entry.name)):
                pids.append(int(entry.name))
        return pids

    def _ours(self, pid: int) -> bool:
        """Whether a process has this cluster's SLURM_CONF in its environment."""
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"SLURM_CONF={self.conf}".encode() in environ

    def _start_munge(self) -> None:
        """Start a private munged (own key, socket, pid, log and seed files) as root."""
        key = self.base / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        # --force: munged refuses a socket directory that is not executable by everyone (pytest's tmp dirs are 0700);
        # every client here runs as root, so that is fine.
        cmd = [
            "munged",
            "--force",
            f"--socket={self.munge_socket}",
            f"--key-file={key}",
            f"--pid-file={self.pid_files['munged']}",
            f"--log-file={self.base / 'log' / 'munged.log'}",
            f"--seed-file={self.base / 'munge' / 'munged.seed'}",
        ]
        self._daemon("munged", cmd)

    def _daemon(self, name: str, cmd: list[str]) -> None:
        """Start a self-daemonizing program and wait until its pid file names a live process."""
        out = self.base / "log" / f"{name}.out"
        with out.open("ab") as sink:
            proc = subprocess.run(
                cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, start_new_session=True
            )
        deadline = time.monotonic() + 10
        while self._pid(name) is None:
            if proc.returncode != 0 or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not start (exit code {proc.returncode}):\n{_tail(out)}\n"
                    f"{_tail(self.base / 'log' / f'{name}.log')}"
                )
            time.sleep(0.05)

    def _write_config(self) -> None:
        """Write slurm.conf and gres.conf, and the fake GPU device files gres.conf points at."""
        hw = dict(field.split("=", 1) for field in _run(["slurmd", "-C"]).split("\n")[0].split())
        if self.cpus is None:
            node = (
                f"CPUs={hw['CPUs']} Boards={hw['Boards']} SocketsPerBoard={hw['SocketsPerBoard']} "
                f"CoresPerSocket={hw['CoresPerSocket']} ThreadsPerCore={hw['ThreadsPerCore']}"
            )
        else:
            node = f"CPUs={self.cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket={self.cpus} ThreadsPerCore=1"
        node += f" RealMemory={hw['RealMemory']}"
        gres = ""
        if self.gpus > 0:
            devices = []
            for index in range(self.gpus):
                dev = self.base / "dev" / f"nvidia{index}"
                if not dev.exists():
                    os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))  # a character device, like /dev/null
                devices.append(str(dev))
            gres = f" Features=gpu Gres=gpu:{self.gpus}"
            lines = [f"NodeName={self.hostname} Name=gpu File={dev}" for dev in devices]
            (self.conf.parent / "gres.conf").write_text("AutoDetect=off\n" + "\n".join(lines) + "\n")
        log = self.base / "log"
        conf = f"""\
# Generated by tests/slurm_cluster.py: a one-node test cluster, everything under {self.base}
ClusterName=localslurm
SlurmctldHost={self.hostname}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={self.base / "state"}
SlurmdSpoolDir={self.run_dir / "spool"}
SlurmctldPidFile={self.pid_files["slurmctld"]}
SlurmdPidFile={self.pid_files["slurmd"]}
SlurmctldLogFile={log / "slurmctld.log"}
SlurmdLogFile={log / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmi2
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
InactiveLimit=0
KillWait=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName={self.hostname} NodeAddr=127.0.0.1 {node}{gres} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=EXCLUSIVE
"""
        self.conf.write_text(conf)

    def _wait_idle(self, timeout: float) -> None:
        """Wait until ``sinfo`` reports the node idle."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                state = _run(["sinfo", "-h", "-N", "-o", "%t"], self.env, timeout=10).strip()
                if state == "idle":
                    return
            time.sleep(0.2)
        log = self.base / "log"
        raise RuntimeError(
            f"node not idle after {timeout:g} s (sinfo: {state!r})\nslurmctld.log:\n{_tail(log / 'slurmctld.log')}\n"
            f"slurmd.log:\n{_tail(log / 'slurmd.log')}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Start or stop a cluster from the command line, to try batch scripts by hand."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("base", type=Path, help="directory for the cluster's files")
    parser.add_argument("--gpus", type=int, default=4, help="fake GPUs on the node (default 4)")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs to declare (default: the machine's)")
    args = parser.parse_args(argv)
    cluster = LocalSlurm(args.base, gpus=args.gpus, cpus=args.cpus)
    if args.action == "stop":
        cluster.stop()
        print(f"stopped the cluster in {cluster.base}")
        return 0
    try:
        cluster.start()
    except SlurmUnavailableError as err:
        print(f"Slurm unavailable: {err}", file=sys.stderr)
        return 1
    print(f"export SLURM_CONF={cluster.conf}")
    print(f"# logs in {cluster.base / 'log'}; stop with: python {sys.argv[0]} stop {cluster.base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
