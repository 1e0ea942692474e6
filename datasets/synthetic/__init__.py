"""Synthetic data with known ground truth: CT volumes, radiographs, H&E tiles, whole slides.

Every generator takes a ``numpy.random.Generator`` (or a seed) and is deterministic, so a test
or a demo model can be reproduced exactly; every writer emits real files (Part-10 DICOM,
pyramidal TIFF) so the same data also exercises ingest.
"""
