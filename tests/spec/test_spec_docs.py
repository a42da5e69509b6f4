"""Generated reference docs and JSON Schema stay in step with the models."""

from __future__ import annotations

from pathlib import Path

from gpustack_iac.spec.docs import main as docs_main
from gpustack_iac.spec.docs import render_all, stale_pages
from gpustack_iac.spec.models import DOCUMENT_MODELS
from gpustack_iac.spec.schema import json_schema

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"


def test_committed_reference_docs_are_current() -> None:
    stale = stale_pages(REFERENCE)
    assert not stale, f"docs/reference is stale ({', '.join(stale)}): run python -m gpustack_iac.spec.docs"


def test_every_kind_and_property_is_documented() -> None:
    pages = render_all()
    for kind, model in DOCUMENT_MODELS.items():
        page = pages[f"{kind}.md"]
        for name, field in model.model_fields.items():
            assert f"| `{name}` |" in page, f"{kind}.{name} missing"
            assert field.description, f"{kind}.{name} has no description"
    assert "| `scale_down_delay` | duration" in pages["service.md"]
    assert "`600`" in pages["service.md"]


def test_docs_check_mode_detects_staleness(tmp_path: Path) -> None:
    assert docs_main(["--out", str(tmp_path)]) == 0
    assert docs_main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "service.md").write_text("old\n")
    assert docs_main(["--out", str(tmp_path), "--check"]) == 1


def test_schema_covers_every_kind_and_forbids_unknown_properties() -> None:
    schema = json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    kinds = {d["properties"]["type"]["const"] for d in schema["$defs"].values() if "type" in d.get("properties", {}) and "const" in d["properties"]["type"]}
    assert set(DOCUMENT_MODELS) <= kinds
    service = schema["$defs"]["ServiceConfig"]
    assert service["additionalProperties"] is False
    assert {"port", "replica_groups", "resources", "scaling", "probes", "rate_limits"} <= set(service["properties"])
    assert "port" in service["required"] and "type" in service["required"]
