"""Techport shared contracts and messaging infrastructure."""
