"""Techport matching service."""
