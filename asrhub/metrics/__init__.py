"""Prometheus metrics of one hub."""
