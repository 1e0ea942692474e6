"""Ingest benchmark: Orthanc against the system under test, over C-STORE and STOW-RS.

Why a harness rather than a one-off script: the target in the ingest issue is relative
(at least 1.5x Orthanc on both paths, in the same run, on the same study set), so both
servers must be started, fed and measured the same way each time. ``ServerSpec`` describes
any server (command line, ports, AE title, STOW path, auth headers); Orthanc is one factory
(``benchmarks.ingest.orthanc.orthanc_spec``), Hoichan is another spec from the command line.

Run: ``python -m benchmarks.ingest --help``. Needs root (a private network namespace keeps
every listener off the host's interfaces), dcmtk's ``storescu`` and, for the reference,
Debian's ``orthanc`` and ``orthanc-dicomweb``.
"""
