"""The techport command."""
