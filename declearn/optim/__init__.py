"""(issue 3) optim for declearn."""
