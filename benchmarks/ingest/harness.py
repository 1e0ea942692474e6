"""Start a server, push the study set through one path, measure it, stop the server.

Each measurement gets a fresh server with an empty store: re-sending instances a server
already holds measures its duplicate check, not ingest, and a fresh start also keeps one
case's cache and background work out of the next. Server CPU is read from /proc for the
server's whole process tree (utime+stime of live processes plus cutime+cstime of reaped
children), so worker processes and threads are counted too.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import httpx

from benchmarks.ingest.netns import Network

CLK_TCK = os.sysconf("SC_CLK_TCK")
SETTLE_S = 1.5

#: A server's argv: fixed, or built from the fresh work directory (to write a config there).
CommandFactory = Callable[[Path], Sequence[str]]


@dataclass(frozen=True)
class ServerSpec:
    """How to start one ingest server and reach it.

    ``command``/``env`` values may use ``{workdir}``, ``{http_port}``, ``{dimse_port}`` and
    ``{bind_host}`` (always ``0.0.0.0``: servers run inside the benchmark's own namespaces,
    and on the veth network they must accept the client's non-loopback address).
    ``headers`` carry auth for STOW and QIDO (``Authorization: Bearer ...``, an API-key header,
    or Basic). ``ready_path`` is an HTTP path that answers < 500 when the server is up;
    without it only the TCP ports are awaited.
    """

    name: str
    command: Sequence[str] | CommandFactory
    http_port: int
    dimse_port: int
    called_ae: str
    stow_path: str = "/dicom-web/studies"
    qido_root: str = "/dicom-web"
    headers: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    ready_path: str | None = None
    cwd: str | None = None
    startup_timeout_s: float = 60.0
    #: Called once the server is ready (e.g. to create an account and an AE title); returns the
    #: auth headers to use instead of ``headers``. Runs before the CPU baseline is taken.
    setup: Callable[[RunningServer], Mapping[str, str]] | None = None

    def argv(self, workdir: Path) -> list[str]:
        raw = self.command(workdir) if callable(self.command) else self.command
        return [self._fill(a, workdir) for a in raw]

    def environment(self, workdir: Path) -> dict[str, str]:
        return {k: self._fill(v, workdir) for k, v in self.env.items()}

    def _fill(self, text: str, workdir: Path) -> str:
        # 0.0.0.0 is safe here: servers only ever run inside the benchmark's private namespaces.
        bind_host = "0.0.0.0"  # noqa: S104
        return text.format(
            workdir=workdir, http_port=self.http_port, dimse_port=self.dimse_port, bind_host=bind_host
        )


@dataclass(frozen=True)
class Case:
    """One measurement: a path (``cstore`` or ``stow``) and its client settings."""

    name: str
    path: str
    tcp_nodelay: bool = False
    count: int | None = None  # None: the whole study set
    batch: int = 50


@dataclass
class CaseResult:
    """What one case measured; ``stored`` comes from a QIDO count after the run."""

    case: str
    server: str
    network: str
    sent: int
    stored: int | None
    seconds: float
    bytes_sent: int
    server_cpu_ms: float
    client_ok: bool
    server_system_ms: float = 0.0
    note: str = ""
    round: int = 1

    @property
    def instances_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_sent / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_instance(self) -> float:
        return self.server_cpu_ms / self.sent if self.sent else 0.0

    @property
    def system_ms_per_instance(self) -> float:
        """The kernel's share (page cache, file system, sockets) of ``cpu_ms_per_instance``."""
        return self.server_system_ms / self.sent if self.sent else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "case": self.case,
            "server": self.server,
            "network": self.network,
            "sent": self.sent,
            "stored": self.stored,
            "seconds": round(self.seconds, 3),
            "instances_per_s": round(self.instances_per_s, 1),
            "mb_per_s": round(self.mb_per_s, 1),
            "cpu_ms_per_instance": round(self.cpu_ms_per_instance, 2),
            "system_ms_per_instance": round(self.system_ms_per_instance, 2),
            "client_ok": self.client_ok,
            "note": self.note,
            "round": self.round,
        }


# --- /proc ---------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()  # fields from "state" on; comm may contain spaces


@dataclass(frozen=True)
class CpuTimes:
    """User and system CPU (ms) of a process tree; the split shows where a slow run's time went."""

    user_ms: float = 0.0
    system_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.user_ms + self.system_ms

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user_ms - other.user_ms, self.system_ms - other.system_ms)


def process_tree_cpu_ms(root: int) -> float:
    """CPU time (user+system, ms) of ``root`` and all its descendants, incl. reaped children."""
    return process_tree_cpu(root).total_ms


