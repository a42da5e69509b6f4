"""Plan and apply-result renderers: terminal (rich), Markdown (pull-request comment), JSON."""

from gpustack_iac.engine.render.json import apply_to_dict, plan_to_dict, render_apply_json, render_json
from gpustack_iac.engine.render.markdown import marker, render_apply_markdown, render_markdown
from gpustack_iac.engine.render.terminal import render_apply_terminal, render_terminal

__all__ = [
    "apply_to_dict",
    "marker",
    "plan_to_dict",
    "render_apply_json",
    "render_apply_markdown",
    "render_apply_terminal",
    "render_json",
    "render_markdown",
    "render_terminal",
]
