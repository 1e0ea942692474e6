"""``python -m benchmarks.ingest.page_reuse``: batch ingest writes keeping or giving back the page cache.

Writes batches of instance-sized blobs through ``LocalBlobStore`` as the batch doors do (commit
without a folder sync, one ``sync_all`` per batch) two ways: ``keep`` (pages left cached: what the
store did before) and ``give-back`` (the batch named to ``sync_all(written=...)``: what STOW-RS and
the DIMSE indexer do). Prints files/s and system CPU per file, round by round (the order
alternating), and give-back's median against keep's.

Why it exists: on a VM whose balloon reports free pages to the host (``virtio_balloon`` with
free page reporting, as on this machine), a page the guest has not used lately costs a host fault
to get. Buffered writes take page-cache pages for every instance; given back, they are reused only
if the next batch comes before the balloon reports them. What to read is the slowest round as much
as the median: ``keep`` is fastest while the guest has recently freed pages at hand and slowest
once it has none (312 against 911 files/s here in one run). A third way, writing past the page
cache (``O_DIRECT``), was measured here too (685-1,005 files/s against give-back's 1,123-1,426)
and left the server when STOW-RS ran faster given back. On bare metal the ways should differ less.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from consult_api.storage.blobs import BlobRef, LocalBlobStore

MODES = ("keep", "give-back")


@dataclass(frozen=True)
class Measurement:
    mode: str
    files_per_s: float
    system_ms_per_file: float


def _system_s() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def write_batches(store: LocalBlobStore, *, mode: str, count: int, size: int, batch: int) -> Measurement:
    """``count`` distinct blobs of ``size`` bytes in batches of ``batch``; timed and CPU-counted."""
    payload = bytearray(os.urandom(size))
    sys0, t0 = _system_s(), time.perf_counter()
    written: list[BlobRef] = []
    for i in range(count):
        payload[:8] = i.to_bytes(8, "little")  # distinct bytes: distinct blobs
        writer = store.open_writer()
        writer.write(payload)
        staged = writer.finish(durable=False)
        written.append(store.commit(staged, sync_dir=False))
        if len(written) == batch or i == count - 1:
            store.sync_all(written=written if mode == "give-back" else ())
            written = []
    seconds, system = time.perf_counter() - t0, _system_s() - sys0
    return Measurement(mode, count / seconds, 1000 * system / count)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest.page_reuse", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--count", type=int, default=1000, help="blobs per measurement (default 1000)")
    parser.add_argument("--size", type=int, default=525 * 1024, help="bytes per blob (default: a 512x512 CT)")
    parser.add_argument("--batch", type=int, default=50, help="blobs per sync (default 50, STOW-RS's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--pause",
        type=float,
        default=5.0,
        help="seconds between measurements, for freed pages to be reported",
    )
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)
    results: list[Measurement] = []
    scratch = Path(tempfile.mkdtemp(prefix="page-reuse-", dir=args.dir))
    try:  # every store is kept to the end: deleting thousands of files taxes the next creates
        for round_no in range(args.rounds):
            for mode in MODES[round_no % 2 :] + MODES[: round_no % 2]:
                time.sleep(args.pause)
                store = LocalBlobStore(scratch / f"{round_no}-{mode}")
                result = write_batches(store, mode=mode, count=args.count, size=args.size, batch=args.batch)
                results.append(result)
                print(
                    f"round {round_no + 1} {result.mode:<9}: {result.files_per_s:7.0f} files/s, "
                    f"{result.system_ms_per_file:.2f} system CPU-ms/file",
                    flush=True,
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    medians = {
        mode: (
            statistics.median(r.files_per_s for r in results if r.mode == mode),
            statistics.median(r.system_ms_per_file for r in results if r.mode == mode),
        )
        for mode in MODES
    }
    keep_speed, keep_system = medians["keep"]
    worst = {mode: min(r.files_per_s for r in results if r.mode == mode) for mode in MODES}
    for mode in MODES[1:]:
        speed, system = medians[mode]
        print(
            f"median ratio {mode} / keep: {speed / keep_speed:.2f}x files/s, "
            f"{system / keep_system:.2f}x system CPU per file; "
            f"slowest round {worst[mode] / worst['keep']:.2f}x keep's"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
