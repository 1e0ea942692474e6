"""Garbage-collector settings for long-running service processes."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Keep everything alive after start-up out of the cyclic collector's sight (``gc.freeze``).

    Why: a service process imports a few hundred thousand long-lived objects (FastAPI, SQLAlchemy,
    pydicom's data dictionary, the viewer's Gradio). Ingest allocates many short-lived containers (a
    pydicom data set per instance, ORM rows per batch), which starts a full collection every few
    instances, and every full collection walked all of those objects again. Measured in the DIMSE
    listener: a CT header parse took 0.60 ms of CPU instead of 0.26 ms, and the collector was a fifth
    of the process's samples; frozen, 0.40 ms. Frozen objects are never freed, so start-up garbage is
    collected first; call this once, when start-up is over.
    """
    gc.collect()
    gc.freeze()
