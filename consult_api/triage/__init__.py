"""Triage orchestration: study-complete and slide-ingested triggers -> routing -> runs on the worker."""
