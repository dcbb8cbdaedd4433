"""Tunestack services: each subpackage is one container entrypoint (`python -m services.X`)."""
