"""Techport members service."""
