"""Loaders for what ML engineers bring: DICOM folders with labels, annotated slides, .npz files."""
