"""Tests for consult_api.dicom."""
