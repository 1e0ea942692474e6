"""Training and evaluation of the triage models: recipes -> MONAI/PyTorch -> ONNX -> model registry.

Importing ``training`` (or ``training.cli``, ``training.recipe``) does not import
torch; ``training.train``, ``training.loop``, ``training.tasks`` and
``training.export`` do, and need the ``train`` extra. ``training.evaluate``
scores registered ONNX models without torch.
"""
