"""Must-show: every YAML example of the configuration reference and of the replica-groups discussion loads.

The seed text lost its YAML indentation in extraction, so the examples are carried as fixtures,
re-indented, each with a comment naming its source section.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gpustack_iac.spec.loader import load_paths
from gpustack_iac.spec.models import OpenAIModel, TGIModel

FIXTURES = Path(__file__).parent / "fixtures"
SEEDS = Path("/work/shared/seeds")
REFERENCE = sorted((FIXTURES / "reference").glob("*.yml"))
DISCUSSION = sorted((FIXTURES / "discussion").glob("*.yml"))
ENV = {"HF_TOKEN": "hf_test_value"}


@pytest.mark.parametrize("path", REFERENCE + DISCUSSION, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_seed_example_validates(path: Path) -> None:
    assert path.read_text().startswith("# Source:"), "each fixture names its source section"
    spec = load_paths([path], ENV)
    assert len(spec.services) == 1
    service = spec.services[0]
    assert service.source is not None and service.source.file.endswith(path.name)
    assert service.groups, "a service always has at least one group"


def test_every_example_of_the_reference_is_carried() -> None:
    # 14 examples in the reference, plus the commented alternative model syntax made live.
    assert len(REFERENCE) == 15
    if SEEDS.is_dir():
        seed = (SEEDS / "service-configuration-reference.txt").read_text()
        assert len(re.findall(r"^type: service$", seed, flags=re.M)) == 14
    assert len(DISCUSSION) == 2


def test_reference_values_are_read_as_the_reference_means() -> None:
    # Loaded one by one: several examples share a name, which one run rejects (names are unique per kind).
    by_file = {p.name: load_paths([p], ENV).services[0] for p in REFERENCE}
    scaled = by_file["06-auto-scaling.dstack.yml"]
    assert (scaled.replicas.min, scaled.replicas.max) == (1, 4)
    assert scaled.scaling is not None and scaled.scaling.scale_up_delay == 300 and scaled.scaling.scale_down_delay == 600
    gpu = by_file["07-resources.dstack.yml"].resources
    assert gpu.gpu is not None and gpu.gpu.count.min == 2 and gpu.disk.format() == "200GB"
    assert "--tensor-parallel-size" in by_file["07-resources.dstack.yml"].commands[1]
    assert by_file["09-environment-variables.dstack.yml"].env == {"HF_TOKEN": "hf_test_value", "MODEL": "NousResearch/Llama-2-7b-chat-hf"}
    assert isinstance(by_file["05-models.dstack.yml"].model, OpenAIModel)
    tgi = by_file["14-chat-template.dstack.yml"].model
    assert isinstance(tgi, TGIModel) and tgi.eos_token == "</s>" and tgi.chat_template and "raise_exception" in tgi.chat_template
    assert by_file["08-authorization.dstack.yml"].auth is False
    assert by_file["13-volumes.dstack.yml"].volumes[0].name == "my-new-volume"
    assert by_file["04-private-registry.dstack.yml"].registry_auth is not None
    assert by_file["01-python-version.dstack.yml"].python == "3.10"


def test_discussion_examples_give_the_groups_of_the_pr() -> None:
    first = load_paths([DISCUSSION[0]], {}).services[0]
    assert [(g.name, g.replicas.format(), g.regions) for g in first.groups] == [
        ("l40s-gpu", "1", ["jp-japan"]),
        ("a100-gpu", "1", ["jp-japan"]),
    ]
    # The summary the PR shows: "l40s-gpu ×1 (cpu=2.. mem=8GB.. disk=100GB.. L40S:1)".
    assert first.groups[0].resources is not None
    assert first.groups[0].resources.describe() == "cpu=2.. mem=8GB.. disk=100GB.. L40S:1"
    second = load_paths([DISCUSSION[1]], {}).services[0]
    assert [(g.name, g.replicas.format(), g.regions) for g in second.groups] == [
        ("l40s-gpu", "1..3", None),
        ("h100-gpu", "2", ["us-east"]),
    ]
