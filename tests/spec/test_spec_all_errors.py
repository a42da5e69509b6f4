"""Every problem of a document is reported in one run, not only the first kind pydantic stops at."""

from __future__ import annotations

import pytest

from gpustack_iac.errors import ConfigError
from gpustack_iac.spec.loader import load_text

TEXT = """type: service
name: web
port: 8000
comands: [python3 app.py]
"""


def test_a_field_error_does_not_hide_the_documents_own_rules() -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(TEXT, file="web.gpustack.yml", env={})
    found = [(d.line, d.path, d.message) for d in caught.value.diagnostics]
    assert (4, "comands", "unknown property 'comands'; did you mean 'commands'?") in found
    assert any(line == 1 and "commands are required unless image is given" in message for line, _, message in found)
    assert len(found) == 2


def test_a_failing_property_is_reported_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_text("type: service\nname: web\nport: 99999\ncommands: [x]\n", file="web.gpustack.yml", env={})
    assert [d.path for d in caught.value.diagnostics] == ["port"]
