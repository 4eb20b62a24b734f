"""Authenticated, encrypted links between the parties of an SMPC session."""
