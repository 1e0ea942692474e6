"""FHIR R4 export of concluded cases (DiagnosticReport, Observations, ImagingStudy)."""
