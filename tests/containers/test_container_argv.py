"""The exact `docker run` a container replica gets, and the environment of its client: no engine needed."""

from __future__ import annotations

import json
from pathlib import Path

from gpustack_iac.runtime import envpolicy
from gpustack_iac.runtime.agent import containers, engine
from gpustack_iac.runtime.agent.spec import parse_replica_spec
from gpustack_iac.runtime.agent.store import ReplicaRecord, Store
from gpustack_iac.runtime.agent.supervisor import Supervisor, SupervisorConfig


def _spec(**container: object) -> object:
    return parse_replica_spec({"id": "svc-default-abc-1", "service": "svc", "commands": ["echo a", "exec httpd -f -p 8000"],
                               "image": "example.test/app:1", "gpus": [1, 3], "working_dir": "/app",
                               "container": {"port": 8000, **container}})


def test_run_publishes_a_free_host_port_to_the_declared_port_and_requests_exactly_the_placed_gpus() -> None:
    argv = containers.run_argv(["docker"], _spec(), 41234, "127.0.0.1", ["PORT", "HF_TOKEN"])  # type: ignore[arg-type]
    assert argv[:6] == ["docker", "run", "--rm", "--init", "--name", "gpustack-svc-default-abc-1"]
    assert argv[argv.index("-p") + 1] == "127.0.0.1:41234:8000"
    # Docker's CLI reads `device=1,3` only with the quotes; the indices are the placement's.
    assert argv[argv.index("--gpus") + 1] == '"device=1,3"'
    assert ["-e", "HF_TOKEN"] == argv[argv.index("HF_TOKEN") - 1: argv.index("HF_TOKEN") + 1]
    assert argv[argv.index("-w") + 1] == "/app"
    # commands under the image's /bin/sh -c, after the image
    assert argv[-3:] == ["example.test/app:1", "-c", "echo a && exec httpd -f -p 8000"]
    assert argv[argv.index("--entrypoint") + 1] == "/bin/sh"


def test_container_options_become_run_flags_and_values_stay_out_of_argv() -> None:
    spec = _spec(user="nobody", privileged=True, shm_size=2 * 1024**3, entrypoint="bash -ic",
                 registry_auth={"username": "u", "password": "s3cret"})
    argv = containers.run_argv(["docker"], spec, 5000, "127.0.0.1", ["TOKEN"])  # type: ignore[arg-type]
    assert argv[argv.index("--user") + 1] == "nobody"
    assert "--privileged" in argv
    assert argv[argv.index("--shm-size") + 1] == f"{2 * 1024**3}b"
    assert argv[argv.index("--entrypoint") + 1] == "bash"
    assert argv[-3:] == ["example.test/app:1", "-ic", "echo a && exec httpd -f -p 8000"]
    assert "s3cret" not in " ".join(argv)


def test_a_task_node_uses_the_host_network_and_no_gpu_request_without_gpus() -> None:
    spec = parse_replica_spec({"id": "t-0", "image": "img:1", "commands": ["true"], "container": {"host_network": True}})
    argv = containers.run_argv(["docker"], spec, 5000, "127.0.0.1", [])
    assert argv[argv.index("--network") + 1] == "host" and "-p" not in argv and "--gpus" not in argv


def test_the_password_is_in_the_agents_record_but_never_in_the_api_view(tmp_path: Path) -> None:
    spec = _spec(registry_auth={"username": "u", "password": "s3cret"})
    store = Store(tmp_path)
    record = ReplicaRecord(spec=spec, port=1, container=True)  # type: ignore[arg-type]
    store.save(record)
    assert "s3cret" in (tmp_path / "replicas" / "svc-default-abc-1.json").read_text()
    view = Supervisor(store, SupervisorConfig(state_dir=tmp_path, docker=True)).view(record)
    assert "s3cret" not in json.dumps(view) and view["container"]["registry_auth"] == {"username": "u"}
    assert store.load_all()[0][0].spec == spec  # the agent can pull again after its own restart


