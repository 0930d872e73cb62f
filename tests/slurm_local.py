"""A throwaway one-node SLURM cluster on localhost for tests (munged, slurmctld, slurmd with
state under a temporary folder); used by tests/test_slurm.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel")


def available() -> bool:
    return all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in BINARIES) and os.geteuid() == 0


def _exe(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class LocalSlurm:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.host = socket.gethostname()
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ)

    def conf(self) -> str:
        r = self.root
        cpus = os.cpu_count() or 1
        return f"""ClusterName=dbenchtest
SlurmctldHost={self.host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation={r}/ctld
SlurmdSpoolDir={r}/d
SlurmctldPidFile={r}/ctld.pid
SlurmdPidFile={r}/d.pid
SlurmctldLogFile={r}/ctld.log
SlurmdLogFile={r}/d.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerParameters=defer_batch=0
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName={self.host} CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""

    def start(self, timeout: float = 60) -> None:
        r = self.root
        for d in ("ctld", "d", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "slurm.conf").write_text(self.conf())
        self.env["SLURM_CONF"] = str(r / "slurm.conf")
        os.environ["SLURM_CONF"] = str(r / "slurm.conf")
        key = r / "munge" / "munge.key"
        shutil.copy("/etc/munge/munge.key", key) if Path("/etc/munge/munge.key").exists() else key.write_bytes(
            os.urandom(1024))
        key.chmod(0o400)
        sock = r / "munge" / "munge.socket"
        self.env["MUNGE_SOCKET"] = str(sock)  # not read by SLURM; the socket path is in the munge conf below
        self._spawn([_exe("munged"), "-F", "--force", f"--key-file={key}", f"--socket={sock}",
                     f"--pid-file={r}/munge/munged.pid", f"--log-file={r}/munge/munged.log",
                     f"--seed-file={r}/munge/seed"])
        # slurm's munge plugin takes the socket from AuthInfo
        conf = (r / "slurm.conf").read_text().replace("AuthType=auth/munge",
                                                      f"AuthType=auth/munge\nAuthInfo=socket={sock}")
        (r / "slurm.conf").write_text(conf)
        self._wait(lambda: sock.exists(), 20, "munged")
        self._spawn([_exe("slurmctld"), "-D", "-i", "-f", str(r / "slurm.conf")])
        time.sleep(1)
        self._spawn([_exe("slurmd"), "-D", "-f", str(r / "slurm.conf")])

        def idle():
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=self.env).stdout
            return out.strip() in ("idle", "mix", "alloc")

        self._wait(idle, timeout, "the SLURM node to come up")

    def _spawn(self, cmd: list[str]) -> None:
        log = open(self.root / (Path(cmd[0]).name + ".out"), "ab")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def _wait(self, ok, timeout: float, what: str) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if ok():
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited ({p.returncode}) while waiting for {what}; see {self.root}")
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {what}; logs in {self.root}")

    def stop(self) -> None:
        subprocess.run(["scancel", "--user", "root"], capture_output=True, env=self.env)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        os.environ.pop("SLURM_CONF", None)
