"""Techport notifications service."""
