"""The chapters as a book (reading mode): ``python -m book.build`` (``make book``) renders the
executed chapter notebooks into a static website with Sphinx and myst-nb. Documentation tooling,
not part of the declearn library."""
