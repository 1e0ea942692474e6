"""Specialist opinions: drafts, signing (then immutable) and addenda."""
