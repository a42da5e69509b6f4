"""support.MATRIX classifies every property of every model; plan enforces its rows; the docs page is current."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, Iterator, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from gpustack_iac import support
from gpustack_iac.compile import compile_spec
from gpustack_iac.errors import ConfigError
from gpustack_iac.spec.loader import load_text
from gpustack_iac.spec.models import DOCUMENT_MODELS
from gpustack_iac.stacks.context import StackContext

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "support.md"


def _models(tp: Any) -> list[type[BaseModel]]:
    origin = get_origin(tp)
    if origin is Annotated:
        return _models(get_args(tp)[0])
    if origin in (Union, types.UnionType, list, dict, tuple):
        return [m for arg in get_args(tp) for m in _models(arg)]
    return [tp] if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def property_paths(model: type[BaseModel], prefix: str = "", seen: frozenset[type] = frozenset()) -> Iterator[str]:
    """Every property path of `model`, nested models included (`ssh_config.hosts.blocks`)."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path
        for nested in _models(field.annotation):
            if nested not in seen:
                yield from property_paths(nested, f"{path}.", seen | {model})


def test_every_property_of_every_model_is_classified() -> None:
    unclassified = [f"{kind}.{path}" for kind, model in DOCUMENT_MODELS.items() for path in property_paths(model)
                    if support.support_for(kind, path) is None]
    assert not unclassified, f"properties support.MATRIX does not classify: {unclassified}"


def test_every_row_names_a_real_property_and_all_backends() -> None:
    every = {f"{k}.{p}" for k, m in DOCUMENT_MODELS.items() for p in property_paths(m)} | set(DOCUMENT_MODELS)
    shared = {p for k in ("service", "task", "dev-environment") for p in property_paths(DOCUMENT_MODELS[k])}
    for key, row in support.MATRIX.items():
        owner, _, prop = key.partition(".")
        assert (prop in shared) if owner == "run" else key in every, key
        assert len(row.statuses) == len(support.COLUMNS) and set(row.statuses) <= {"honoured", "refused", "warned"}, key
        assert not row.enforce or row.used is not None, key


def test_support_page_is_current() -> None:
    assert PAGE.read_text() == support.render_markdown(), "run: python -m gpustack_iac.support > docs/reference/support.md"


BASE = "type: fleet\nname: f\nbackends: [local]\nnodes: 1\nresources: {cpu: 1.., memory: 64MB.., disk: 0GB..}\n---\n" \
       "type: gateway\nname: gw\nbackend: local\ndefault: true\ncertificate: null\n---\n"


def _plan(text: str, tmp_path: Path) -> list[str]:
    spec = load_text(text, file=str(tmp_path / "s.dstack.yml"), env={})
    ctx = StackContext(project="p", stack="dev", state_root=tmp_path)
    return compile_spec(spec, ctx, hosts=[]).warnings


@pytest.mark.parametrize("text, path, words", [
    ("type: fleet\nname: c\nbackends: [gcp]\nregions: [us-central1]\nnodes: 1\nplacement: cluster\nresources: {gpu: L4}\n",
     "placement", "placement: cluster is not implemented on gcp"),
    ("type: fleet\nname: c\nbackends: [local]\nnodes: 1\nreservation: r-1\n", "reservation",
     "reservation is not supported on backend local"),
    ("type: fleet\nname: c\nbackends: [gcp]\nregions: [us-central1]\nnodes: 1\nreservation: r-1\nresources: {gpu: L4}\n",
     "reservation", "reservation is not implemented on gcp"),
    ("type: fleet\nname: c\nbackends: [local]\nnodes: 1\nblocks: 2\n", "blocks", "blocks is not supported on backend local"),
    # AWS removes idle nodes (drained, then that instance terminated); GCP's stack does not hand its groups over yet.
    ("type: fleet\nname: c\nbackends: [gcp]\nregions: [us-central1]\nnodes: 0..2\nidle_duration: 1h\nresources: {gpu: A100:80GB}\n",
     "idle_duration", "idle_duration is not supported on backend gcp"),
    ("type: gateway\nname: g2\nbackend: gcp\nregion: us-central1\ndomain: example.com\npublic_ip: false\n",
     "public_ip", "public_ip: false is not implemented on gcp"),
])
def test_enforced_rows_refuse_at_plan_naming_property_and_backend(text: str, path: str, words: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _plan(BASE + text, tmp_path)
    found = [d for d in caught.value.diagnostics if d.path == path]
    assert found and words in found[0].message, caught.value


def test_warned_rows_warn(tmp_path: Path) -> None:
    warnings = _plan(BASE + "type: fleet\nname: i\nbackends: [local]\nnodes: 1\nidle_duration: 1h\n", tmp_path)
    assert any("idle_duration is ignored on backend local" in w for w in warnings), warnings


def test_the_matrix_has_a_column_per_implemented_backend() -> None:
    from gpustack_iac.backends import IMPLEMENTED_BACKENDS

    assert set(support.COLUMNS) == set(IMPLEMENTED_BACKENDS), "a new backend needs its column in support.MATRIX"


def test_a_second_probe_is_refused_only_where_one_request_is_all_there_is() -> None:
    spec = load_text("type: service\nname: s\nport: 80\nimage: x\nprobes: [{url: /a}, {url: /b}]\n")
    service = spec.services[0]
    assert support.check(service, "local") == []
    [finding] = support.check(service, "kubernetes")
    assert finding.path == "probes[1]" and finding.status == "refused" and "backend kubernetes" in finding.message
