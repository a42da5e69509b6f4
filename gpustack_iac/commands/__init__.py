"""Click commands, one module per family; `gpustack_iac.cli` assembles them."""
