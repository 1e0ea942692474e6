"""Hoichan consult service: facilities, users, consultation cases, images, opinions, audit."""

__version__ = "0.1.0"
