"""Just enough SDP reading to tell whether a description sends audio or video (RFC 8866, 3264)."""

from __future__ import annotations

SENDING = frozenset({"sendrecv", "sendonly"})
DIRECTIONS = SENDING | {"recvonly", "inactive"}


def _sections(sdp: str) -> list[list[str]]:
    sections: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line.strip())
    return sections


def _direction(lines: list[str], default: str) -> str:
    for line in lines:
        if line.startswith("a=") and line[2:] in DIRECTIONS:
            return line[2:]
    return default


def sends_media(sdp: str) -> bool:
    """True when any active audio or video section would send (sendrecv is the default)."""
    sections = _sections(sdp)
    session_default = _direction(sections[0], "sendrecv")
    for lines in sections[1:]:
        media = lines[0].split()
        if media[0] not in ("m=audio", "m=video") or (len(media) > 1 and media[1] == "0"):
            continue
        if _direction(lines, session_default) in SENDING:
            return True
    return False
