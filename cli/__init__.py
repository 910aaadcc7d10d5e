"""The ``ddim-edit`` command line: each command is a thin adapter over the library."""
