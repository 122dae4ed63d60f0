"""Tools of the privacy officer: audit scan, retention purge, erasure, access log."""
