"""Helpers that build real test media and drive real tools."""
