"""The loader on real files: discovery, multi-document YAML, env resolution, normalisation, fingerprint."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack_iac.contract.restart import stamp_generations
from gpustack_iac.errors import ConfigError
from gpustack_iac.spec.loader import discover, load_paths, load_text
from gpustack_iac.spec.models import ServiceConfig

SERVICE = """\
type: service
name: {name}
port: 8000
commands: [python3 app.py]
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_directory_discovery_picks_config_files_recursively(tmp_path: Path) -> None:
    _write(tmp_path / "a.gpustack.yml", SERVICE.format(name="a"))
    _write(tmp_path / "sub" / "b.dstack.yml", SERVICE.format(name="b"))
    _write(tmp_path / "sub" / "deeper" / ".gpustack.yml", SERVICE.format(name="c"))
    _write(tmp_path / "sub" / ".dstack.yaml", SERVICE.format(name="d"))
    _write(tmp_path / "e.gpustack.yaml", SERVICE.format(name="e"))
    _write(tmp_path / "ignored.yml", "not: a config\n")
    _write(tmp_path / ".venv" / "x.gpustack.yml", "broken: [\n")
    files, problems = discover([tmp_path])
    assert problems == []
    assert sorted(f.name for f in files) == [".dstack.yaml", ".gpustack.yml", "a.gpustack.yml", "b.dstack.yml", "e.gpustack.yaml"]
    spec = load_paths([tmp_path], {})
    assert sorted(s.name for s in spec.services) == ["a", "b", "c", "d", "e"]  # type: ignore[type-var]


def test_files_and_directories_together_are_loaded_once(tmp_path: Path) -> None:
    one = _write(tmp_path / "one.gpustack.yml", SERVICE.format(name="one"))
    spec = load_paths([one, tmp_path], {})
    assert [s.name for s in spec.services] == ["one"]


def test_missing_path_and_empty_directory_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as info:
        load_paths([tmp_path / "nope.yml", tmp_path / "empty"], {})
    messages = [d.message for d in info.value.diagnostics]
    assert "no such file or directory" in messages[0]
    assert "no configuration files here" in messages[1]


def test_multi_document_file_and_sources(tmp_path: Path) -> None:
    text = (
        "type: fleet\nname: local\nbackends: [local]\nnodes: 2\n"
        "---\ntype: gateway\nname: gw\nbackend: local\ndefault: true\n"
        "---\n" + SERVICE.format(name="svc")
    )
    path = _write(tmp_path / "all.gpustack.yml", text)
    spec = load_paths([path], {})
    assert [f.name for f in spec.fleets] == ["local"]
    assert spec.default_gateway is not None and spec.default_gateway.name == "gw"
    svc = spec.services[0]
    assert svc.source is not None
    assert (svc.source.line, svc.source.index) == (11, 2)
    assert spec.gateway_for(svc) is spec.default_gateway
    assert [d.KIND for d in spec.documents()] == ["fleet", "gateway", "service"]


def test_names_default_to_the_file_name(tmp_path: Path) -> None:
    _write(tmp_path / "serve.dstack.yml", "type: service\nport: 80\ncommands: [x]\n")
    _write(tmp_path / "myproj" / ".dstack.yml", "type: service\nport: 80\ncommands: [x]\n---\ntype: service\nport: 81\ncommands: [x]\n")
    spec = load_paths([tmp_path], {})
    assert sorted(str(s.name) for s in spec.services) == ["myproj", "myproj-1", "serve"]


def test_env_without_value_is_taken_from_the_environment() -> None:
    text = SERVICE.format(name="s") + "env:\n  - HF_TOKEN\n  - MODE=fast\nreplica_groups:\n  - name: g\n    env: {EXTRA: '1', MODE: slow}\n"
    spec = load_text(text, env={"HF_TOKEN": "secret-value"})
    svc = spec.services[0]
    assert svc.env == {"HF_TOKEN": "secret-value", "MODE": "fast"}
    assert svc.groups[0].env == {"HF_TOKEN": "secret-value", "MODE": "slow", "EXTRA": "1"}
    with pytest.raises(ConfigError) as info:
        load_text(text, file="x.yml", env={})
    (diag,) = info.value.diagnostics
    assert (diag.line, diag.column) == (6, 5) and "HF_TOKEN" in diag.message


