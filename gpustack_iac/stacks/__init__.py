"""Pulumi components, one per configuration kind."""
