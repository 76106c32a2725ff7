"""The ``waferscope`` command line: one module per command group, all thin over the library."""
