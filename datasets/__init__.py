"""Data sources for training: synthetic generators, loaders for what ML engineers bring, manifests.

Nothing here imports the service, the viewer, training or torch: these modules read and write
files only, so they test without servers and run on the serving install.
"""
