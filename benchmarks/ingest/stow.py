"""STOW-RS client for the benchmark: ``python -m benchmarks.ingest.stow --url ... --files-from LIST``.

Why raw httpx and not dicomweb-client: dicomweb-client decodes every file into a pydicom
Dataset and re-encodes it, which would put seconds of client CPU on a two-core machine into
a measurement of the server. Here the Part-10 bytes go out untouched, ``--batch`` instances
per ``multipart/related; type="application/dicom"`` request, one keep-alive connection,
requests in sequence. Prints one JSON line: elapsed seconds (first request to last
response), bytes, HTTP statuses and the failed-instance count from the responses.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

FAILED_SOP_SEQUENCE = "00081198"


def multipart_body(parts: Sequence[bytes], boundary: str) -> bytes:
    """A multipart/related body with one application/dicom part per instance."""
    chunks: list[bytes] = []
    for data in parts:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def _failed_count(response: httpx.Response) -> int:
    try:
        body = response.json()
    except ValueError:
        return 0
    failed = body.get(FAILED_SOP_SEQUENCE, {}) if isinstance(body, dict) else {}
    return len(failed.get("Value", []))


def send(url: str, files: Sequence[Path], batch: int, headers: dict[str, str]) -> dict[str, object]:
    """Send all files; return the measurement (see module docstring)."""
    statuses: dict[str, int] = {}
    failed = 0
    nbytes = 0
    with httpx.Client(timeout=httpx.Timeout(300.0), headers=headers) as client:
        t0 = time.perf_counter()
        for start in range(0, len(files), batch):
            group = files[start : start + batch]
            data = [f.read_bytes() for f in group]
            nbytes += sum(len(d) for d in data)
            boundary = secrets.token_hex(16)
            r = client.post(
                url,
                content=multipart_body(data, boundary),
                headers={
                    "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                    "Accept": "application/dicom+json",
                },
            )
            statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
            if r.status_code >= 300:
                failed += _failed_count(r) or (len(group) if r.status_code >= 400 else 0)
            elif r.status_code == 202:
                failed += _failed_count(r)
        elapsed = time.perf_counter() - t0
    return {"elapsed_s": elapsed, "bytes": nbytes, "statuses": statuses, "failed_instances": failed}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument(
        "--files-from", required=True, help="text file, one path per line ('-': standard input)"
    )
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    args = parser.parse_args(argv)
    listing = sys.stdin.read() if args.files_from == "-" else Path(args.files_from).read_text()
    files = [Path(p) for p in listing.splitlines() if p.strip()]
    headers = dict(h.split(": ", 1) for h in args.header)
    result = send(args.url, files, args.batch, headers)
    print(json.dumps(result))
    return 0 if result["failed_instances"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
