"""Pipelines: the digits demo, the penguin example, and the helper that appends compression."""
