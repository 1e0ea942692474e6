"""DICOM: the index, ingest shared by every entry point, DICOMweb and DIMSE."""
