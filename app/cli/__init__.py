"""The herald command line."""
