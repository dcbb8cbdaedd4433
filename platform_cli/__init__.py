"""The `tunestack` CLI: thin commands over service code and the process/compose stack."""
