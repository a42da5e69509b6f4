"""Building blocks of the autoscaler: configuration, load window, metrics and group policy.

Pure logic with an injected clock: nothing here does I/O, so every decision is reproducible in a
unit test or a trace replay (bench/autoscale.py). `gpustack_iac.runtime.autoscaler` assembles them.
"""
