"""The JSON Schema of configuration documents, generated from the models (for editors)."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from gpustack_iac.spec.models import AnyDocument

SCHEMA_ID = "https://gpustack-iac.dev/schema/config.json"


def json_schema() -> dict[str, Any]:
    """One schema for any document; `type` picks the kind (yaml-language-server understands `oneOf`)."""
    body = TypeAdapter(AnyDocument).json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "gpustack-iac configuration",
        **body,
    }
