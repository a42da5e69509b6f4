"""The embedded engine: runs a Pulumi program in-process with our own resource monitor."""