def test_service_without_groups_is_one_default_group() -> None:
    svc = load_text(SERVICE.format(name="s") + "replicas: 1..3\nscaling: {metric: rps, target: 4}\nresources: {gpu: A100}\nregions: [eu]\n").services[0]
    (group,) = svc.groups
    assert group.name == "default"
    assert (group.replicas.min, group.replicas.max) == (1, 3)
    assert group.scaling is not None and group.scaling.target == 4
    assert group.resources is not None and group.resources.gpu is not None and group.resources.gpu.names == ("A100",)
    assert group.commands == ["python3 app.py"] and group.regions == ["eu"]


def test_groups_fall_back_to_the_service_and_aliases_are_accepted() -> None:
    base = SERVICE.format(name="s") + "image: img:1\nspot_policy: on-demand\nscaling: {metric: rps, target: 2}\nresources: {gpu: L40S}\n"
    for key in ("replica_groups", "groups", "replicas"):
        text = base + f"{key}:\n  - name: a\n    replicas: 0..2\n  - name: b\n    image: img:2\n    spot_policy: spot\n    resources: {{gpu: H100}}\n    commands: [other]\n"
        svc = load_text(text).services[0]
        a, b = svc.groups
        assert (a.name, a.image, a.spot_policy, a.commands) == ("a", "img:1", "on-demand", ["python3 app.py"])
        assert a.resources is not None and a.resources.gpu is not None and a.resources.gpu.names == ("L40S",)
        assert a.scaling is not None and a.scaling.target == 2
        assert (b.image, b.spot_policy, b.commands) == ("img:2", "spot", ["other"])
        assert b.resources is not None and b.resources.gpu is not None and b.resources.gpu.names == ("H100",)


def test_to_runtime_is_the_service_definition_of_the_contract() -> None:
    text = SERVICE.format(name="s") + "probes: [{url: /health, timeout: 5, interval: 2}]\nmodel: m\nreplica_groups:\n  - name: a\n    replicas: 2\n"
    definition = load_text(text).services[0].to_runtime()
    assert set(definition) == {"name", "generation", "port", "auth", "model", "probe", "scaling", "rate_limits", "groups"}
    assert definition["rate_limits"] == []
    assert definition["model"] == {"name": "m", "format": "openai", "prefix": "/v1"}
    assert definition["probe"] == {"url": "/health", "method": "GET", "headers": {}, "body": None, "timeout": 5, "interval": 2}
    (group,) = definition["groups"]
    # No group generation yet: compile stamps it once the group is final (contract/restart.py).
    assert set(group) == {"name", "replicas", "scaling", "commands", "image", "env", "working_dir", "resources", "placement"}
    assert group["replicas"] == {"min": 2, "max": 2}
    assert group["placement"] == {"backends": [], "regions": [], "instance_types": [], "spot_policy": None, "max_price": None}
    # The group's generation moves with what needs a restart, not with a replica count.
    generation = stamp_generations(definition)["groups"][0]["generation"]
    again = stamp_generations(load_text(text.replace("replicas: 2", "replicas: 3")).services[0].to_runtime())
    assert again["groups"][0]["generation"] == generation
    changed = stamp_generations(load_text(text.replace("python3 app.py", "python3 app2.py")).services[0].to_runtime())
    assert changed["groups"][0]["generation"] != generation


def test_fingerprint_is_stable_and_sensitive(tmp_path: Path) -> None:
    a = _write(tmp_path / "1" / "a.gpustack.yml", SERVICE.format(name="a") + "---\n" + SERVICE.format(name="b"))
    _write(tmp_path / "2" / "b.gpustack.yml", SERVICE.format(name="b"))
    _write(tmp_path / "2" / "a.gpustack.yml", SERVICE.format(name="a"))
    one = load_paths([a], {}).fingerprint()
    assert one == load_paths([a], {}).fingerprint()
    assert one == load_paths([tmp_path / "2"], {}).fingerprint()  # files and order do not matter
    _write(tmp_path / "2" / "a.gpustack.yml", SERVICE.format(name="a") + "replicas: 2\n")
    assert one != load_paths([tmp_path / "2"], {}).fingerprint()
    assert len(one) == 64


