"""Configuration → one Pulumi program: facts (facts.py) → checks (checks.py) → program (program.py)."""

from gpustack_iac.compile.program import CompiledStack, compile_spec, compile_stack

__all__ = ["CompiledStack", "compile_spec", "compile_stack"]
