"""Techport gateway service."""
