"""De-identified training exports of specialist-confirmed findings (read by ``datasets.manifest``)."""
