"""The pinned runtime wired into every VM cloud's stack, as a resource graph under Pulumi mocks:
the stack's own private storage, the wheelhouse and its manifest uploaded under content-addressed
keys with their SHA-256, read access for exactly that prefix, and boot scripts that pin the
manifest's digest. Every boot script of every cloud example is grepped for the old install."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpustack_iac.errors import GpustackError
from gpustack_iac.providers import runtime_bundle
from tests.cloud.bootscripts import boot_scripts, config, fetcher
from tests.cloud.conftest import need_sdk
from tests.cloud.mockstack import Graph, run, write

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SDKS = {"aws": "pulumi_aws", "gcp": "pulumi_gcp", "azure": "pulumi_azure_native"}
CLOUDS = [pytest.param(c, marks=need_sdk(m)) for c, m in SDKS.items()]
# The object resource of each cloud and the input holding its key.
OBJECTS = {"aws": ("aws:s3/bucketObjectv2:BucketObjectv2", "key"), "gcp": ("gcp:storage/bucketObject:BucketObject", "name"),
           "azure": ("azure-native:storage:Blob", "blobName")}
# What no boot script may hold: the old install, a process started in the background, a public index.
FORBIDDEN = [r"pip3? install", r"venv", r"ensurepip", r" &$", r"pypi\.org", r"pythonhosted\.org", r"index-url",
             r"\baws ssm\b", r"\bgcloud\b", r"\baz (login|keyvault)\b"]
# The fetcher makes the runtime's environment with the standard library's venv module, without pip.
FETCHER_FORBIDDEN = [r"pip3? install", r"ensurepip", r"pypi\.org", r"pythonhosted\.org", r"index-url", r"--upgrade"]


def _objects(graph: Graph, cloud: str) -> dict[str, dict[str, Any]]:
    typ, key = OBJECTS[cloud]
    return {r.inputs[key]: r.inputs for r in graph.of_type(typ)}


def _manifest(source: Any) -> dict[str, Any]:
    return dict(json.loads(source.text))


@pytest.mark.parametrize("cloud", CLOUDS)
def test_every_boot_script_pins_the_uploaded_runtime_and_installs_nothing_else(cloud: str, tmp_path: Path) -> None:
    graph = run(EXAMPLES / cloud, tmp_path)
    scripts = boot_scripts(graph)
    assert len(scripts) >= 2, sorted(scripts)  # the fleet's node group(s) and the gateway
    objects = _objects(graph, cloud)
    for where, script in scripts.items():
        for pattern in FORBIDDEN:
            assert not re.search(pattern, script, re.MULTILINE), f"{where}: {pattern!r} in its boot script"
        for pattern in FETCHER_FORBIDDEN:
            assert not re.search(pattern, fetcher(script), re.MULTILINE), f"{where}: {pattern!r} in its fetcher"
        assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0, where
        assert "Restart=always" in script and "systemctl enable --now" in script, where
        cfg = config(script)
        assert (cfg["cloud"], cfg["python"], cfg["machine"]) == (cloud, "3.12", "x86_64"), where
        # The manifest the script pins is the object uploaded under its version's prefix, and each
        # wheel it lists is uploaded with the SHA-256 it names.
        manifest = objects[f"{cfg['prefix']}/manifest.json"]
        assert manifest["metadata"]["sha256"] == cfg["manifest_sha256"], where
        listed = _manifest(manifest["source"])["wheels"]
        assert listed, where
        for wheel in listed:
            assert objects[f"{cfg['prefix']}/{wheel['name']}"]["metadata"]["sha256"] == wheel["sha256"]


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_stack_stores_the_runtime_privately_once_per_version(cloud: str, tmp_path: Path) -> None:
    graph = run(EXAMPLES / cloud, tmp_path)
    if cloud == "aws":
        assert len(graph.of_type("aws:s3/bucket:Bucket")) == 1
        block = graph.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
        assert all(block[k] for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
        sse = graph.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
        assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
        assert graph.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs["rule"]["objectOwnership"] == \
            "BucketOwnerEnforced"
    elif cloud == "gcp":
        bucket = graph.one("gcp:storage/bucket:Bucket").inputs
        assert bucket["uniformBucketLevelAccess"] is True and bucket["publicAccessPrevention"] == "enforced"
    else:
        account = graph.one("azure-native:storage:StorageAccount").inputs
        assert account["allowBlobPublicAccess"] is False and account["minimumTlsVersion"] == "TLS1_2"
        assert account["enableHttpsTrafficOnly"] is True and re.fullmatch(r"[a-z0-9]{3,24}", account["accountName"])
        assert graph.one("azure-native:storage:BlobContainer").inputs["publicAccess"] == "None"
    # Content-addressed keys: every key names the runtime's version, each object is declared once
    # (node and gateway sets under their own prefixes), and compiling again declares the very same
    # objects, so a second `up` uploads nothing.
    objects = _objects(graph, cloud)
    assert objects and all(re.fullmatch(r"runtime/py3\.12-x86_64-[^/]+/[^/]+", k) for k in objects)
    again = _objects(run(EXAMPLES / cloud, tmp_path / "again"), cloud)
    assert {k: o["metadata"] for k, o in again.items()} == {k: o["metadata"] for k, o in objects.items()}


@pytest.mark.parametrize("cloud", CLOUDS)
def test_instances_may_read_exactly_their_runtime_prefix(cloud: str, tmp_path: Path) -> None:
    graph = run(EXAMPLES / cloud, tmp_path)
    prefixes = {config(s)["prefix"] for s in boot_scripts(graph).values()}
    assert len(prefixes) == 2  # the nodes' set and the gateway's
    if cloud == "aws":
        granted = set()
        for policy in graph.of_type("aws:iam/rolePolicy:RolePolicy"):
            statements = json.loads(policy.inputs["policy"])["Statement"]
            reads = [s for s in statements if "s3:GetObject" in s["Action"]]
            assert len(reads) == 1 and reads[0]["Action"] == ["s3:GetObject"], policy.name
            [resource] = reads[0]["Resource"]
            granted.add(resource.split(":::", 1)[1].split("/", 1)[1].removesuffix("/*"))
    elif cloud == "gcp":
        members = graph.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
        assert {m.inputs["role"] for m in members} == {"roles/storage.objectViewer"}
        granted = {re.search(r'/objects/(.+)/"\)$', m.inputs["condition"]["expression"]).group(1) for m in members}  # type: ignore[union-attr]
    else:
        reader = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
        grants = [r for r in graph.of_type("azure-native:authorization:RoleAssignment") if reader in r.inputs["roleDefinitionId"]]
        assert all(g.inputs["conditionVersion"] == "2.0" for g in grants)
        granted = {re.search(r"StringStartsWith '(.+)/'", g.inputs["condition"]).group(1) for g in grants}  # type: ignore[union-attr]
    assert granted == prefixes


def test_two_fleets_share_each_uploaded_object(tmp_path: Path) -> None:
    pytest.importorskip("pulumi_aws")
    fleet = "type: fleet\nname: {n}\nbackends: [aws]\nregions: [us-east-1]\nnodes: 0..2\nresources:\n  gpu: A10G:1\n"
    write(tmp_path, {"a.gpustack.yml": fleet.format(n="a"), "b.gpustack.yml": fleet.format(n="b")})
    graph = run(tmp_path, tmp_path)
    keys = [r.inputs["key"] for r in graph.of_type(OBJECTS["aws"][0])]
    assert keys and len(keys) == len(set(keys))
    assert len({config(s)["manifest_sha256"] for s in boot_scripts(graph).values()}) == 1


def test_offline_plan_without_a_built_runtime_says_how(tmp_path: Path) -> None:
    with pytest.raises(GpustackError, match="not built yet and --offline reaches no package index"):
        runtime_bundle.cloud_runtime(tmp_path, "x86_64", gateway=False, cloud="aws", offline=True)


@pytest.mark.parametrize("cloud", CLOUDS)
def test_images_are_ubuntu_24_04_per_architecture(cloud: str) -> None:
    import importlib

    resources = importlib.import_module(f"gpustack_iac.backends.{cloud}.resources")
    shown = {(gpus, arch): json.dumps(resources.image(gpus, arch)) for gpus in (0, 1) for arch in ("x86_64", "aarch64")
             if cloud != "azure" or (gpus, arch) != (1, "aarch64")}  # Azure has no arm64 GPU sizes
    assert all(re.search(r"24[._]?04", text) for text in shown.values()), shown
    assert all(re.search(r"arm64", text) for (_, arch), text in shown.items() if arch == "aarch64"), shown
    assert not any(re.search(r"arm64", text) for (_, arch), text in shown.items() if arch == "x86_64"), shown


def test_a_node_group_takes_one_architecture_from_its_cheapest_offer(monkeypatch: pytest.MonkeyPatch) -> None:
    """One image per group: instance types of another CPU architecture than the cheapest offer's are
    left out, and the group's runtime is built for that architecture."""
    from gpustack_iac.catalog.match import Offer
    from gpustack_iac.spec.models import FleetConfig
    from gpustack_iac.stacks import placement

    def offer(name: str, price: float, arch: str) -> Offer:
        return Offer("aws", name, "us-east-1", price, False, 4, 16.0, "T4G", 1, 16.0, cpu_arch=arch)

    offers = [offer("g5g.xlarge", 0.42, "arm"), offer("g4dn.xlarge", 0.53, "x86"), offer("g5g.2xlarge", 0.56, "arm")]
    monkeypatch.setattr(placement, "find_offers", lambda *a, **k: offers)
    fleet = FleetConfig.model_validate({"type": "fleet", "name": "arm", "backends": ["aws"], "nodes": 1})
    [priced] = placement.fleet_groups(fleet, "aws")
    assert priced.group.instance_types == ("g5g.xlarge", "g5g.2xlarge") and priced.group.arch == "aarch64"
