"""(issue 3) problems for declearn."""
