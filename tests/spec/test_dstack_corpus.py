"""Configurations written the way dstack's documentation writes them (tests/spec/dstack_corpus/):
every one validates, and planning each on the local backend (beside a local fleet and gateway)
either succeeds or is refused with diagnostics that each name a property. No network: SSH fleet
hosts use 198.18.0.0/15 addresses and are not probed (an empty host list), clouds plan offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack_iac.compile import compile_spec
from gpustack_iac.errors import ConfigError
from gpustack_iac.spec import secretrefs
from gpustack_iac.spec.loader import Spec, load_text
from gpustack_iac.stacks.context import StackContext

CORPUS = Path(__file__).parent / "dstack_corpus"
FILES = sorted(CORPUS.glob("*.dstack.yml"))
ENV = {"HF_TOKEN": "hf_corpus", "WANDB_API_KEY": "wandb_corpus"}
SECRETS = {"HF_TOKEN": "hf_corpus_secret"}

FLEET = "type: fleet\nname: corpus-local\nbackends: [local]\nnodes: 2\nresources: {cpu: 1.., memory: 64MB.., disk: 0GB..}\n"
GATEWAY = "type: gateway\nname: corpus-gw\nbackend: local\ndefault: true\ncertificate: null\n"

# What planning each of these on the local backend must say (a refusal names the property); any of
# the alternatives, where the answer depends on this machine (a Docker daemon, GPUs).
REFUSED: dict[str, tuple[str, ...]] = {
    "fleet-crusoe.dstack.yml": ("backend crusoe is not implemented",),
    "service-crusoe.dstack.yml": ("crusoe",),
    "service-no-gateway.dstack.yml": ("gateway: false",),
    "service-h100x8.dstack.yml": ("no host can run a replica", "needs Docker"),
    "task-gpu-missing.dstack.yml": ("no placement on the fleet's hosts",),
    "fleet-blocks.dstack.yml": ("blocks (sharing a node between workloads) is not implemented on aws",),
    "fleet-idle-duration.dstack.yml": ("idle_duration is not supported on backend gcp",),
    "service-schedule.dstack.yml": ("schedule is not supported on backend local",),
}


def test_the_corpus_is_large_enough() -> None:
    kinds = {f.name.split("-")[0] for f in FILES}
    assert len(FILES) >= 60 and kinds == {"service", "task", "dev", "fleet", "volume", "gateway"}, kinds


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_corpus_validates(path: Path) -> None:
    spec = load_text(path.read_text(), file=str(path), env=ENV)
    assert len(spec.documents()) == 1


def _with_context(path: Path) -> Spec:
    text = path.read_text()
    kind = path.name.split("-")[0]
    parts = [text]
    if kind != "fleet":
        parts.insert(0, FLEET)
    if kind != "gateway":
        parts.insert(0, GATEWAY)
    return load_text("---\n".join(parts), file=str(path), env=ENV)


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_corpus_plans_locally_or_is_refused_naming_a_property(path: Path, tmp_path: Path) -> None:
    spec = _with_context(path)
    secretrefs.resolve(spec, SECRETS, "dev")
    ctx = StackContext(project="corpus", stack="dev", state_root=tmp_path)
    ssh = any(f.is_ssh for f in spec.fleets)
    try:
        compile_spec(spec, ctx, hosts=[] if ssh else None)
    except ConfigError as exc:
        assert exc.diagnostics
        for diag in exc.diagnostics:
            assert diag.path and diag.line > 0, f"{path.name}: a refusal names no property: {diag}"
        if path.name in REFUSED:
            assert any(words in str(exc) for words in REFUSED[path.name]), str(exc)
        return
    assert path.name not in REFUSED, f"{path.name} planned, but {REFUSED.get(path.name)!r} was expected"
