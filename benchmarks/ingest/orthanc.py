"""Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) as a benchmark server.

The configuration is generated per start into the fresh work directory: its own storage and
index, its own DICOM and HTTP ports and AE title, the DICOMweb plugin, no storage
compression (the system under test stores files as received), and a generated HTTP user
(remote access must be on for the veth network, so it is never left open).
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
from pathlib import Path

from benchmarks.ingest.harness import ServerSpec

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def orthanc_available() -> bool:
    """True when the Orthanc binary and its DICOMweb plugin are installed."""
    return shutil.which("Orthanc") is not None and DICOMWEB_PLUGIN.exists()


def orthanc_config(
    workdir: Path, *, name: str, aet: str, dicom_port: int, http_port: int, password: str
) -> dict:
    """The JSON configuration for one benchmark Orthanc."""
    return {
        "Name": name,
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "StorageCompression": False,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": True,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {"bench": password},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        "SaveJobs": False,
        "LogExportedResources": False,
        "KeepAlive": True,
        "HttpsVerifyPeers": False,
    }


def orthanc_spec(
    name: str = "orthanc", *, aet: str = "ORTHANC", dicom_port: int = 4242, http_port: int = 8042
) -> ServerSpec:
    """A ``ServerSpec`` that starts Orthanc with a generated config and Basic auth user."""
    password = secrets.token_urlsafe(18)

    def command(workdir: Path) -> list[str]:
        config = orthanc_config(
            workdir, name=name, aet=aet, dicom_port=dicom_port, http_port=http_port, password=password
        )
        path = workdir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return ["Orthanc", "--no-jobs", str(path)]

    token = base64.b64encode(f"bench:{password}".encode()).decode()
    return ServerSpec(
        name=name,
        command=command,
        http_port=http_port,
        dimse_port=dicom_port,
        called_ae=aet,
        stow_path="/dicom-web/studies",
        qido_root="/dicom-web",
        headers={"Authorization": f"Basic {token}"},
        ready_path="/system",
    )
