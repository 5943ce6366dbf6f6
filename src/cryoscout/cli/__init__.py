"""The ``cryoscout`` command line: thin commands that parse options and call operations."""