def process_tree(root: int) -> set[int]:
    """``root`` and every live descendant."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                parents[int(entry)] = int(fields[1])
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


def process_tree_cpu(root: int) -> CpuTimes:
    """User and system CPU of ``root`` and all its descendants, incl. reaped children."""
    user = system = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields:
            user += int(fields[11]) + int(fields[13])  # utime + cutime
            system += int(fields[12]) + int(fields[14])  # stime + cstime
    return CpuTimes(user * 1000.0 / CLK_TCK, system * 1000.0 / CLK_TCK)


@contextmanager
def kernel_profile(root: int, output: Path | None) -> Iterator[None]:
    """``perf record`` (software clock, call graphs) of the server's process tree while the body runs.

    Why: a slow round costs twice the system CPU of a fast one for the same work, and only a profile
    taken in that round shows where the kernel spent it (``perf report -i <file> --sort sym``).
    ``output=None`` or no ``perf`` on the machine: nothing is recorded.
    """
    perf = shutil.which("perf")
    if output is None or perf is None:
        yield
        return
    pids = ",".join(str(pid) for pid in sorted(process_tree(root)))
    argv = [perf, "record", "-q", "-e", "cpu-clock", "-F", "499", "-g", "-p", pids, "-o", str(output)]
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the clock starts
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            recorder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            recorder.kill()


# --- server lifecycle ------------------------------------------------------------------------


@dataclass
class RunningServer:
    spec: ServerSpec
    network: Network
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{self.network.host}:{self.spec.http_port}"

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def running_server(
    spec: ServerSpec, network: Network, *, tcp_nodelay: bool, scratch: Path
) -> Iterator[RunningServer]:
    """Start ``spec`` with a fresh work directory under ``scratch``; stop it (whole process group).

    The work directory is left for the caller to remove with ``scratch`` once every case has run.
    Why not here: on ext4 without a journal (this machine's), an inode freed in the last minute is
    skipped by the allocator only after a look-up per candidate (``recently_deleted``), so deleting
    one server's thousands of files just before the next server starts made every file and folder
    that server created cost more (measured: a quarter of Hoichan's STOW-RS CPU in that scan).
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=scratch))
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    env.update(spec.environment(workdir))
    if tcp_nodelay:
        env["TCP_NODELAY"] = "1"  # dcmtk-based servers (Orthanc) read it too
    log_path = workdir / "server.log"
    argv = [*network.server_prefix, *spec.argv(workdir)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=spec.cwd, start_new_session=True
        )
    server = RunningServer(spec, network, proc, workdir, log_path, dict(spec.headers))
    try:
        _wait_ready(server)
        if spec.setup is not None:
            server.headers = dict(spec.setup(server))
        yield server
    finally:
        _stop(proc)


