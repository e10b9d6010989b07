"""Edges: HTTP translation (status codes live only here) and caller authentication."""
