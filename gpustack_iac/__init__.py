"""gpustack-iac: declarative GPU services across clouds."""

__version__ = "0.1.0"
