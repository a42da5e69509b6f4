"""Table of bad inputs: each must produce a diagnostic with the expected message at the expected line."""

from __future__ import annotations

import textwrap

import pytest

from gpustack_iac.errors import ConfigError
from gpustack_iac.spec.loader import load_text
from gpustack_iac.spec.yamlsource import MAX_FILE_BYTES

SVC = "type: service\nname: s\nport: 8000\ncommands: [python3 app.py]\n"  # lines 1-4
# Nine levels of ten aliases each: 10**9 strings once expanded, from under 500 bytes.
LAUGHS = "env:\n  - &a0 [lol]\n" + "".join(
    f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 10)
)  # with SVC: lines 5-15

# (id, yaml, expected message substring, expected line)
CASES: list[tuple[str, str, str, int]] = [
    # Issue 19 item 5: control bytes gave a ReaderError traceback with no line.
    ("nul-byte", SVC + "name2: a\x00b\n", "invalid YAML: a NUL control character", 5),
    ("bell-in-value", "type: service\nname: s\nport: 80\x07\ncommands: [x]\n", "a U+0007 control character", 3),
    ("escape-in-comment", SVC + "# \x1b[31m red\n", "a U+001B control character", 5),
    ("unknown-top-level", SVC + "prot: 80\n", "unknown property 'prot'; did you mean 'port'?", 5),
    ("unknown-no-hint", SVC + "zzzzzz: 1\n", "unknown property 'zzzzzz' (expected one of:", 5),
    ("unknown-type", "type: servce\nport: 1\n", "unknown type 'servce'; did you mean 'service'?", 1),
    ("missing-type", "name: x\nport: 1\n", "missing required property 'type'", 1),
    ("not-a-mapping", "- a\n- b\n", "expected a mapping with a type property", 1),
    ("missing-port", "type: service\nname: s\ncommands: [x]\n", "missing required property 'port'", 1),
    ("port-range", "type: service\nname: s\nport: 70000\ncommands: [x]\n", "expected less than or equal to 65535", 3),
    ("port-type", "type: service\nname: s\nport: http\ncommands: [x]\n", "expected a valid integer", 3),
    ("no-commands", "type: service\nname: s\nport: 80\n", "commands are required unless image is given", 1),
    ("bad-name", "type: service\nname: My_Service\nport: 80\ncommands: [x]\n", "expected a name of lowercase letters", 2),
    ("spot-policy", SVC + "spot_policy: spto\n", "did you mean 'spot'?", 5),
    ("backend-typo", SVC + "backends: [aws, gpc]\n", "unknown backend 'gpc'; did you mean 'gcp'?", 5),
    ("python-version", "type: service\nname: s\nport: 80\npython: 2.7\ncommands: [x]\n", "expected a Python version", 4),
    ("python-and-image", "type: service\nname: s\nport: 80\nimage: ubuntu\npython: '3.11'\ncommands: [x]\n", "python and image are mutually exclusive", 5),
    ("nvcc-and-image", "type: service\nname: s\nport: 80\nimage: ubuntu\nnvcc: true\ncommands: [x]\n", "nvcc and image are mutually exclusive", 5),
    ("replicas-range-no-scaling", SVC + "replicas: 1..4\n", "is a range, so scaling is required", 5),
    ("replicas-bad", SVC + "replicas: many\n", "expected a whole number", 5),
    ("replicas-reversed", SVC + "replicas: 4..1\nscaling: {metric: rps, target: 1}\n", "greater than maximum", 5),
    ("scaling-metric", SVC + "replicas: 1..2\nscaling:\n  metric: cpu\n  target: 10\n", "expected 'rps', 'concurrency', 'latency' or 'queue'", 7),
    ("scaling-target", SVC + "replicas: 1..2\nscaling:\n  metric: rps\n  target: 0\n", "expected greater than 0", 8),
    ("scaling-delay", SVC + "replicas: 1..2\nscaling:\n  metric: rps\n  target: 1\n  scale_up_delay: soon\n", "expected a duration", 9),
    (
        "scaling-schedule-cron",
        SVC + "replicas: 1..2\nscaling:\n  metric: rps\n  target: 1\n  schedule:\n    - cron: every monday\n      min: 2\n",
        "expected a 5-field cron expression",
        10,
    ),
    ("scaling-burst-sigmas", SVC + "replicas: 1..2\nscaling:\n  metric: rps\n  target: 1\n  burst:\n    sigmas: 0\n", "expected greater than 0", 10),
    ("scaling-headroom-unknown", SVC + "replicas: 1..2\nscaling:\n  metric: rps\n  target: 1\n  headroom:\n    sigma: 2\n", "unknown property 'sigma'", 10),
    ("gpu-bad", SVC + "resources:\n  gpu: A100:xx:yy\n", "cannot read 'xx' in GPU spec", 6),
    ("memory-bad", SVC + "resources:\n  memory: lots\n", "expected a size like", 6),
    ("cpu-bad", SVC + "resources:\n  cpu: 4..x\n", "expected a whole number", 6),
    ("disk-object-bad", SVC + "resources:\n  disk:\n    sz: 10GB\n", "a disk object takes exactly one property", 6),
    ("resources-unknown", SVC + "resources:\n  gpus: 2\n", "unknown property 'gpus'; did you mean 'gpu'?", 6),
    ("gpu-vendor", SVC + "resources:\n  gpu:\n    vendor: ibm\n", "unknown GPU vendor 'ibm'", 6),
    ("env-missing", SVC + "env:\n  - A=1\n  - HF_TOKEN\n", "environment variable HF_TOKEN has no value", 7),
    ("env-missing-mapping", SVC + "env:\n  A: '1'\n  HF_TOKEN:\n", "environment variable HF_TOKEN has no value", 7),
    ("env-bad-name", SVC + "env:\n  - 1ABC=x\n", "expected an environment variable name", 5),
    ("volume-short", SVC + "volumes:\n  - just-a-name\n", "expected name:/path", 6),
    ("volume-workflow", SVC + "volumes:\n  - name: v\n    path: /workflow/data\n", "cannot be mounted at /workflow", 7),
    ("volume-relative", SVC + "volumes:\n  - data:relative\n", "expected an absolute container path", 6),
    ("model-format", SVC + "model:\n  name: m\n  format: vllm\n", "does not match any of the expected tags", 5),
    ("model-unknown", SVC + "model:\n  name: m\n  formt: openai\n", "unknown property 'formt'; did you mean 'format'?", 7),
    ("probe-url", SVC + "probes:\n  - url: health\n", "expected a path starting with /", 6),
    ("probe-method", SVC + "probes:\n  - url: /h\n    method: FETCH\n", "expected 'GET', 'POST'", 7),
    ("rate-limit-rps", SVC + "rate_limits:\n  - prefix: /\n    rps: -1\n", "expected greater than 0", 7),
    ("rate-limit-prefix", SVC + "rate_limits:\n  - prefix: v1\n    rps: 1\n", "expected a path starting with /", 6),
    ("rate-limit-header-missing", SVC + "rate_limits:\n  - rps: 1\n    key:\n      type: header\n", "key type header needs `header`", 7),
    ("rate-limit-header-name", SVC + "rate_limits:\n  - rps: 1\n    key: {type: header, header: 'X Key'}\n", "expected an HTTP header name", 7),
    ("registry-auth", SVC + "registry_auth:\n  username: u\n", "missing required property 'password'", 5),
    ("retry-events", SVC + "retry:\n  on_events: [crash]\n", "expected 'no-capacity', 'interruption' or 'error'", 6),
    ("max-duration", SVC + "max_duration: forever\n", "expected a duration like", 5),
    ("max-price", SVC + "max_price: -3\n", "expected greater than 0", 5),
    ("duplicate-key", SVC + "port: 9000\n", "property 'port' is given twice", 5),
    ("yaml-syntax", SVC + "resources: {gpu: [\n", "invalid YAML", 6),
    # Hostile or mistyped YAML: bounded reading, YAML 1.2 scalars, numbers in range, merge keys.
    ("billion-laughs", SVC + LAUGHS, "aliases in this file expand to more than 100000 values", 11),
    ("recursive-alias", SVC + "env: &e\n  - *e\n", "refers to a value that contains it", 6),
    ("deep-nesting", SVC + "env: " + "[" * 80 + "]" * 80 + "\n", "nested deeper than 64 levels", 5),
    ("file-too-large", SVC + "# " + "x" * MAX_FILE_BYTES + "\n", "larger than 1024 KiB, the limit for a configuration file", 5),
    ("replicas-huge", SVC + "replicas: 99999999999999999999999999999\n", "expected a whole number no greater than 2147483647", 5),
    ("replicas-range-huge", SVC + "replicas: 1..99999999999\nscaling: {metric: rps, target: 1}\n", "no greater than 2147483647", 5),
    ("port-yes", "type: service\nname: s\nport: yes\ncommands: [x]\n", "expected a whole number, got 'yes' (YAML 1.1's spelling of a boolean", 3),
    ("port-true", "type: service\nname: s\nport: true\ncommands: [x]\n", "expected a whole number, got the boolean true", 3),
    ("port-fraction", "type: service\nname: s\nport: 80.5\ncommands: [x]\n", "expected a whole number, got 80.5", 3),
    ("auth-on", SVC + "auth: on\n", "expected true or false, got 'on' (YAML 1.1's spelling", 5),
    ("auth-one", SVC + "auth: 1\n", "expected true or false, got 1", 5),
    ("gateway-no", SVC + "gateway: no\n", "expected a gateway name or false, got 'no'", 5),
    ("probe-ready-huge", SVC + "probes:\n  - url: /h\n    ready_after: .inf\n", "expected a whole number, got inf", 7),
    ("burst-huge", SVC + "rate_limits:\n  - prefix: /\n    rps: 1\n    burst: 4294967296\n", "expected a whole number between", 8),
    ("rps-yes", SVC + "rate_limits:\n  - prefix: /\n    rps: yes\n", "expected a number, got 'yes'", 7),
    ("max-price-inf", SVC + "max_price: .inf\n", "expected a number between", 5),
    ("memory-huge", SVC + "resources:\n  memory: 1.0e+300\n", "expected a size between 0 and 2147483647GB", 6),
    ("blocks-huge", "type: fleet\nname: f\nnodes: 1\nblocks: 99999999999\n", "expected a number of blocks of at least 1", 4),
    ("merge-not-mapping", SVC + "<<: 3\n", "expected a mapping (or a list of mappings) to merge with <<", 5),
    (
        "merge-own-key-twice",
        SVC + "replica_groups:\n  - &g {name: a}\n  - <<: *g\n    name: b\n    name: c\n",
        "property 'name' is given twice",
        9,
    ),
    (
        "groups-and-replicas",
        SVC + "replicas: 2\nreplica_groups:\n  - name: a\n",
        "replicas and replica_groups are mutually exclusive",
        5,
    ),
    ("groups-alias-twice", SVC + "groups:\n  - name: a\nreplica_groups:\n  - name: b\n", "groups and replica_groups are the same property", 5),
    ("replicas-list-and-groups", SVC + "replicas:\n  - name: a\nreplica_groups:\n  - name: b\n", "replicas given as a list and replica_groups", 5),
    ("groups-empty", SVC + "replica_groups: []\n", "replica_groups needs at least one group", 5),
    (
        "groups-duplicate",
        SVC + "replica_groups:\n  - name: a\n  - name: a\n",
        "replica group name 'a' is used twice",
        7,
    ),
    (
        "group-range-no-scaling",
        SVC + "replica_groups:\n  - name: a\n    replicas: 0..3\n",
        "is a range, so scaling is required (in the group or the service)",
        7,
    ),
    ("group-unknown", SVC + "replica_groups:\n  - name: a\n    gpu: A100\n", "unknown property 'gpu'", 7),
    ("group-alias-bad", SVC + "groups:\n  - name: a\n    replicas: x\n", "expected a whole number", 7),
    ("group-alias-list", SVC + "replicas:\n  - name: a\n    regions: eu\n", "expected a valid list", 7),
    ("gateway-false-autoscale", SVC + "gateway: false\nreplicas: 0..2\nscaling: {metric: rps, target: 2}\n", "auto-scaling needs a gateway", 5),
    ("fleet-no-nodes", "type: fleet\nname: f\nbackends: [aws]\n", "a fleet needs nodes", 1),
    ("fleet-ssh-and-nodes", "type: fleet\nname: f\nnodes: 2\nssh_config:\n  hosts: [a]\n", "remove nodes", 3),
    ("fleet-ssh-no-hosts", "type: fleet\nname: f\nssh_config:\n  user: u\n  hosts: []\n", "List should have at least 1 item", 5),
    ("fleet-placement", "type: fleet\nname: f\nnodes: 1\nplacement: clustr\n", "did you mean 'cluster'?", 4),
    ("fleet-blocks", "type: fleet\nname: f\nnodes: 1\nblocks: 0\n", "expected a number of blocks of at least 1", 4),
    ("fleet-network", "type: fleet\nname: f\nssh_config:\n  hosts: [a]\n  network: 10.0.0.0/99\n", "expected a network in CIDR form", 5),
    ("fleet-internal-ip", "type: fleet\nname: f\nssh_config:\n  network: 10.0.0.0/24\n  hosts:\n    - hostname: a\n      internal_ip: nope\n",
     "expected an IPv4 address like 10.0.0.12", 7),
    ("fleet-host-unknown", "type: fleet\nname: f\nssh_config:\n  hosts:\n    - hostname: a\n      passwd: x\n", "unknown property 'passwd'", 6),
    ("gateway-no-backend", "type: gateway\nname: g\nregion: us-east-1\n", "missing required property 'backend'", 1),
    ("gateway-no-region", "type: gateway\nname: g\nbackend: aws\n", "region is required for a gateway on aws", 1),
    ("gateway-acm-gcp", "type: gateway\nname: g\nbackend: gcp\nregion: r\ncertificate:\n  type: acm\n  arn: x\n", "an acm certificate needs backend aws", 5),
    ("gateway-self-signed-aws", "type: gateway\nname: g\nbackend: aws\nregion: r\ncertificate: self-signed\n", "a self-signed certificate is for local and SSH gateways", 5),
    ("gateway-cert-type", "type: gateway\nname: g\nbackend: local\ncertificate: homemade\n", "does not match any of the expected tags", 4),
    ("router-no-members", "type: router\nname: r\nmodel: m\nmembers: []\n", "List should have at least 1 item", 4),
    ("router-strategy", "type: router\nname: r\nmodel: m\nstrategy: fastest\nmembers:\n  - service: a\n", "expected 'priority', 'weighted'", 4),
    (
        "router-cost",
        "type: router\nname: r\nmodel: m\nstrategy: cost\nmembers:\n  - service: a\n    cost: 1\n  - service: b\n",
        "strategy cost needs a cost for every member",
        8,
    ),
    ("volume-no-size", "type: volume\nname: v\nbackend: aws\nregion: r\n", "a volume needs size", 1),
    ("project-state", "type: project\nname: p\nstate: ftp://x\n", "expected a state URL", 3),
    ("project-secret-inline", "type: project\nname: p\nbackends:\n  - type: aws\n    secret_key: abc\n", "unknown property 'secret_key'", 5),
    ("dev-env-ide", "type: dev-environment\nname: d\nide: emacs\n", "expected 'vscode', 'cursor' or 'windsurf'", 3),
    ("task-nodes", "type: task\nname: t\nnodes: 0\ncommands: [x]\n", "expected greater than or equal to 1", 3),
    # Cross-document rules.
    ("dup-service-name", SVC + "---\n" + SVC, "service name 's' is already used", 7),
    ("router-member-missing", SVC + "---\ntype: router\nname: r\nmodel: m\nmembers:\n  - service: t\n", "service 't' is not defined", 10),
    ("router-member-hint", SVC + "---\ntype: router\nname: r\nmodel: m\nmembers:\n  - service: ss\n", "did you mean 's'?", 10),
    ("router-fallback-missing", SVC + "---\ntype: router\nname: r\nmodel: m\nmembers:\n  - service: s\nfallbacks: [nope]\n", "service or router 'nope' is not defined", 11),
    ("service-gateway-missing", SVC + "gateway: gw\n", "gateway 'gw' is not defined", 5),
    (
        "two-default-gateways",
        "type: gateway\nname: a\nbackend: local\ndefault: true\n---\ntype: gateway\nname: b\nbackend: local\ndefault: true\n",
        "only one gateway may be the default",
        9,
    ),
    ("two-projects", "type: project\nname: a\n---\ntype: project\nname: b\n", "only one project document is allowed", 4),
    (
        "alias-twice",
        SVC + "---\ntype: router\nname: r1\nmodel: m\nmembers: [{service: s}]\n---\ntype: router\nname: r2\nmodel: m\nmembers: [{service: s}]\n",
        "model alias 'm' is already routed",
        13,
    ),
]


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("text", "message", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_reported_with_message_and_line(text: str, message: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(textwrap.dedent(text), file="bad.gpustack.yml", env={})
    diags = info.value.diagnostics
    matching = [d for d in diags if message in d.message]
    assert matching, f"no diagnostic says {message!r}; got:\n{info.value}"
    assert line in [d.line for d in matching], f"expected line {line}; got:\n{info.value}"
    for d in matching:
        assert d.file == "bad.gpustack.yml" and d.column >= 1
        assert str(d).startswith(f"bad.gpustack.yml:{d.line}:{d.column}:")


def test_all_errors_of_a_run_are_reported_together() -> None:
    text = SVC + "prot: 1\nspot_policy: x\nresources:\n  gpu: A100:xx:yy\n---\ntype: fleet\nname: f\n---\ntype: gatewy\n"
    with pytest.raises(ConfigError) as info:
        load_text(text, file="many.yml", env={})
    lines = sorted(d.line for d in info.value.diagnostics)
    assert lines == [5, 6, 8, 10, 13], str(info.value)
    paths = {d.path for d in info.value.diagnostics}
    assert {"prot", "spot_policy", "resources.gpu", "type"} <= paths