def test_the_client_sees_docker_settings_the_container_does_not() -> None:
    environ = {"PATH": "/usr/bin", "DOCKER_HOST": "unix:///x.sock", "DOCKER_CONTEXT": "c", "DOCKER_CONFIG": "/cfg",
               "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/certs", "AWS_SECRET_ACCESS_KEY": "no"}
    client = envpolicy.container_client_env(environ)
    assert client == {k: v for k, v in environ.items() if k.startswith("DOCKER_")}
    assert set(client) <= set(envpolicy.daemon_env(environ))  # the agent itself inherits them
    assert "DOCKER_HOST" not in envpolicy.replica_env(environ)  # a process replica does not


def test_podman_is_the_client_where_no_docker_cli_exists(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "podman").write_text("#!/bin/sh\n")
    (bindir / "podman").chmod(0o755)
    argv = engine.client_argv({"PATH": str(bindir), "DOCKER_HOST": "unix:///run/p.sock"})
    assert argv == [str(bindir / "podman"), "--remote", "--url", "unix:///run/p.sock"]
    (bindir / "docker").write_text("#!/bin/sh\n")
    (bindir / "docker").chmod(0o755)
    assert engine.client_argv({"PATH": str(bindir)}) == [str(bindir / "docker")]


def test_registry_of_an_image() -> None:
    assert containers.registry_of("127.0.0.1:5000/private/app:1") == "127.0.0.1:5000"
    assert containers.registry_of("ghcr.io/org/app") == "ghcr.io"
    assert containers.registry_of("vllm/vllm-openai:latest") == "https://index.docker.io/v1/"


def test_a_registry_password_never_enters_the_generation_but_its_fingerprint_does() -> None:
    from gpustack_iac.contract.restart import group_generation, restart_inputs

    def group(password: str, fingerprint: str) -> dict[str, object]:
        return {"image": "img:1", "container": {"registry_auth": {"username": "u", "password": password},
                                                "auth_fingerprint": fingerprint}}
    assert "s3cret" not in json.dumps(restart_inputs({}, group("s3cret", "hmac-sha256:1")))
    assert group_generation({}, group("a", "hmac-sha256:1")) == group_generation({}, group("b", "hmac-sha256:1"))
    assert group_generation({}, group("a", "hmac-sha256:1")) != group_generation({}, group("a", "hmac-sha256:2"))


FAKE_CLIENT = """#!/bin/sh
# A stand-in engine client: `image inspect` succeeds once a pull has finished; `pull` takes a
# moment, and notes how many pulls ran at once.
state={state}
case "$1 $2" in
  "image inspect") test -e "$state/pulled" ;;
  pull*) echo x >> "$state/running"; wc -l < "$state/running" >> "$state/concurrency"
         sleep 0.5; : > "$state/pulled"; echo pulled >> "$state/pulls"; sed -i '$d' "$state/running" ;;
esac
"""


def test_replicas_starting_together_pull_their_image_once(tmp_path: Path) -> None:
    # Podman's service pulls an image once per request; a group's replicas on one host start at
    # once, so without the agent's per-image lock each would download it (and fight for its store).
    from concurrent.futures import ThreadPoolExecutor

    client = tmp_path / "client"
    client.write_text(FAKE_CLIENT.format(state=tmp_path))
    client.chmod(0o755)
    specs = [parse_replica_spec({"id": f"svc-default-abc-{i}", "service": "svc", "commands": ["true"],
                                 "image": "example.test/app:1", "container": {"port": 8000}}) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda s: containers.ensure_image([str(client)], s, {}, tmp_path / f"{s.id}.log"), specs))
    assert results == [None] * 4
    assert (tmp_path / "pulls").read_text().splitlines() == ["pulled"]  # one pull, the others found it
    assert max(int(n) for n in (tmp_path / "concurrency").read_text().split()) == 1
