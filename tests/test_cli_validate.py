"""`gpustack-iac validate`, `schema`, `--version` and `--help`, run as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gpustack_iac import __version__

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpustack_iac", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_validate_examples_prints_a_summary_and_exits_0() -> None:
    result = _cli("validate", "examples/")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for needle in ("hello", "base ×2", "burst ×1", "cpu=1.. mem=64MB.. disk=0GB..", "l40s-gpu ×1", "L40S:1", "A100:1", "router", "chat", "on-prem", "aws-gateway"):
        assert needle in out, f"{needle!r} not in:\n{out}"
    assert result.stderr == ""


def test_validate_reports_every_error_with_location_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gpustack.yml"
    bad.write_text(
        "type: service\nname: s\nport: 8000\ncommands: [x]\nprot: 1\nresources:\n  gpu: A100:xx:yy\n"
        "env:\n  - SECRET_FROM_ENV\n---\ntype: router\nname: r\nmodel: m\nmembers:\n  - service: nope\n"
    )
    result = _cli("validate", str(bad), env={"SECRET_FROM_ENV": ""})
    assert result.returncode == 1
    err = result.stderr
    assert f"{bad}:5:1: prot: unknown property 'prot'; did you mean 'port'?" in err
    assert f"{bad}:7:3: resources.gpu: cannot read 'xx'" in err
    assert f"{bad}:15:5: members[0].service: service 'nope' is not defined" in err
    assert "3 errors" in err
    assert "Traceback" not in err and result.stdout == ""


def test_control_bytes_are_one_message_with_file_and_line_in_validate_and_plan(tmp_path: Path) -> None:
    """Issue 19 item 5: a NUL (or another control byte) printed a ReaderError traceback."""
    bad = tmp_path / "bad.gpustack.yml"
    bad.write_bytes(b"type: service\nname: s\nport: 80\ncommands: [x\x00]\n")
    for args in (("validate", str(bad)), ("plan", str(bad), "--state-dir", str(tmp_path / "state"))):
        result = _cli(*args)
        assert result.returncode == 1, result.stdout
        assert "Traceback" not in result.stderr
        assert f"{bad}:4:13: invalid YAML: a NUL control character" in result.stderr, result.stderr


def test_validate_names_a_missing_environment_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "llm.dstack.yml"
    cfg.write_text("type: service\nport: 80\ncommands: [x]\nenv:\n  - HF_TOKEN\n")
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "gpustack_iac", "validate", str(cfg)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and f"{cfg}:5:5: env: environment variable HF_TOKEN" in result.stderr
    ok = _cli("validate", str(cfg), env={"HF_TOKEN": "hf_x"})
    assert ok.returncode == 0, ok.stderr
    assert "hf_x" not in ok.stdout  # env values are never printed


def test_validate_missing_path_is_an_error(tmp_path: Path) -> None:
    result = _cli("validate", str(tmp_path / "nope"))
    assert result.returncode == 1 and "no such file or directory" in result.stderr


def test_schema_prints_json_schema() -> None:
    result = _cli("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["title"] == "gpustack-iac configuration"
    assert "ServiceConfig" in schema["$defs"] and schema["discriminator"]["propertyName"] == "type"


def test_version_and_help_with_examples() -> None:
    version = _cli("--version")
    assert version.returncode == 0 and __version__ in version.stdout
    top = _cli("--help")
    assert top.returncode == 0 and "validate" in top.stdout and "schema" in top.stdout
    for command in ("validate", "schema"):
        result = _cli(command, "--help")
        assert result.returncode == 0 and "Examples:" in result.stdout and f"gpustack-iac {command}" in result.stdout


def test_validate_marks_each_document_deployable_or_not_and_why() -> None:
    result = _cli("validate", "examples/")
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[2].strip(): line for line in result.stdout.splitlines() if line.count("│") >= 6}
    assert rows["hello"].rstrip(" │").endswith("yes"), rows["hello"]
    assert rows["aws-gateway"].rstrip(" │").endswith("yes"), rows["aws-gateway"]
    assert rows["k8s-gpus"].rstrip(" │").endswith("yes"), rows["k8s-gpus"]
    assert rows["on-prem"].rstrip(" │").endswith("yes"), rows["on-prem"]  # SSH fleets deploy


def test_an_empty_configuration_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.gpustack.yml").write_text("# nothing here yet\n")
    result = _cli("validate", str(tmp_path))
    assert result.returncode == 1
    assert "empty.gpustack.yml:1:1: the file declares nothing" in result.stderr, result.stderr


def test_validate_refuses_a_billion_laughs_file_quickly_with_one_line(tmp_path: Path) -> None:
    laughs = "type: service\nname: s\nport: 8000\ncommands: [x]\nenv:\n  - &a0 [lol]\n" + "".join(
        f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 10)
    )
    bad = tmp_path / "laughs.gpustack.yml"
    bad.write_text(laughs)
    result = _cli("validate", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[1:] == ["1 error"], result.stderr
    assert "laughs.gpustack.yml:11:" in lines[0] and "aliases in this file expand to more than" in lines[0], result.stderr


def test_plan_refuses_a_50_mb_file_with_one_located_line(tmp_path: Path) -> None:
    big = tmp_path / "big.gpustack.yml"
    with big.open("w") as f:
        f.write("type: service\nname: s\nport: 8000\ncommands: [x]\n")
        f.truncate(50 * 1024 * 1024)  # sparse: the loader must refuse it without reading it all
    result = _cli("plan", str(big), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[1:] == ["1 error"], result.stderr
    assert "big.gpustack.yml:" in lines[0] and "larger than 1024 KiB" in lines[0], result.stderr
