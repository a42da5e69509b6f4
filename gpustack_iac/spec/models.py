"""The configuration language: one pydantic model per `type:` of document.

Models only validate and normalise; they never import Pulumi. Cross-document rules (a router's
members exist, one default gateway, ...) live in `checks.py`, file handling in `loader.py`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Sequence, Union

from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    PrivateAttr,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gpustack_iac.contract import scaling as scaling_defaults
from gpustack_iac.spec.resources import IntRange, MemoryValue, Range, ResourcesSpec
from gpustack_iac.spec.values import (
    BACKENDS,
    Backend,
    Bool,
    Duration,
    MAX_INT,
    Int,
    Name,
    Number,
    StrList,
    parse_env,
    parse_name,
    resolve_env,
)
from gpustack_iac.spec.yamlsource import Yaml11Bool


def config_error(message: str, at: str = "") -> PydanticCustomError:
    """A validation error placed at `at` (a dotted path below the failing model, e.g. `replica_groups.1.name`)."""
    return PydanticCustomError("config", "{msg}", {"msg": message, "at": at})


class Strict(BaseModel):
    """Base of every model: unknown properties are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


@dataclass(frozen=True)
class Source:
    """Where a document came from, and where in it each property is."""

    file: str
    line: int  # 1-based line of the document's first property
    index: int  # position of the document in its file (multi-document YAML)
    node: Any = field(default=None, compare=False, repr=False)  # the document's YAML node, with marks

    def locate(self, loc: Sequence[str | int]) -> tuple[int, int]:
        """1-based line and column of the property at `loc` (its name), or of the nearest parent
        the file has; the document's first line when nothing is known."""
        if self.node is None:
            return self.line, 1
        from gpustack_iac.spec.yamlsource import find_node

        point, _, _ = find_node(self.node, loc)
        return point.start_mark.line + 1, point.start_mark.column + 1


def _env_json_schema() -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(=.*)?$"}},
            {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]}},
        ]
    }


EnvVars = Annotated[dict[str, Union[str, None]], BeforeValidator(parse_env), WithJsonSchema(_env_json_schema())]
SpotPolicy = Literal["spot", "on-demand", "auto"]


def _resolve_env_field(cls: type, value: dict[str, str | None] | None, info: ValidationInfo) -> dict[str, str | None] | None:
    if value is None:
        return None
    context = info.context or {}
    return resolve_env(value, context.get("env"))


# ---------------------------------------------------------------- profile (placement) properties


RetryEvent = Literal["no-capacity", "interruption", "error"]


def _every_retry_event() -> list[RetryEvent]:
    return ["no-capacity", "interruption", "error"]


class RetrySpec(Strict):
    on_events: list[RetryEvent] = Field(
        default_factory=_every_retry_event,
        description="The events that trigger a retry: `no-capacity`, `interruption`, `error`.",
    )
    duration: Duration = Field("1d", validate_default=True, description="How long to keep retrying (e.g. `1h`, `1d`).")


def _retry_shorthand(value: Any) -> Any:
    # `retry: true` means the default policy, `retry: false` none at all.
    if value is True:
        return {}
    if value is False:
        return None
    return value


class RetryPolicySpec(Strict):
    retry: Bool = Field(False, description="Whether to resubmit the run.")
    duration: Duration = Field(None, description="How long to keep resubmitting.")


class ProfileParams(Strict):
    """Where and how instances are provisioned; shared by services, replica groups, tasks, fleets."""

    backends: list[Backend] | None = Field(
        None, description="The backends to consider for provisioning (e.g. `[aws, gcp]`; `local` runs agents on this machine)."
    )
    regions: list[str] | None = Field(None, description="The regions to consider (e.g. `[eu-west-1, us-west4]`).")
    instance_types: list[str] | None = Field(
        None, description="The cloud-specific instance types to consider (e.g. `[p3.8xlarge, n1-standard-4]`)."
    )
    spot_policy: SpotPolicy | None = Field(
        None, description="`spot`, `on-demand` or `auto`. Defaults to `on-demand` for services."
    )
    retry: Annotated[RetrySpec | None, BeforeValidator(_retry_shorthand)] = Field(
        None, description="The policy for resubmitting: `true`, `false`, or an object with `on_events` and `duration`."
    )
    retry_policy: RetryPolicySpec | None = Field(None, description="Deprecated in favour of `retry`.")
    max_duration: Duration = Field(
        None, description="The maximum duration of a run (e.g. `2h`, `1d`); then it is stopped. Defaults to `off`."
    )
    max_price: Number | None = Field(None, gt=0, description="The maximum instance price per hour, in dollars.")
    pool_name: str | None = Field(None, description="The name of the pool (deprecated in dstack; kept for old files).")
    instance_name: str | None = Field(None, description="The name of the instance.")
    creation_policy: Literal["reuse", "reuse-or-create"] | None = Field(
        None, description="`reuse` or `reuse-or-create` existing instances. Defaults to `reuse-or-create`."
    )
    termination_policy: Literal["dont-destroy", "destroy-after-idle"] | None = Field(
        None, description="`dont-destroy` or `destroy-after-idle`. Defaults to `destroy-after-idle`."
    )
    termination_idle_time: Duration = Field(None, description="Idle time before an instance is destroyed. Defaults to `5m`.")
    idle_duration: Duration = Field(None, description="Idle time before an instance is destroyed (`5m`, `1h`, `off`).")
    fleets: list[Name] | None = Field(None, description="Only place on these fleets (by name).")

    def placement(self) -> dict[str, Any]:
        """The `placement` object of the runtime's service definition."""
        return {
            "backends": list(self.backends or []),
            "regions": list(self.regions or []),
            "instance_types": list(self.instance_types or []),
            "spot_policy": self.spot_policy,
            "max_price": self.max_price,
        }


PROFILE_FIELDS: tuple[str, ...] = tuple(ProfileParams.model_fields)

# ---------------------------------------------------------------- run properties


class RegistryAuth(Strict):
    username: str = Field(description="The username.")
    password: str = Field(description="The password or access token.")


def _volume_short(value: Any) -> Any:
    if isinstance(value, str):
        source, sep, dest = value.partition(":")
        if not sep or not source or not dest:
            raise ValueError(f"expected name:/path or /instance/path:/path, got {value!r}")
        key = "instance_path" if source.startswith("/") else "name"
        return {key: source, "path": dest}
    return value


