"""``python -m benchmarks.ingest.page_reuse``: batch ingest writes with and without giving pages back.

Writes batches of instance-sized blobs through ``LocalBlobStore`` exactly as the batch doors do
(stage with early writeback, commit without a folder sync, one ``sync_all`` per batch), once
keeping the written pages cached (what the store did before) and once naming them to
``sync_all(written=...)`` so they leave the page cache. Prints files/s and the system CPU per file
for both, and their ratio, round by round (alternating who goes first).

Why it exists: on a VM whose balloon reports free pages to the host (``virtio_balloon`` with
free page reporting, as on this machine), a page the guest has not used lately costs a host fault
to get. Ingest that keeps its pages cached takes new ones for every instance; ingest that gives
them back reuses the same few batches' worth. On bare metal the two should read about the same.
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


def write_batches(
    store: LocalBlobStore, *, count: int, size: int, batch: int, give_back: bool
) -> Measurement:
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
            store.sync_all(written=written if give_back else ())
            written = []
    seconds, system = time.perf_counter() - t0, _system_s() - sys0
    mode = MODES[1] if give_back else MODES[0]
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
            order = (False, True) if round_no % 2 == 0 else (True, False)
            for give_back in order:
                time.sleep(args.pause)
                store = LocalBlobStore(scratch / f"{round_no}-{int(give_back)}")
                result = write_batches(
                    store, count=args.count, size=args.size, batch=args.batch, give_back=give_back
                )
                results.append(result)
                print(
                    f"round {round_no + 1} {result.mode:<9}: {result.files_per_s:7.0f} files/s, "
                    f"{result.system_ms_per_file:.2f} system CPU-ms/file",
                    flush=True,
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    keep = [r for r in results if r.mode == MODES[0]]
    give = [r for r in results if r.mode == MODES[1]]
    speed = statistics.median(r.files_per_s for r in give) / statistics.median(r.files_per_s for r in keep)
    system = statistics.median(r.system_ms_per_file for r in give) / statistics.median(
        r.system_ms_per_file for r in keep
    )
    print(f"median ratio give-back / keep: {speed:.2f}x files/s, {system:.2f}x system CPU per file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
