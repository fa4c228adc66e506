"""Cluster links: pull raw record batches from a source cluster into mirror topics."""