class VolumeMount(Strict):
    name: str | list[str] | None = Field(None, description="The network volume name (or a list: the first available).")
    instance_path: str | None = Field(None, description="A path on the instance, for an instance volume.")
    path: str = Field(description="The absolute path inside the container.")
    optional: Bool = Field(False, description="Run even where the instance path does not exist.")

    @model_validator(mode="after")
    def _check(self) -> VolumeMount:
        if (self.name is None) == (self.instance_path is None):
            raise config_error("a volume needs exactly one of name (network volume) or instance_path (instance volume)")
        if not self.path.startswith("/"):
            raise config_error(f"expected an absolute container path, got {self.path!r}", "path")
        if self.path == "/workflow" or self.path.startswith("/workflow/"):
            raise config_error("volumes cannot be mounted at /workflow or below it (the repository lives there)", "path")
        return self


VolumeMountValue = Annotated[VolumeMount, BeforeValidator(_volume_short)]

# Where a run's code lands in dstack: the default working directory of its container.
CODE_ROOT = "/workflow"


def _file_short(value: Any) -> Any:
    # `local:path` maps a local path to a path in the run; `local` alone keeps the same relative path.
    if isinstance(value, str):
        local, sep, path = value.partition(":")
        return {"local_path": local, "path": path if sep else local}
    return value


class FileMapping(Strict):
    local_path: str = Field(description="A file or directory on this machine, relative to the configuration's directory.")
    path: str = Field(description=f"Where it lands in the run: relative to the working directory, or absolute under `{CODE_ROOT}`.")

    @model_validator(mode="after")
    def _check(self) -> FileMapping:
        if not self.local_path:
            raise config_error("expected a local path", "local_path")
        if not self.path:
            raise config_error("expected a path in the run", "path")
        return self


def _repo_short(value: Any) -> Any:
    # `.` or `../repo` (a local checkout, optionally `:/path` where it lands), or a git URL.
    if isinstance(value, str):
        if "://" in value or value.startswith("git@"):
            return {"url": value}
        local, sep, path = value.partition(":")
        return {"local_path": local, **({"path": path} if sep else {})}
    return value


class RepoSpec(Strict):
    local_path: str | None = Field(None, description="A local git checkout, relative to the configuration's directory.")
    url: str | None = Field(None, description="A git URL cloned on the host (`https://...` or `git@...`).")
    branch: str | None = Field(None, description="The branch to check out (a `url` repo).")
    hash: str | None = Field(None, description="The commit to check out (a `url` repo).")
    path: str = Field(CODE_ROOT, description=f"Where the repo lands in the run (default `{CODE_ROOT}`, the working directory).")

    @model_validator(mode="after")
    def _check(self) -> RepoSpec:
        if (self.local_path is None) == (self.url is None):
            raise config_error("a repo needs exactly one of local_path (a checkout here) or url (cloned on the host)")
        if self.local_path is not None and (self.branch or self.hash):
            raise config_error("branch and hash are for a url repo; a local checkout ships as it is", "branch" if self.branch else "hash")
        return self


FileMappingValue = Annotated[FileMapping, BeforeValidator(_file_short)]
RepoValue = Annotated[RepoSpec, BeforeValidator(_repo_short)]


class BurstSpec(Strict):
    window: Duration = Field(None, description="The short window whose request count is tested for a burst (e.g. `6s`). Defaults to `6s`.")
    sigmas: Number = Field(
        scaling_defaults.BURST_SIGMAS,
        gt=0,
        description="A burst is a count more than this many standard deviations (Poisson noise) above what the current replicas serve in the window.",
    )
    release: Duration = Field(
        None,
        description="Capacity a burst added is released this long after the burst ends, instead of after `scale_down_delay`. Defaults to `1m`.",
    )


class HeadroomSpec(Strict):
    z: Number = Field(
        scaling_defaults.HEADROOM_Z, ge=0, description="Provision for the mean rate plus `z` standard deviations of the per-second arrivals (`0`: the mean only)."
    )
    budget: Number = Field(
        scaling_defaults.HEADROOM_BUDGET,
        ge=0,
        description="The most replicas headroom may add, as a fraction of the replicas the mean rate needs (rounded down): the cost budget.",
    )


class ScheduleSpec(Strict):
    cron: str = Field(description="A 5-field cron expression in UTC; the minimum applies during every minute it matches (e.g. `* 8-18 * * 1-5`).")
    min: Int = Field(ge=0, description="The minimum number of replicas while the expression matches.")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"expected a 5-field cron expression (minute hour day month weekday), got {value!r}")
        return value


def _dstack_weekday(token: str) -> str:
    """One item of dstack's day-of-week field in croniter's numbering: dstack counts from Monday
    (`0` is Monday, `6` Sunday), croniter from Sunday (`0`/`7` is Sunday), so each number moves up one."""
    base, _, step = token.partition("/")
    if base == "*" and step:
        base = "0-6"  # `*/2` steps from Monday in dstack's numbering, from Sunday in croniter's
    bounds = base.split("-") if base != "*" else []
    for bound in bounds:
        if bound.isdigit() and int(bound) > 6:
            raise ValueError(f"day of week {bound} is out of range: dstack counts 0 (Monday) .. 6 (Sunday)")
    moved = "-".join(str(int(b) + 1) if b.isdigit() else b for b in bounds) if bounds else base
    return moved + (f"/{step}" if step else "")


def posix_cron(expression: str) -> str:
    """A dstack cron expression (UTC, weekdays from Monday) as croniter reads it (weekdays from Sunday)."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"expected a 5-field cron expression (minute hour day month weekday), got {expression!r}")
    fields[4] = ",".join(_dstack_weekday(t) for t in fields[4].lower().split(","))
    out = " ".join(fields)
    if not croniter.is_valid(out):
        raise ValueError(f"expected a 5-field cron expression (minute hour day month weekday), got {expression!r}")
    return out


def _crons(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class RunScheduleSpec(Strict):
    """dstack's `schedule:` of a run: start it at each time a cron expression matches (UTC)."""

    cron: Annotated[list[str], BeforeValidator(_crons)] = Field(
        min_length=1,
        description="A 5-field cron expression in UTC, or a list of them (days of the week count from Monday: `0` or "
        "`mon`; e.g. `15 23 * * *`, `0 8 * * mon-fri`).",
    )

    @field_validator("cron")
    @classmethod
    def _valid(cls, value: list[str]) -> list[str]:
        for expression in value:
            posix_cron(expression)
        return value

    def posix(self) -> list[str]:
        """The expressions in croniter's numbering, as the task runner reads them."""
        return [posix_cron(e) for e in self.cron]


