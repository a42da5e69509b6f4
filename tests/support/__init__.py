"""Shared test utilities (load generation, process reaping)."""
