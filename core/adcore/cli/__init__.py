"""The ``adcore`` command line: one module per command, heavy imports inside commands."""
