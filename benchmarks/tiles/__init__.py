"""Tile-serving benchmark: Hoichan over HTTP (2 uvicorn workers) against OpenSlide in-process."""
