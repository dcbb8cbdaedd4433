"""Code shared by every service: settings base, artifact registry, errors, progress."""
