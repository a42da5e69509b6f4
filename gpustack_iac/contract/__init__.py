"""The rules every layer must agree on, written once: spec, compile, the plan summary and the
runtime all import this package, and it imports nothing of theirs (only `errors`).

- `restart`: what, in a replica group's definition, restarts its replicas (a rolling update), and
  the group generation derived from exactly that;
- `scaling`: the scaling settings and their one set of defaults.
"""
