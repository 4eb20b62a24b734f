"""GUI tests: the app driven by clicks and typing (pytest-qt, offscreen)."""
