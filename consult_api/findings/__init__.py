"""AI and specialist findings on a case, their review, and per-model-version agreement."""
