"""The commands, one module each (inspect_ai's `_cli/`): each takes the parsed arguments,
calls app/ (or the concern that does the work), prints what it did and returns the exit code.
`introspectd/cli.py` holds the parser, `main` and the dispatch."""
