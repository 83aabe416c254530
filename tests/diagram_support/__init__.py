"""Helpers for the diagram rendering tests."""
