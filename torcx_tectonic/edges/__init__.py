"""The edges: how outside input enters (files, YAML, HTTP, signatures) and how files are written."""