class ScalingSpec(Strict):
    metric: Literal["rps", "concurrency", "latency", "queue"] = Field(
        description=(
            "The metric to track: `rps` (requests per second per replica), `concurrency` (requests in flight per replica), "
            "`latency` (p90 time to first byte measured by the gateway, target in milliseconds) or `queue` (requests held at "
            "the gateway per replica)."
        )
    )
    target: Number = Field(gt=0, description="The target value of the metric per replica (milliseconds for `latency`).")
    window: Duration = Field(None, description="The period the metric is averaged over (e.g. `30s`, `1m`, `5m`). Defaults to `1m`.")
    scale_up_delay: Duration = Field(
        scaling_defaults.SCALE_UP_DELAY,
        validate_default=True,
        description="Seconds since the last scaling event before scaling up. A burst (see `burst`) and a scale-up from zero do not wait for it.",
    )
    scale_down_delay: Duration = Field(scaling_defaults.SCALE_DOWN_DELAY, validate_default=True, description="Seconds since the last scaling event before scaling down.")
    burst: BurstSpec | Literal[False] | None = Field(
        None,
        description=(
            "The burst path of `metric: rps`: a significant burst scales up at once, overriding `scale_up_delay`; `false` turns it "
            "off. Defaults to a `6s` window, 3 sigmas and a `1m` release."
        ),
    )
    headroom: HeadroomSpec = Field(default_factory=HeadroomSpec, description="Headroom for the noise of `metric: rps` arrivals.")
    schedule: list[ScheduleSpec] = Field(
        default_factory=list, description="Minimum replicas for known busy hours, e.g. to pre-warm before them (the service's total, or the group's own)."
    )

    def to_runtime(self) -> dict[str, Any]:
        burst = self.burst if isinstance(self.burst, BurstSpec) else BurstSpec() if self.burst is None else None
        return {
            "metric": self.metric,
            "target": self.target,
            "scale_up_delay": self.scale_up_delay,
            "scale_down_delay": self.scale_down_delay,
            "window": self.window,
            "burst_window": burst.window if burst else None,
            "burst_sigmas": burst.sigmas if burst else None,
            "burst_release": burst.release if burst else None,
            "headroom_z": self.headroom.z,
            "headroom_budget": self.headroom.budget,
            "schedule": [{"cron": e.cron, "min": e.min} for e in self.schedule],
        }


def _headers(value: Any) -> Any:
    if isinstance(value, list):
        out: dict[str, Any] = {}
        for item in value:
            if not isinstance(item, dict) or set(item) != {"name", "value"}:
                raise ValueError("expected header entries with name and value")
            out[str(item["name"])] = str(item["value"])
        return out
    return value


class ProbeSpec(Strict):
    type: Literal["http"] = Field("http", description="The probe type; `http`.")
    url: str = Field("/", description="The path to request (e.g. `/health`).")
    method: Annotated[
        Literal["GET", "POST", "PUT", "HEAD", "OPTIONS"], BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)
    ] = Field("GET", description="The HTTP method.")
    headers: Annotated[dict[str, str], BeforeValidator(_headers)] = Field(
        default_factory=dict, description="Headers to send: a mapping or a list of name/value objects."
    )
    body: str | None = Field(None, description="The request body.")
    timeout: Duration = Field(10, validate_default=True, description="Seconds before a request counts as failed.")
    interval: Duration = Field(15, validate_default=True, description="Seconds between probes.")
    ready_after: Int = Field(1, ge=1, description="Consecutive successes before the replica is ready.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"expected a path starting with /, got {v!r}")
        return v

    def to_runtime(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "method": self.method,
            "headers": dict(self.headers),
            "body": self.body,
            "timeout": self.timeout,
            "interval": self.interval,
        }


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class RateLimitKey(Strict):
    type: Literal["ip_address", "header"] = Field("ip_address", description="Count per client IP or per header value.")
    header: str | None = Field(
        None, description="The header whose value is the key (for `type: header`); a request without it is counted by its IP."
    )

    @model_validator(mode="after")
    def _header_for_header_type(self) -> "RateLimitKey":
        if self.type == "header" and not self.header:
            raise ValueError("key type header needs `header`: the name of the header whose value is the key")
        if self.type == "ip_address" and self.header is not None:
            raise ValueError("`header` is only used with key type header")
        if self.header is not None and not _HEADER_NAME.fullmatch(self.header):
            raise ValueError(f"expected an HTTP header name, got {self.header!r}")
        return self


class RateLimit(Strict):
    prefix: str = Field(
        "/", description="The path prefix the limit applies to, as the service sees it; when several match, the longest wins."
    )
    key: RateLimitKey = Field(default_factory=RateLimitKey, description="What requests are counted by.")
    rps: Number = Field(gt=0, description="Requests per second allowed per key.")
    burst: Int = Field(0, ge=0, description="Requests allowed above the rate in a burst (answered at once, not delayed).")

    @field_validator("prefix")
    @classmethod
    def _absolute_prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"expected a path starting with /, got {value!r}")
        return value


class OpenAIModel(Strict):
    type: Literal["chat"] = Field("chat", description="The model type; `chat`.")
    name: str = Field(description="The model name clients send.")
    format: Literal["openai"] = Field("openai", description="The serving format.")
    prefix: str = Field("/v1", description="The base_url prefix of the OpenAI-compatible API.")


class TGIModel(Strict):
    type: Literal["chat"] = Field("chat", description="The model type; `chat`.")
    name: str = Field(description="The model name clients send.")
    format: Literal["tgi"] = Field(description="The serving format.")
    chat_template: str | None = Field(None, description="A custom prompt template (default: the model's own).")
    eos_token: str | None = Field(None, description="A custom end-of-sentence token.")


def _model_shorthand(value: Any) -> Any:
    if isinstance(value, str):
        return {"name": value}
    return value


def _model_tag(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("format", "openai"))
    return str(getattr(value, "format", "openai"))


ModelSpec = Annotated[
    Annotated[Union[Annotated[OpenAIModel, Tag("openai")], Annotated[TGIModel, Tag("tgi")]], Discriminator(_model_tag)],
    BeforeValidator(_model_shorthand),
]


