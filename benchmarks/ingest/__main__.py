"""``python -m benchmarks.ingest``: Orthanc vs the system under test, C-STORE and STOW-RS.

Default system under test is a second Orthanc (checks the harness itself: the ratios should
be ~1.0). ``--hoichan`` benchmarks ``hoichan serve`` with a provisioned facility, API key and
calling AE title (``benchmarks.ingest.hoichan``). Any other server: pass its command line and
endpoints, e.g.::

    python -m benchmarks.ingest --sut-name hoichan \\
        --sut-cmd 'hoichan serve --host {bind_host} --port {http_port}' \\
        --sut-http-port 8000 --sut-dimse-port 11112 --sut-ae HOICHAN \\
        --sut-header 'Authorization: Bearer TOKEN' --sut-env HOICHAN_DATA_DIR={workdir} \\
        --sut-ready-path /health
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from benchmarks.ingest.harness import (
    Case,
    CaseResult,
    ServerSpec,
    dcmtk_storescu,
    format_table,
    mark_deletes,
    round_order,
    run_case,
    wait_out_recent_deletes,
)
from benchmarks.ingest.hoichan import hoichan_spec
from benchmarks.ingest.netns import Network, VethNetwork, loopback, reexec_in_private_netns
from benchmarks.ingest.orthanc import orthanc_available, orthanc_spec
from benchmarks.ingest.studyset import ensure_study_set, warm_page_cache


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=1000, help="instances in the study set (default 1000)")
    p.add_argument("--matrix", type=int, default=512, help="rows = columns (default 512)")
    p.add_argument(
        "--stock-count", type=int, default=None, help="instances for the stock-storescu case (default: all)"
    )
    p.add_argument("--batch", type=int, default=50, help="instances per STOW-RS request (default 50)")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measurements of each case per server, alternating who goes first; medians compared (default 3)",
    )
    p.add_argument("--network", choices=["loopback", "veth", "both"], default="loopback")
    p.add_argument("--mtu", type=int, default=1500, help="veth MTU (default 1500)")
    p.add_argument(
        "--cases",
        default="stock,nodelay,stow",
        help="comma list of stock, nodelay, stow (default: all three)",
    )
    p.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "hoichan-bench-data")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument(
        "--profile-dir",
        type=Path,
        help="record each measurement with `perf record -g` (both servers) into this folder",
    )
    sut = p.add_argument_group("system under test (default: a second Orthanc)")
    sut.add_argument(
        "--hoichan",
        action="store_true",
        help="benchmark `hoichan serve` (fresh data dir, provisioned facility, API key and AE title)",
    )
    sut.add_argument("--sut-name", default="hoichan")
    sut.add_argument(
        "--sut-cmd", help="command line; {bind_host} {http_port} {dimse_port} {workdir} are filled"
    )
    sut.add_argument("--sut-http-port", type=int, default=8000)
    sut.add_argument("--sut-dimse-port", type=int, default=11112)
    sut.add_argument("--sut-ae", default="HOICHAN", help="called AE title")
    sut.add_argument("--sut-stow-path", default="/dicom-web/studies")
    sut.add_argument("--sut-qido-root", default="/dicom-web")
    sut.add_argument(
        "--sut-header", action="append", default=[], help="'Name: value' auth header (repeatable)"
    )
    sut.add_argument("--sut-env", action="append", default=[], help="KEY=VALUE for the server (repeatable)")
    sut.add_argument("--sut-ready-path", help="HTTP path answering < 500 once the server is ready")
    sut.add_argument("--sut-cwd", help="working directory for the server")
    sut.add_argument("--sut-startup-timeout", type=float, default=90.0)
    return p


def sut_spec(args: argparse.Namespace) -> ServerSpec:
    """The system under test from the command line, or a second Orthanc."""
    if args.hoichan:
        return hoichan_spec(
            http_port=args.sut_http_port, dimse_port=args.sut_dimse_port, ae_title=args.sut_ae
        )
    if not args.sut_cmd:
        return orthanc_spec("orthanc-b", aet="ORTHANCB", dicom_port=4243, http_port=8043)
    return ServerSpec(
        name=args.sut_name,
        command=shlex.split(args.sut_cmd),
        http_port=args.sut_http_port,
        dimse_port=args.sut_dimse_port,
        called_ae=args.sut_ae,
        stow_path=args.sut_stow_path,
        qido_root=args.sut_qido_root,
        headers=dict(h.split(": ", 1) for h in args.sut_header),
        env=dict(e.split("=", 1) for e in args.sut_env),
        ready_path=args.sut_ready_path,
        cwd=args.sut_cwd,
        startup_timeout_s=args.sut_startup_timeout,
    )


def build_cases(args: argparse.Namespace) -> list[Case]:
    wanted = {c.strip() for c in args.cases.split(",") if c.strip()}
    cases = []
    if "stock" in wanted:
        cases.append(Case("C-STORE stock", "cstore", tcp_nodelay=False, count=args.stock_count))
    if "nodelay" in wanted:
        cases.append(Case("C-STORE NODELAY", "cstore", tcp_nodelay=True))
    if "stow" in wanted:
        cases.append(Case(f"STOW-RS x{args.batch}", "stow", batch=args.batch))
    return cases


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    reexec_in_private_netns(argv)
    if dcmtk_storescu() is None or not orthanc_available():
        print("needs dcmtk (storescu) and orthanc + orthanc-dicomweb (apt-get install)", file=sys.stderr)
        return 2
    reference = orthanc_spec("orthanc", aet="ORTHANC", dicom_port=4242, http_port=8042)
    candidate = sut_spec(args)
    cases = build_cases(args)

    study = ensure_study_set(args.data_dir, count=args.count, matrix=args.matrix)
    warm_page_cache(study)
    print(
        f"study set: {len(study.files)} CT instances {args.matrix}x{args.matrix} int16, "
        f"{study.total_bytes / 1e6:.1f} MB, in {study.directory}",
        flush=True,
    )
    if args.profile_dir is not None:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
    results: list[CaseResult] = []
    scratch = Path(tempfile.mkdtemp(prefix="hoichan-bench-"))
    try:
        with ExitStack() as stack:
            networks: list[Network] = []
            if args.network in ("loopback", "both"):
                networks.append(loopback())
            if args.network in ("veth", "both"):
                networks.append(stack.enter_context(VethNetwork(args.mtu)))
            wait_out_recent_deletes(args.data_dir)
            # Rounds outermost: this machine drifts over a run of minutes (the same server slowed by a
            # third from the first round to the last), and with cases outermost the whole drift landed
            # on whichever case ran last. Now every case is measured early, midway and late.
            for network in networks:
                for round_no in range(1, args.rounds + 1):
                    for case in cases:
                        for spec in round_order(reference, candidate, round_no):
                            result = run_case(
                                spec,
                                network,
                                case,
                                study.files,
                                study.study_uid,
                                scratch=scratch,
                                round_no=round_no,
                                profile_dir=args.profile_dir,
                            )
                            results.append(result)
                            print(
                                f"  {network.name} {case.name} round {round_no} {spec.name}: "
                                f"{result.instances_per_s:.1f} inst/s, "
                                f"{result.cpu_ms_per_instance:.2f} CPU-ms/inst "
                                f"({result.system_ms_per_instance:.2f} sys), stored {result.stored}",
                                flush=True,
                            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        mark_deletes(args.data_dir)
    print()
    print(format_table(results, reference.name, candidate.name))
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in results], indent=2))
    return 0 if all(r.client_ok and r.stored in (None, r.sent) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
