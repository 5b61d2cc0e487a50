"""(issue 3) algorithms for declearn."""