class RunParams(ProfileParams):
    """What every run (service, task, dev environment) shares."""

    name: Name | None = Field(None, description="The name; defaults to the file name.")
    image: str | None = Field(None, description="The Docker image to run.")
    python: Annotated[str | None, BeforeValidator(lambda v: _python_version(v))] = Field(
        None, description="The major Python version of the base image (`3.9` .. `3.13`). Mutually exclusive with `image`."
    )
    nvcc: Bool | None = Field(None, description="Use a base image with the CUDA compiler. Mutually exclusive with `image`.")
    entrypoint: str | None = Field(None, description="The Docker entrypoint.")
    working_dir: str | None = Field(None, description="The working directory, relative to the repository. Defaults to `.`.")
    home_dir: str = Field("/root", description="The home directory inside the container.")
    privileged: Bool = Field(False, description="Run the container in privileged mode.")
    user: str | None = Field(None, description="The user the container runs as (`name`, `uid` or `uid:gid`); image runs only.")
    registry_auth: RegistryAuth | None = Field(None, description="Credentials for pulling a private Docker image.")
    env: EnvVars = Field(
        default_factory=dict,
        description="Environment variables: a list (`KEY=value`, or `KEY` to take it from the environment when planning) or a mapping.",
    )
    setup: StrList = Field(default_factory=list, description="Commands run once when the instance boots.")
    commands: StrList = Field(default_factory=list, description="The commands to run.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="The resource requirements.")
    volumes: list[VolumeMountValue] = Field(
        default_factory=list, description="Volume mounts: `name:/path`, `/instance/path:/path` or objects."
    )
    files: list[FileMappingValue] = Field(
        default_factory=list,
        description="Local files and directories shipped to the run: `local:path`, `local`, or `{local_path, path}` "
        "(`.gitignore`/`.dstackignore` honoured; shipped once per content change).",
    )
    schedule: RunScheduleSpec | None = Field(
        None, description="Start the run at the times a cron expression matches (UTC): `{cron: \"15 23 * * *\"}`."
    )
    repos: list[RepoValue] = Field(
        default_factory=list,
        description=f"Git repos in the run: a local checkout (`.`, `..:/{CODE_ROOT[1:]}/x`) or `{{url, branch, hash, path}}` "
        f"cloned on the host; by default at `{CODE_ROOT}`, the working directory.",
    )

    _resolve_env = field_validator("env")(_resolve_env_field)

    def _check_image(self, need_commands: bool = True) -> None:
        if self.image is not None and self.python is not None:
            raise config_error("python and image are mutually exclusive (python picks a base image)", "python")
        if self.image is not None and self.nvcc:
            raise config_error("nvcc and image are mutually exclusive (nvcc picks a base image)", "nvcc")
        if need_commands and self.image is None and not self.commands:
            raise config_error("commands are required unless image is given (expected a list of shell commands)")


def _python_version(value: Any) -> Any:
    # YAML reads `python: 3.10` as the float 3.1; map floats back to the version meant.
    if isinstance(value, float):
        value = {3.1: "3.10", 3.11: "3.11", 3.12: "3.12", 3.13: "3.13", 3.9: "3.9"}.get(value, str(value))
    if value is not None and value not in ("3.9", "3.10", "3.11", "3.12", "3.13"):
        raise ValueError(f"expected a Python version 3.9, 3.10, 3.11, 3.12 or 3.13, got {value!r}")
    return value


class Document(Strict):
    """A top-level document. Knows the file it came from."""

    KIND: ClassVar[str] = ""
    _source: Source | None = PrivateAttr(default=None)

    @property
    def source(self) -> Source | None:
        return self._source

    def attach_source(self, source: Source) -> None:
        self._source = source


# ---------------------------------------------------------------- service and replica groups


def _group_count(value: Any) -> Any:
    # dstack's current spelling of a group's size is `count:`; `replicas:` is the older one.
    if isinstance(value, dict) and "count" in value:
        if "replicas" in value:
            raise config_error("count and replicas are the same property of a group: use one of them", "count")
        value = {("replicas" if k == "count" else k): v for k, v in value.items()}
    return value


class ReplicaGroup(ProfileParams):
    """A group of identical replicas; a service has one or more."""

    name: Name = Field(description="The group's name, unique within the service.")
    replicas: IntRange = Field("1", validate_default=True, description="A number (`2`) or a range (`0..4`); a range needs `scaling`.")
    resources: ResourcesSpec | None = Field(None, description="The group's resources (default: the service's).")
    scaling: ScalingSpec | None = Field(None, description="The group's auto-scaling rules (default: the service's).")
    commands: StrList | None = Field(None, description="Overrides the service's commands.")
    image: str | None = Field(None, description="Overrides the service's image.")
    env: EnvVars | None = Field(None, description="Merged over the service's env.")

    _resolve_env = field_validator("env")(_resolve_env_field)
    _count = model_validator(mode="before")(_group_count)


def _group_aliases(value: Any) -> Any:
    # The later spellings of the same idea: `replicas:` as a list, or `groups:`.
    if not isinstance(value, dict):
        return value
    data = dict(value)
    if isinstance(data.get("replicas"), list):
        if "replica_groups" in data:
            raise config_error("replicas given as a list and replica_groups: use one of them", "replicas")
        # dstack's list form: each item has `count` and an optional `name` (unnamed groups are numbered).
        data["replica_groups"] = [
            {"name": f"group-{i}", **item} if isinstance(item, dict) and "name" not in item else item
            for i, item in enumerate(data.pop("replicas"))
        ]
    if "groups" in data:
        if "replica_groups" in data:
            raise config_error("groups and replica_groups are the same property: use one of them", "groups")
        data["replica_groups"] = data.pop("groups")
    return data


def _port(value: Any) -> Any:
    # "8080:8000" maps a local port to the container's; the container port is the one served.
    if isinstance(value, str) and ":" in value:
        return value.rsplit(":", 1)[1]
    return value


def _gateway(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Yaml11Bool):
        raise ValueError(f"expected a gateway name or false, got {str(value)!r} (YAML 1.1's spelling of a boolean; write false)")
    if isinstance(value, str):
        return parse_name(value)
    raise ValueError(f"expected a gateway name or false, got {value!r}")


class ServiceConfig(RunParams, Document):
    """A long-running application behind a gateway: one or more replica groups, auto-scaling on requests per second (or concurrency, latency, queue),
    an optional OpenAI-compatible model. A service without `replica_groups` is one group named `default`."""

    KIND: ClassVar[str] = "service"

    type: Literal["service"] = Field(description="`service`.")
    port: Annotated[Int, BeforeValidator(_port)] = Field(
        ge=1, le=65535, description="The port the application listens on (or `local:container`)."
    )
    gateway: Annotated[str | Bool | None, BeforeValidator(_gateway)] = Field(
        None, description="The gateway's name; `false` to run without one. Omit for the default gateway."
    )
    model: ModelSpec | None = Field(
        None, description="The model served on the OpenAI-compatible endpoint: a name, or an object (`format: openai` or `tgi`)."
    )
    https: Bool = Field(True, description="Serve HTTPS when running behind a gateway with a domain.")
    auth: Bool = Field(True, description="Require `Authorization: Bearer <token>` on the endpoint.")
    replicas: IntRange = Field(
        "1", validate_default=True, description="A number (`2`) or a range (`0..4`); a range needs `scaling`. Defaults to `1`."
    )
    scaling: ScalingSpec | None = Field(None, description="The auto-scaling rules; required when `replicas` is a range.")
    probes: list[ProbeSpec] = Field(default_factory=list, description="HTTP readiness probes.")
    rate_limits: list[RateLimit] = Field(default_factory=list, description="Per-client rate limits on the endpoint.")
    replica_groups: list[ReplicaGroup] | None = Field(
        None,
        description="Groups of replicas with their own replicas, resources, scaling and placement. Mutually exclusive with `replicas`. Also spelled `groups:` or `replicas:` as a list.",
    )

    _aliases = model_validator(mode="before")(_group_aliases)

    @model_validator(mode="after")
    def _check(self) -> ServiceConfig:
        self._check_image()
        autoscaled = False
        if self.replica_groups is not None:
            if "replicas" in self.model_fields_set:
                raise config_error("replicas and replica_groups are mutually exclusive: move the count into each group", "replicas")
            if not self.replica_groups:
                raise config_error("replica_groups needs at least one group", "replica_groups")
            seen: set[str] = set()
            for i, group in enumerate(self.replica_groups):
                if group.name in seen:
                    raise config_error(f"replica group name {group.name!r} is used twice; names must be unique", f"replica_groups.{i}.name")
                seen.add(group.name)
                if not group.replicas.fixed:
                    autoscaled = True
                    if group.scaling is None and self.scaling is None:
                        raise config_error(
                            f"replicas {group.replicas} is a range, so scaling is required (in the group or the service)",
                            f"replica_groups.{i}.replicas",
                        )
        elif not self.replicas.fixed:
            autoscaled = True
            if self.scaling is None:
                raise config_error(
                    f"replicas {self.replicas} is a range, so scaling is required (e.g. scaling: {{metric: rps, target: 10}})",
                    "replicas",
                )
        if self.gateway is False and autoscaled:
            raise config_error("auto-scaling needs a gateway to count requests; remove gateway: false or fix the replicas", "gateway")
        return self

    @property
    def groups(self) -> list[ReplicaGroup]:
        """The replica groups with every property resolved; a service without groups is one group `default`."""
        base = {f: getattr(self, f) for f in PROFILE_FIELDS}
        if self.replica_groups is None:
            return [
                ReplicaGroup.model_construct(
                    name="default",
                    replicas=self.replicas,
                    resources=self.resources,
                    scaling=self.scaling,
                    commands=list(self.commands),
                    image=self.image,
                    env=dict(self.env),
                    **base,
                )
            ]
        out = []
        for g in self.replica_groups:
            profile = {f: getattr(g, f) if getattr(g, f) is not None else base[f] for f in PROFILE_FIELDS}
            out.append(
                ReplicaGroup.model_construct(
                    name=g.name,
                    replicas=g.replicas,
                    resources=g.resources or self.resources,
                    scaling=g.scaling or self.scaling,
                    commands=list(g.commands if g.commands is not None else self.commands),
                    image=g.image if g.image is not None else self.image,
                    env={**self.env, **(g.env or {})},
                    **profile,
                )
            )
        return out

    def to_runtime(self) -> dict[str, Any]:
        """The service definition the stack registers with the controller (docs/runtime-api.md)."""
        probe = self.probes[0].to_runtime() if self.probes else None
        model = None
        if self.model is not None:
            model = {"name": self.model.name, "format": self.model.format, "prefix": getattr(self.model, "prefix", "/v1")}
        groups = []
        for g in self.groups:
            assert g.resources is not None
            groups.append(
                {
                    "name": g.name,
                    "replicas": g.replicas.to_runtime(),
                    "scaling": g.scaling.to_runtime() if g.scaling else None,
                    "commands": list(g.commands or []),
                    "image": g.image,
                    "env": {k: v for k, v in (g.env or {}).items() if v is not None},
                    "working_dir": self.working_dir,
                    "resources": g.resources.to_runtime(),
                    "placement": g.placement(),
                }
            )
        return {
            "name": self.name,
            "generation": _sha256(self.model_dump(mode="json")),
            "port": self.port,
            "auth": self.auth,
            "model": model,
            "probe": probe,
            # Every probe when there are several (all must pass); one probe travels as `probe` only.
            **({"probes": [p.to_runtime() for p in self.probes]} if len(self.probes) > 1 else {}),
            "scaling": self.scaling.to_runtime() if self.scaling else None,
            "rate_limits": [limit.model_dump(mode="json") for limit in self.rate_limits],
            "groups": groups,
        }


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------- fleet


def _blocks(value: Any) -> int | str | None:
    if value is None or value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_INT:
        return value
    raise ValueError(f"expected a number of blocks of at least 1, or auto, got {value!r}")


class ProxyJump(Strict):
    hostname: str = Field(description="The jump host.")
    user: str | None = Field(None, description="The user on the jump host.")
    port: Int | None = Field(None, ge=1, le=65535, description="The SSH port of the jump host.")
    identity_file: str | None = Field(None, description="The private key for the jump host.")


class SSHHost(Strict):
    hostname: str = Field(description="The host's name or address.")
    user: str | None = Field(None, description="Overrides `ssh_config.user`.")
    port: Int | None = Field(None, ge=1, le=65535, description="Overrides `ssh_config.port`.")
    identity_file: str | None = Field(None, description="Overrides `ssh_config.identity_file`.")
    proxy_jump: ProxyJump | None = Field(None, description="Overrides `ssh_config.proxy_jump`.")
    host_key: str | None = Field(None, pattern=r"^SHA256:[A-Za-z0-9+/]{43}$",
                                 description="The host key's SHA256 fingerprint (`ssh-keygen -lf`); pins the key instead of known_hosts.")
    internal_ip: str | None = Field(None, description="The host's address inside `ssh_config.network` (when the host has "
                                    "several there); by default its one interface address in that network.")
    blocks: Annotated[int | Literal["auto"] | None, PlainValidator(_blocks)] = Field(
        None, description="Overrides the fleet's `blocks` for this host."
    )


    @field_validator("internal_ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ipaddress.IPv4Address(v)
            except ValueError:
                raise ValueError(f"expected an IPv4 address like 10.0.0.12, got {v!r}") from None
        return v


SSHHostValue = Annotated[SSHHost, BeforeValidator(lambda v: {"hostname": v} if isinstance(v, str) else v)]


class SSHConfig(Strict):
    user: str | None = Field(None, description="The SSH user for every host.")
    port: Int | None = Field(None, ge=1, le=65535, description="The SSH port for every host. Defaults to 22.")
    identity_file: str | None = Field(None, description="The private key for every host.")
    proxy_jump: ProxyJump | None = Field(None, description="A jump host between here and the hosts.")
    hosts: list[SSHHostValue] = Field(min_length=1, description="The hosts: names/addresses, or objects with their own overrides.")
    known_hosts: str | None = Field(None, description="The known_hosts file host keys are verified against. Defaults to `~/.ssh/known_hosts`.")
    host_key_policy: Literal["strict", "accept-new"] = Field(
        "strict", description="`strict`: an unknown host key is an error; `accept-new`: an unknown key is recorded in known_hosts. "
        "A changed key is always an error.")
    install_dir: str = Field("~/.gpustack", description="Where the agent is installed on each host (a venv, wheels, logs, replica state).")
    network: str | None = Field(None, description="The hosts' private network (CIDR, e.g. `10.0.0.0/24`). When set, each "
                                "host's agent listens on its address in that network instead of loopback, replicas get it as "
                                "`GPUSTACK_HOST` and are reached there (by other hosts' replicas, and by a gateway on that "
                                "network directly, without SSH forwards). Only set it for a network you trust.")

    @field_validator("network")
    @classmethod
    def _cidr(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ipaddress.ip_network(v, strict=False)
            except ValueError:
                raise ValueError(f"expected a network in CIDR form like 10.0.0.0/24, got {v!r}") from None
        return v

    @model_validator(mode="after")
    def _unique(self) -> SSHConfig:
        seen: set[str] = set()
        for i, h in enumerate(self.hosts):
            if h.hostname in seen:
                raise config_error(f"host {h.hostname!r} is listed twice", f"hosts.{i}")
            seen.add(h.hostname)
        return self


class FleetConfig(Document):
    """Compute for runs: a backend fleet (`nodes`, provisioned in `backends`; `local` starts agents on this machine)
    or an SSH fleet (`ssh_config`: existing hosts)."""

    KIND: ClassVar[str] = "fleet"

    type: Literal["fleet"] = Field(description="`fleet`.")
    name: Name | None = Field(None, description="The fleet's name; defaults to the file name.")
    nodes: IntRange | None = Field(None, description="A backend fleet's number of nodes: a number or a range (`0..10`).")
    placement: Literal["any", "cluster"] = Field("any", description="`cluster` puts the nodes on one interconnected network.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="The resources of each node.")
    blocks: Annotated[int | Literal["auto"], PlainValidator(_blocks)] = Field(
        1, description="How many workloads may share a node (`auto`: one per GPU)."
    )
    backends: list[Backend] | None = Field(None, description="The backends to provision in (`local` runs agents on this machine).")
    regions: list[str] | None = Field(None, description="The regions to provision in.")
    instance_types: list[str] | None = Field(None, description="The instance types to consider.")
    spot_policy: SpotPolicy | None = Field(None, description="`spot`, `on-demand` or `auto`.")
    max_price: Number | None = Field(None, gt=0, description="The maximum instance price per hour, in dollars.")
    retry: Annotated[RetrySpec | None, BeforeValidator(_retry_shorthand)] = Field(None, description="The provisioning retry policy.")
    idle_duration: Duration = Field(None, description="Idle time before a node above the minimum is terminated.")
    reservation: str | None = Field(None, description="A capacity reservation to use.")
    env: EnvVars = Field(default_factory=dict, description="Environment variables for every node.")
    ssh_config: SSHConfig | None = Field(None, description="An SSH fleet: existing hosts reached over SSH.")
    ssh_from: list[str] = Field(default_factory=list, description="CIDR ranges allowed to reach the nodes' SSH port on "
                                "cloud backends (e.g. `[203.0.113.0/24]`); empty keeps SSH closed.")

    _resolve_env = field_validator("env")(_resolve_env_field)
    _nodes_target: int | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _target(cls, data: Any, handler: Any) -> FleetConfig:
        # dstack writes `nodes: {min, max, target}`: target is how many nodes to start with. It is
        # kept beside the range (not in it) so every reader of `nodes` keeps seeing min..max.
        target = None
        if isinstance(data, dict) and isinstance(data.get("nodes"), dict) and "target" in data["nodes"]:
            nodes = dict(data["nodes"])
            target = nodes.pop("target")
            data = {**data, "nodes": nodes}
        fleet: FleetConfig = handler(data)
        if target is not None and fleet.nodes is not None:
            if isinstance(target, bool) or not isinstance(target, int) or target < 0:
                raise config_error(f"expected a whole number of nodes, got {target!r}", "nodes.target")
            lo, hi = fleet.nodes.min or 0, fleet.nodes.max
            if target < lo or (hi is not None and target > hi):
                raise config_error(f"nodes.target {target} is outside nodes {fleet.nodes}", "nodes.target")
            fleet._nodes_target = target
        return fleet

    @property
    def nodes_target(self) -> int | None:
        """dstack's `nodes.target`: the number of nodes to start with (None: the minimum)."""
        return self._nodes_target

    @model_validator(mode="after")
    def _check(self) -> FleetConfig:
        if self.ssh_config is not None:
            if self.nodes is not None:
                raise config_error("an SSH fleet lists its hosts in ssh_config; remove nodes", "nodes")
            if self.backends and self.backends != ["ssh"]:
                raise config_error("an SSH fleet does not use backends; remove backends", "backends")
        elif self.nodes is None:
            raise config_error("a fleet needs nodes (a backend fleet) or ssh_config (an SSH fleet)")
        elif self.backends and "ssh" in self.backends:
            raise config_error("the ssh backend needs ssh_config with hosts", "backends")
        return self

    @property
    def is_ssh(self) -> bool:
        return self.ssh_config is not None


# ---------------------------------------------------------------- gateway


class LetsEncryptCertificate(Strict):
    type: Literal["lets-encrypt"] = Field(description="`lets-encrypt`.")
    directory: str = Field("https://acme-v02.api.letsencrypt.org/directory",
                           description="The ACME directory URL (Let's Encrypt by default; staging or a private ACME server).")
    email: str | None = Field(None, description="The contact address for the ACME account.")
    ca_bundle: str | None = Field(None, description="A CA bundle to trust for a private ACME server's own HTTPS.")
    http_port: Int = Field(80, ge=1, le=65535, description="The port that answers HTTP-01 challenges (the ACME server "
                           "connects to it on the domain's address).")


class ACMCertificate(Strict):
    type: Literal["acm"] = Field(description="`acm` (AWS Certificate Manager).")
    arn: str = Field(description="The certificate's ARN.")


class FilesCertificate(Strict):
    type: Literal["files"] = Field(description="`files`: a certificate and key you provide.")
    cert_file: str = Field(description="The PEM certificate chain.")
    key_file: str = Field(description="The PEM private key.")


class SelfSignedCertificate(Strict):
    type: Literal["self-signed"] = Field(description="`self-signed`: generated by the gateway, for local use.")


Certificate = Annotated[
    Union[LetsEncryptCertificate, ACMCertificate, FilesCertificate, SelfSignedCertificate],
    Field(discriminator="type"),
    BeforeValidator(lambda v: {"type": v} if isinstance(v, str) else v),
]
_REGIONLESS_BACKENDS = frozenset({"local", "kubernetes", "ssh", "remote"})


class GatewayConfig(Document):
    """The entry point of services: a reverse proxy with authentication, routing by service and by model, and the
    controller that places, probes and scales replicas."""

    KIND: ClassVar[str] = "gateway"

    type: Literal["gateway"] = Field(description="`gateway`.")
    name: Name | None = Field(None, description="The gateway's name; defaults to the file name.")
    backend: Backend = Field(description="Where the gateway runs (`local` runs it on this machine; `ssh` on one SSH fleet host, "
                             "named by `host`).")
    host: str | None = Field(None, description="`backend: ssh`: the SSH fleet host the gateway runs on (a `hostname` from a "
                             "fleet's `ssh_config.hosts`); reached from this machine through SSH port forwards.")
    region: str | None = Field(None, description="The region; required for cloud backends.")
    domain: str | None = Field(None, description="The wildcard domain served (`*.domain` must point at the gateway).")
    default: Bool = Field(False, description="Services without `gateway:` use the default gateway.")
    certificate: Certificate | None = Field(
        default_factory=lambda: LetsEncryptCertificate(type="lets-encrypt"),
        description="`lets-encrypt` (default), `self-signed`, `{type: files, cert_file, key_file}`, "
        "`{type: acm, arn: ...}`, or null for plain HTTP.",
    )
    public_ip: Bool = Field(True, description="Give the gateway a public IP address.")
    instance_type: str | None = Field(None, description="The gateway's instance type.")
    replicas: Int = Field(1, ge=1, le=16, description="How many gateway instances run.")
    ssh_from: list[str] = Field(default_factory=list, description="CIDR ranges allowed to reach SSH and the control API "
                                "on cloud backends; empty keeps both closed (the data plane is public).")
    data_plane: Literal["auto", "haproxy", "python"] = Field(
        "python", description="What serves the gateway's requests: `python` (the gateway itself), `haproxy` (HAProxy 2.6 "
        "or later in front, configured live by the gateway; refused at plan when this machine has none), or `auto` "
        "(HAProxy when installed, else the Python data plane, said at plan). Local backend only for now.")

    @model_validator(mode="after")
    def _check(self) -> GatewayConfig:
        if self.backend == "ssh" and not self.host:
            raise config_error("a gateway on backend ssh needs host: the SSH fleet host it runs on")
        if self.host and self.backend != "ssh":
            raise config_error(f"host is for backend ssh (the gateway runs on {self.backend})", "host")
        if self.region is None and self.backend not in _REGIONLESS_BACKENDS:
            raise config_error(f"region is required for a gateway on {self.backend}")
        if isinstance(self.certificate, ACMCertificate) and self.backend != "aws":
            raise config_error("an acm certificate needs backend aws", "certificate")
        if isinstance(self.certificate, (FilesCertificate, SelfSignedCertificate)) and self.backend not in ("local", "ssh"):
            raise config_error(f"a {self.certificate.type} certificate is for local and SSH gateways; on {self.backend} "
                               "use lets-encrypt" + (" or acm" if self.backend == "aws" else ""), "certificate")
        if self.domain is not None and ("." not in self.domain or self.domain.startswith(("*", "."))):
            raise config_error(f"expected a domain like example.com, got {self.domain!r}", "domain")
        return self


# ---------------------------------------------------------------- router


class RouterMember(Strict):
    service: Name = Field(description="A service that serves the model.")
    weight: Number = Field(1.0, ge=0, description="The share of traffic (strategy `weighted`).")
    priority: Int = Field(0, description="Lower is tried first (strategy `priority`).")
    cost: Number | None = Field(None, ge=0, description="Cost per million tokens (strategy `cost`).")


class RouterConfig(Document):
    """One OpenAI-compatible model name (alias) served by several services, with a strategy, fallbacks,
    retries and a cooldown for failing members."""

    KIND: ClassVar[str] = "router"

    type: Literal["router"] = Field(description="`router`.")
    name: Name | None = Field(None, description="The router's name; defaults to the file name.")
    model: str = Field(min_length=1, description="The model name (alias) clients send; routed to the members.")
    members: list[RouterMember] = Field(min_length=1, description="The services behind the alias.")
    strategy: Literal["priority", "weighted", "least-busy", "latency", "cost"] = Field(
        "priority", description="How a member is picked: `priority`, `weighted`, `least-busy`, `latency` or `cost`."
    )
    fallbacks: list[str] = Field(default_factory=list, description="Services or routers tried, in order, when every member fails.")
    retries: Int = Field(2, ge=0, le=10, description="Other members tried after a failure before the first byte.")
    cooldown: Duration = Field(60, validate_default=True, description="How long a failing member is skipped.")
    gateway: str | None = Field(None, description="The gateway serving the alias (default: the default gateway).")

    @model_validator(mode="after")
    def _check(self) -> RouterConfig:
        seen: set[str] = set()
        for i, m in enumerate(self.members):
            if m.service in seen:
                raise config_error(f"service {m.service!r} is a member twice", f"members.{i}.service")
            seen.add(m.service)
            if self.strategy == "cost" and m.cost is None:
                raise config_error("strategy cost needs a cost for every member", f"members.{i}")
        if self.strategy == "weighted" and not any(m.weight > 0 for m in self.members):
            raise config_error("strategy weighted needs at least one member with a weight above 0", "members")
        return self


# ---------------------------------------------------------------- task, dev environment, volume, project


def _port_pair(value: int | str) -> tuple[int, int]:
    local, _, remote = str(value).partition(":")
    try:
        pair = (int(local), int(remote or local))
    except ValueError:
        raise ValueError(f"expected a port (`8080`) or local:run ports (`8080:80`), got {value!r}") from None
    if not all(1 <= p <= 65535 for p in pair):
        raise ValueError(f"ports are 1..65535, got {value!r}")
    return pair


class TaskConfig(RunParams, Document):
    """A batch job (training, fine-tuning, evaluation) on one or more nodes."""

    KIND: ClassVar[str] = "task"

    type: Literal["task"] = Field(description="`task`.")
    nodes: Int = Field(1, ge=1, description="The number of nodes (distributed tasks).")
    ports: list[Int | str] = Field(
        default_factory=list,
        description="Ports `gpustack-iac attach` forwards to localhost: `8080` (the same port) or `8080:80` (local:run).",
    )

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        self._check_image()
        for i, port in enumerate(self.ports):
            try:
                _port_pair(port)
            except ValueError as exc:
                raise config_error(str(exc), f"ports.{i}") from None
        return self

    def port_pairs(self) -> list[tuple[int, int]]:
        """Each entry of `ports` as (local port, the run's port)."""
        return [_port_pair(p) for p in self.ports]


class DevEnvironmentConfig(RunParams, Document):
    """A machine with GPUs to attach a desktop IDE to."""

    KIND: ClassVar[str] = "dev-environment"

    type: Literal["dev-environment"] = Field(description="`dev-environment`.")
    ide: Literal["vscode", "cursor", "windsurf"] | None = Field(
        None, description="The desktop IDE to connect: `vscode`, `cursor` or `windsurf`; omit it for SSH access only."
    )
    version: str | None = Field(None, description="The IDE server version.")
    init: StrList = Field(default_factory=list, description="Commands run before the IDE attaches.")
    inactivity_duration: Duration = Field(None, description="Stop after this long without an attached IDE (e.g. `2h`).")
    ports: list[Int | str] = Field(default_factory=list, description="Ports to forward.")

    @model_validator(mode="after")
    def _check(self) -> DevEnvironmentConfig:
        self._check_image(need_commands=False)
        return self


class VolumeConfig(Document):
    """A network volume: created with `size`, or an existing one registered by `volume_id`."""

    KIND: ClassVar[str] = "volume"

    type: Literal["volume"] = Field(description="`volume`.")
    name: Name | None = Field(None, description="The volume's name; defaults to the file name.")
    backend: Backend = Field(description="Where the volume lives.")
    region: str | None = Field(None, description="The region.")
    availability_zone: str | None = Field(None, description="The availability zone.")
    size: MemoryValue | None = Field(None, description="The size of a new volume (e.g. `100GB`).")
    volume_id: str | None = Field(None, description="The id of an existing volume to register instead of creating one.")
    auto_cleanup: bool = Field(
        False, description="Delete the volume's data when the volume is destroyed. Off by default: `destroy` keeps the data."
    )
    host: str | None = Field(
        None, description="`local` and `ssh` backends: the fleet host (`<fleet>-<n>`) the directory lives on. "
        "Defaults to the first host of the first fleet."
    )

    @model_validator(mode="after")
    def _check(self) -> VolumeConfig:
        if self.size is None and self.volume_id is None:
            raise config_error("a volume needs size (to create one) or volume_id (to use an existing one)")
        if self.region is None and self.backend not in _REGIONLESS_BACKENDS:
            raise config_error(f"region is required for a volume on {self.backend}")
        return self


_STATE_SCHEMES = ("file://", "s3://", "gs://", "azblob://", "postgres://", "postgresql://")
_SECRETS_PROVIDERS = ("passphrase", "awskms://", "gcpkms://", "azurekeyvault://", "hashivault://")


class BackendCredentials(Strict):
    """A reference to where a backend's credentials are found; never the secret values themselves."""

    type: Backend = Field(description="The backend.")
    profile: str | None = Field(None, description="A named profile (e.g. in ~/.aws/credentials).")
    credentials_file: str | None = Field(None, description="A file holding the credentials.")
    env: list[str] = Field(default_factory=list, description="Names of environment variables holding the credentials.")
    kubeconfig: str | None = Field(None, description="The kubeconfig file (kubernetes).")
    context: str | None = Field(None, description="The kubeconfig context (kubernetes).")


class ProjectConfig(Document):
    """Project-wide settings: the stack's name, where state lives, the secrets provider, and where each backend's
    credentials are found (references only, never the secrets themselves)."""

    KIND: ClassVar[str] = "project"

    type: Literal["project"] = Field(description="`project`.")
    name: Name | None = Field(None, description="The project's name (names the Pulumi project and stack); defaults to the file name.")
    state: str | None = Field(
        None,
        description="Where state is kept: `file://PATH`, `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`, "
        "`azblob://CONTAINER/PREFIX` or `postgres://...` (Pulumi's DIY layout). Defaults to `$GPUSTACK_STATE`, "
        "else `$GPUSTACK_STATE_DIR`, else `./.gpustack/state`; `--state` overrides it.",
    )
    secrets_provider: str = Field("passphrase", description="`passphrase` (default) or a KMS URL (`awskms://`, `gcpkms://`, ...).")
    backends: list[BackendCredentials] = Field(default_factory=list, description="Where each backend's credentials come from.")

    @field_validator("state")
    @classmethod
    def _state(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(_STATE_SCHEMES):
            raise ValueError(f"expected a state URL starting with {', '.join(_STATE_SCHEMES)}, got {v!r}")
        return v

    @field_validator("secrets_provider")
    @classmethod
    def _secrets(cls, v: str) -> str:
        if not (v == "passphrase" or v.startswith(_SECRETS_PROVIDERS[1:])):
            raise ValueError(f"expected passphrase or a URL starting with {', '.join(_SECRETS_PROVIDERS[1:])}, got {v!r}")
        return v


DOCUMENT_MODELS: dict[str, type[Document]] = {
    m.KIND: m
    for m in (ServiceConfig, FleetConfig, GatewayConfig, RouterConfig, TaskConfig, DevEnvironmentConfig, VolumeConfig, ProjectConfig)
}
AnyDocument = Annotated[
    Union[
        ServiceConfig, FleetConfig, GatewayConfig, RouterConfig, TaskConfig, DevEnvironmentConfig, VolumeConfig, ProjectConfig
    ],
    Field(discriminator="type"),
]

__all__ = [
    "BACKENDS",
    "DOCUMENT_MODELS",
    "AnyDocument",
    "Document",
    "FleetConfig",
    "GatewayConfig",
    "ProjectConfig",
    "Range",
    "ReplicaGroup",
    "ResourcesSpec",
    "RouterConfig",
    "ServiceConfig",
    "Source",
    "TaskConfig",
    "DevEnvironmentConfig",
    "VolumeConfig",
]