def _wait_ready(server: RunningServer) -> None:
    spec, host = server.spec, server.network.host
    deadline = time.monotonic() + spec.startup_timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{spec.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        if _port_open(host, spec.dimse_port) and _port_open(host, spec.http_port):
            if spec.ready_path is None:
                return
            try:
                r = httpx.get(server.base_url + spec.ready_path, headers=dict(spec.headers), timeout=2)
                if r.status_code < 500:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"{spec.name} not ready after {spec.startup_timeout_s} s:\n{server.log_tail()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (we made it its own session), then SIGKILL."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    with suppress(ProcessLookupError, PermissionError):  # stragglers left in our group
        os.killpg(proc.pid, signal.SIGKILL)


# --- clients -------------------------------------------------------------------------------


@functools.cache
def dcmtk_storescu() -> str | None:
    """dcmtk's ``storescu``: pynetdicom installs a ``storescu`` of its own into venvs, with
    other options, so take the first one on PATH that says it is dcmtk."""
    for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
        candidate = Path(directory) / "storescu"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            probe = subprocess.run([str(candidate), "--version"], capture_output=True, check=False)
            if b"dcmtk" in (probe.stdout + probe.stderr).lower():
                return str(candidate)
    return None


def _client_env(tcp_nodelay: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if tcp_nodelay:
        env["TCP_NODELAY"] = "1"
    return env


def _run_storescu(server: RunningServer, files: Sequence[Path], tcp_nodelay: bool) -> tuple[float, bool, str]:
    """One association, all files (storescu proposes a context per SOP class it finds).

    The files go on the command line (1,000 paths are ~70 KB of a 2 MB ``ARG_MAX``), not as links in a
    scanned folder: creating and deleting 1,000 links per measurement left 1,000 recently freed inodes
    that every file the next server created was allocated past (journal-less ext4 skips inodes freed
    in the last 60 s, one look-up each), and the STOW-RS case that follows paid for it.
    """
    argv = [
        dcmtk_storescu() or "storescu",
        "-aet",
        "BENCHSCU",
        "-aec",
        server.spec.called_ae,
        "-nh",
        server.network.host,
        str(server.spec.dimse_port),
        *(str(f) for f in files),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, env=_client_env(tcp_nodelay), check=False)
    seconds = time.perf_counter() - t0
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    failed = [line for line in out.splitlines() if line.startswith(("E:", "F:"))]
    if proc.returncode != 0 and not failed:
        failed = [f"storescu exit {proc.returncode}: {out.strip()[-300:]}"]
    return seconds, proc.returncode == 0 and not failed, "; ".join(failed[:3])


def _run_stow(
    server: RunningServer, files: Sequence[Path], batch: int, tcp_nodelay: bool
) -> tuple[float, bool, str]:
    """STOW-RS in its own process (client CPU stays off the harness), timed by the client.

    The file list goes on its standard input: no file is created or deleted around a measurement.
    """
    argv = [
        sys.executable,
        "-m",
        "benchmarks.ingest.stow",
        "--url",
        server.base_url + server.spec.stow_path,
        "--batch",
        str(batch),
        "--files-from",
        "-",
    ]
    for k, v in server.headers.items():
        argv += ["--header", f"{k}: {v}"]
    file_list = "\n".join(str(f) for f in files).encode()
    proc = subprocess.run(
        argv, input=file_list, capture_output=True, env=_client_env(tcp_nodelay), check=False
    )
    try:
        report = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0.0, False, proc.stderr.decode(errors="replace")[-500:]
    ok = proc.returncode == 0 and report["failed_instances"] == 0
    note = "" if ok else f"statuses {report['statuses']}, failed {report['failed_instances']}"
    return float(report["elapsed_s"]), ok, note


def _qido_count(server: RunningServer, study_uid: str, expected: int) -> int | None:
    """Instances of the study the server now lists (None if QIDO is unavailable)."""
    url = f"{server.base_url}{server.spec.qido_root}/studies/{study_uid}/instances"
    headers = {**server.headers, "Accept": "application/dicom+json"}
    try:
        r = httpx.get(url, params={"limit": str(expected + 1)}, headers=headers, timeout=60)
    except httpx.HTTPError:
        return None
    if r.status_code == 204:
        return 0
    if r.status_code != 200:
        return None
    return len(r.json())


def _wait_until_idle(
    pid: int, *, busy_cores: float = 0.05, window_s: float = 1.0, limit_s: float = 120.0
) -> None:
    """Until the server's process tree uses under ``busy_cores`` of CPU over a ``window_s`` window."""
    deadline = time.monotonic() + limit_s
    before = process_tree_cpu_ms(pid)
    while time.monotonic() < deadline:
        time.sleep(window_s)
        now = process_tree_cpu_ms(pid)
        if now - before < busy_cores * window_s * 1000:
            return
        before = now


def run_case(
    spec: ServerSpec,
    network: Network,
    case: Case,
    files: Sequence[Path],
    study_uid: str,
    *,
    scratch: Path,
    round_no: int = 1,
    profile_dir: Path | None = None,
) -> CaseResult:
    """Fresh server, send ``case.count`` files over ``case.path``, measure, stop.

    With ``profile_dir``, the measurement is also recorded by ``perf`` into a file named after the
    round, the server and the case (see ``kernel_profile``).
    """
    chosen = list(files[: case.count] if case.count else files)
    nbytes = sum(f.stat().st_size for f in chosen)
    with running_server(spec, network, tcp_nodelay=case.tcp_nodelay, scratch=scratch) as server:
        # Measure steady state: a server answering HTTP may still be starting helpers (hoichan's
        # Celery worker imports for seconds), and the previous case's clean-up (ext4 discards its
        # freed blocks) must reach the disk before the clock starts.
        _wait_until_idle(server.process.pid)
        os.sync()
        time.sleep(SETTLE_S)
        profile = None
        if profile_dir is not None:
            slug = f"{network.name}-{case.name}-r{round_no}-{spec.name}".replace(" ", "_").lower()
            profile = profile_dir / f"{slug}.perf"
        with kernel_profile(server.process.pid, profile):
            cpu0 = process_tree_cpu(server.process.pid)
            if case.path == "cstore":
                seconds, ok, note = _run_storescu(server, chosen, case.tcp_nodelay)
            elif case.path == "stow":
                seconds, ok, note = _run_stow(server, chosen, case.batch, case.tcp_nodelay)
            else:
                raise ValueError(f"unknown path {case.path!r}")
            cpu = process_tree_cpu(server.process.pid) - cpu0
        stored = _qido_count(server, study_uid, len(chosen))
    return CaseResult(
        case=case.name,
        server=spec.name,
        network=network.name,
        sent=len(chosen),
        stored=stored,
        seconds=seconds,
        bytes_sent=nbytes,
        server_cpu_ms=cpu.total_ms,
        server_system_ms=cpu.system_ms,
        client_ok=ok,
        note=note,
        round=round_no,
    )


# --- report --------------------------------------------------------------------------------


def round_order(reference: ServerSpec, candidate: ServerSpec, round_no: int) -> tuple[ServerSpec, ServerSpec]:
    """Which server goes first in a round: alternating, so neither always follows the other's clean-up."""
    return (reference, candidate) if round_no % 2 else (candidate, reference)


RECENT_DELETE_S = 65.0
"""ext4's inode allocator steps over inodes freed in the last 60 s (``RECENTCY_MIN``), one look-up each."""


def mark_deletes(data_dir: Path) -> None:
    """Note when this run removed its servers' files, for the next run's ``wait_out_recent_deletes``."""
    with suppress(OSError):
        (data_dir / ".last-cleanup").write_text(f"{time.time():.0f}\n")


def wait_out_recent_deletes(data_dir: Path) -> None:
    """Sleep until a previous run's thousands of freed inodes no longer slow file creation.

    A run started right after another found a quarter of a server's CPU in ext4's
    ``recently_deleted`` scan (journal-less ext4, as on this machine), for both servers alike.
    """
    try:
        last = float((data_dir / ".last-cleanup").read_text())
    except (OSError, ValueError):
        return
    remaining = last + RECENT_DELETE_S - time.time()
    if remaining > 0:
        print(f"waiting {remaining:.0f} s for the previous run's deleted files to age", flush=True)
        time.sleep(remaining)


def format_table(results: Sequence[CaseResult], reference: str, candidate: str) -> str:
    """Per-measurement rows, then the candidate/reference ratios of the medians over rounds.

    Each round's own ratio (both servers measured back to back) is shown as a range: on a shared
    two-core machine a single pair can be 20% off either way, the median of several rarely is.
    """
    head = (
        f"{'network':<13} {'case':<16} {'round':>5} {'server':<14} {'sent':>5} {'stored':>6} {'seconds':>8} "
        f"{'inst/s':>8} {'MB/s':>7} {'CPU-ms/inst':>11} {'of it sys':>9}  note"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        stored = "?" if r.stored is None else str(r.stored)
        lines.append(
            f"{r.network:<13} {r.case:<16} {r.round:>5} {r.server:<14} {r.sent:>5} {stored:>6} "
            f"{r.seconds:>8.2f} {r.instances_per_s:>8.1f} {r.mb_per_s:>7.1f} {r.cpu_ms_per_instance:>11.2f} "
            f"{r.system_ms_per_instance:>9.2f}  "
            f"{'' if r.client_ok else 'CLIENT FAILED '}{r.note}"
        )
    lines += [
        "",
        f"median over rounds, ratio {candidate} / {reference} (throughput: >1 is faster; CPU: <1 is cheaper)",
    ]
    lines.append(
        f"{'network':<13} {'case':<16} {reference + ' inst/s':>16} {candidate + ' inst/s':>16} "
        f"{'inst/s ratio':>12} {'per round':>11} {'CPU/inst ratio':>15}"
    )
    by_server: dict[tuple[str, str, str], dict[int, CaseResult]] = {}
    for r in results:
        by_server.setdefault((r.network, r.case, r.server), {})[r.round] = r
    for net, case in dict.fromkeys((r.network, r.case) for r in results):
        refs = by_server.get((net, case, reference), {})
        cands = by_server.get((net, case, candidate), {})
        if not refs or not cands:
            continue
        ref_rate = median(r.instances_per_s for r in refs.values())
        cand_rate = median(r.instances_per_s for r in cands.values())
        ref_cpu = median(r.cpu_ms_per_instance for r in refs.values())
        cand_cpu = median(r.cpu_ms_per_instance for r in cands.values())
        if ref_rate <= 0 or ref_cpu <= 0:
            continue
        per_round = [
            c.instances_per_s / refs[n].instances_per_s
            for n, c in cands.items()
            if n in refs and refs[n].instances_per_s > 0
        ]
        spread = f"{min(per_round):.2f}-{max(per_round):.2f}" if per_round else "-"
        lines.append(
            f"{net:<13} {case:<16} {ref_rate:>16.1f} {cand_rate:>16.1f} {cand_rate / ref_rate:>12.2f} "
            f"{spread:>11} {cand_cpu / ref_cpu:>15.2f}"
        )
    return "\n".join(lines)
