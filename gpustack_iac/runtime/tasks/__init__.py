"""Tasks: batch jobs run once on one or more agents, retried by policy (docs/workloads.md)."""