def test_models_are_importable_without_pulumi() -> None:
    import subprocess
    import sys

    code = "import sys, gpustack_iac.spec.loader, gpustack_iac.spec.models; assert 'pulumi' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_service_model_validates_directly() -> None:
    svc = ServiceConfig.model_validate({"type": "service", "port": 80, "commands": ["x"], "env": ["UNSET_HERE"]})
    assert svc.env == {"UNSET_HERE": None}  # resolved only when the loader passes an environment


def test_scaling_settings_reach_the_runtime_definition_and_the_summary() -> None:
    from gpustack_iac.spec.summary import summarize

    text = SERVICE.format(name="s") + (
        "replicas: 0..4\nscaling:\n  metric: rps\n  target: 10\n  window: 30s\n  scale_up_delay: 60\n"
        "  burst: {window: 6s, sigmas: 4}\n  headroom: {z: 1.5, budget: 0.25}\n"
        "  schedule:\n    - cron: '* 8-18 * * 1-5'\n      min: 2\n"
    )
    svc = load_text(text).services[0]
    scaling = svc.to_runtime()["scaling"]
    assert scaling == {
        "metric": "rps", "target": 10.0, "scale_up_delay": 60, "scale_down_delay": 600, "window": 30,
        "burst_window": 6, "burst_sigmas": 4.0, "burst_release": None, "headroom_z": 1.5, "headroom_budget": 0.25,
        "schedule": [{"cron": "* 8-18 * * 1-5", "min": 2}],
    }
    off = load_text(text.replace("burst: {window: 6s, sigmas: 4}", "burst: false")).services[0].to_runtime()["scaling"]
    assert off["burst_sigmas"] is None
    details = "\n".join(summarize(svc).details)
    assert "up after 60s (a burst scales up at once, overriding it)" in details
    for metric in ("concurrency", "latency", "queue"):
        assert load_text(text.replace("metric: rps", f"metric: {metric}")).services[0].to_runtime()["scaling"]["metric"] == metric


def test_merge_keys_are_overridden_by_the_mapping_own_keys() -> None:
    # YAML's merge key type: the mapping's own keys win; of several merged mappings, the first wins.
    text = (
        "type: service\nname: s\nport: 80\ncommands: [x]\nreplica_groups:\n"
        "  - &g\n    name: a\n    replicas: 2\n    regions: [eu]\n"
        "  - <<: *g\n    name: b\n"
        "  - <<: [{replicas: 5, name: zz}, *g]\n    name: c\n"
    )
    groups = load_text(text).services[0].replica_groups
    assert [(g.name, g.replicas.format(), g.regions) for g in groups] == [
        ("a", "2", ["eu"]),
        ("b", "2", ["eu"]),
        ("c", "5", ["eu"]),
    ]


def test_an_error_in_a_merged_value_points_at_where_it_was_written() -> None:
    text = "type: service\nname: s\nport: 80\ncommands: [x]\nreplica_groups:\n  - &g\n    name: a\n    replicas: x\n  - <<: *g\n    name: b\n"
    with pytest.raises(ConfigError) as info:
        load_text(text, file="m.yml")
    assert {d.line for d in info.value.diagnostics} == {8}, str(info.value)


def test_plain_scalars_follow_yaml_1_2() -> None:
    # YAML 1.1 reads `8080:80` as the base-60 number 484880 and `on` as true; YAML 1.2 reads strings.
    text = "type: service\nname: s\nport: 8080:80\ncommands: [x]\nenv:\n  A: on\n  B: 0b11\n  C: 1_000\n  D: 0x1f\n"
    svc = load_text(text).services[0]
    assert svc.port == 80
    assert svc.env == {"A": "on", "B": "0b11", "C": "1_000", "D": "31"}


def test_an_oversized_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    big = tmp_path / "big.gpustack.yml"
    with big.open("w") as f:
        f.write(SERVICE.format(name="s"))
        f.truncate(50 * 1024 * 1024)  # sparse: 50 MB without writing them
    with pytest.raises(ConfigError) as info:
        load_paths([big], {})
    (diag,) = info.value.diagnostics
    assert "larger than 1024 KiB" in diag.message and diag.line >= 1


def test_reading_runs_on_libyaml_when_pyyaml_has_it() -> None:
    # Our counting composer sits on libyaml's parser; the pure-Python one is several times slower.
    import yaml

    from gpustack_iac.spec import yamlsource

    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML built without libyaml")
    from yaml.cyaml import CParser

    assert issubclass(yamlsource._Loader, CParser)
