"""`tunestack` command groups: argument parsing and printing over the service layer."""
