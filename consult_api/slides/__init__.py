"""Whole-slide images: ingest with OpenSlide, DeepZoom tiles, thumbnails, regions, associated images."""
