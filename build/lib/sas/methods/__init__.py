"""Steering methods: one file each, registered by name (see registry.py)."""
