"""HTTP routes: request parsing and response shaping over the service layer, nothing else."""
