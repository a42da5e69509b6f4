"""The resource mini-language: typed values with parse and format.

`cpu: 4..`, `memory: 16GB..64GB`, `gpu: A100:80GB:2`, `gpu: H100,A100:4`, `gpu: nvidia:2..`,
`disk: 100GB..`. Every value parses into a frozen dataclass and formats back to the canonical
string, so `parse(format(x)) == x` holds for every value (a property test checks it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Generic, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from gpustack_iac.spec.values import MAX_INT

T = TypeVar("T")

_UNITS: dict[str, int] = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
# Largest first: formatting picks the largest unit that divides the value exactly.
_FORMAT_UNITS = ("TB", "GB", "MB", "KB")
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?B)?\s*$", re.IGNORECASE)
GPU_VENDORS: dict[str, str] = {"nvidia": "nvidia", "amd": "amd", "google": "google", "tpu": "google", "intel": "intel"}


@dataclass(frozen=True, order=True)
class Memory:
    """An amount of memory or disk in bytes. Units are binary: 1GB = 1024**3 bytes."""

    bytes: int

    @classmethod
    def parse(cls, value: Any) -> Memory:
        if isinstance(value, Memory):
            return value
        if isinstance(value, bool):
            raise ValueError(f"expected a size like 24GB, got {value!r}")
        if isinstance(value, (int, float)):
            # A bare number means gigabytes, as in the reference (`memory: 8` is 8GB).
            if not 0 <= value <= MAX_INT:
                raise ValueError(f"expected a size between 0 and {MAX_INT}GB, got {value!r}")
            return cls(round(value * _UNITS["GB"]))
        if not isinstance(value, str):
            raise ValueError(f"expected a size like 24GB, got {value!r}")
        m = _MEMORY_RE.match(value)
        if not m:
            raise ValueError(f"expected a size like 512MB, 24GB or 1TB, got {value!r}")
        unit = (m.group(2) or "GB").upper()
        size = float(m.group(1)) * _UNITS[unit]
        if size > MAX_INT * _UNITS["GB"]:
            raise ValueError(f"expected a size up to {MAX_INT}GB, got {value!r}")
        return cls(round(size))

    def format(self) -> str:
        for unit in _FORMAT_UNITS:
            size = _UNITS[unit]
            if self.bytes % size == 0 and (self.bytes or unit == "GB"):
                return f"{self.bytes // size}{unit}"
        return f"{self.bytes}B"

    def __str__(self) -> str:
        return self.format()


def looks_like_memory(token: str) -> bool:
    return bool(re.match(r"^\s*\d+(?:\.\d+)?\s*[KMGT]?B\s*$", token, re.IGNORECASE))


@dataclass(frozen=True)
class Range(Generic[T]):
    """A closed range `min..max`; either end may be open (None). A single value is min == max."""

    min: T | None = None
    max: T | None = None

    def __post_init__(self) -> None:
        if self.min is None and self.max is None:
            raise ValueError("a range needs at least one end")
        if self.min is not None and self.max is not None and self.min > self.max:  # type: ignore[operator]
            raise ValueError(f"range minimum {self.min} is greater than maximum {self.max}")

    @classmethod
    def parse(cls, value: Any, item: Callable[[Any], T]) -> Range[T]:
        """Parse `N`, `N..`, `..M`, `N..M` (or a {min, max} mapping) with `item` for each end."""
        if isinstance(value, Range):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {"min", "max"}
            if unknown:
                raise ValueError(f"a range mapping takes min and max, not {', '.join(sorted(unknown))}")
            lo = None if value.get("min") is None else item(value["min"])
            hi = None if value.get("max") is None else item(value["max"])
            return cls(lo, hi)
        if isinstance(value, str) and ".." in value:
            lo_s, _, hi_s = value.partition("..")
            if ".." in hi_s:
                raise ValueError(f"expected a range like 1..4, got {value!r}")
            lo = item(lo_s.strip()) if lo_s.strip() else None
            hi = item(hi_s.strip()) if hi_s.strip() else None
            return cls(lo, hi)
        one = item(value)
        return cls(one, one)

    @property
    def fixed(self) -> bool:
        return self.min == self.max

    def format(self, item: Callable[[T], str] = str) -> str:
        if self.min is not None and self.min == self.max:
            return item(self.min)
        lo = "" if self.min is None else item(self.min)
        hi = "" if self.max is None else item(self.max)
        return f"{lo}..{hi}"

    def __str__(self) -> str:
        return self.format()

    def to_runtime(self, scale: Callable[[T], int | float] = lambda v: v) -> dict[str, Any]:  # type: ignore[assignment,return-value]
        return {
            "min": 0 if self.min is None else scale(self.min),
            "max": None if self.max is None else scale(self.max),
        }


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"expected a non-negative number, got {value}")
        if value > MAX_INT:
            raise ValueError(f"expected a whole number no greater than {MAX_INT}, got {value}")
        return value
    if isinstance(value, float) and value.is_integer():
        return parse_int(int(value))
    if isinstance(value, str) and value.strip().isdigit():
        return parse_int(int(value.strip()))
    raise ValueError(f"expected a whole number, got {value!r}")


def parse_int_range(value: Any) -> Range[int]:
    try:
        return Range.parse(value, parse_int)
    except ValueError as exc:
        raise ValueError(f"{exc} (expected a number or a range like 1..4, 2.. or ..8)") from None


def parse_memory_range(value: Any) -> Range[Memory]:
    try:
        return Range.parse(value, Memory.parse)
    except ValueError as exc:
        raise ValueError(f"{exc} (expected a size or a range like 24GB, 24GB.. or 16GB..80GB)") from None


def format_memory_range(r: Range[Memory]) -> str:
    return r.format(Memory.format)


@dataclass(frozen=True)
class GPUSpec:
    """GPU requirements: `[vendor:][names:][memory:][count]` or the object form."""

    vendor: str | None = None
    names: tuple[str, ...] = ()
    count: Range[int] = field(default_factory=lambda: Range(1, 1))
    memory: Range[Memory] | None = None
    total_memory: Range[Memory] | None = None
    compute_capability: str | None = None

    @classmethod
    def parse(cls, value: Any) -> GPUSpec:
        if isinstance(value, GPUSpec):
            return value
        if isinstance(value, bool):
            raise ValueError(f"expected a GPU spec like A100:80GB:2, got {value!r}")
        if isinstance(value, int):
            return cls(count=parse_int_range(value))
        if isinstance(value, dict):
            return cls._parse_object(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected a GPU spec like A100:80GB:2, 24GB.. or nvidia:2, got {value!r}")
        return cls._parse_string(value.strip())

    @classmethod
    def _parse_string(cls, text: str) -> GPUSpec:
        vendor: str | None = None
        names: tuple[str, ...] = ()
        count: Range[int] | None = None
        memory: Range[Memory] | None = None
        for token in (t.strip() for t in text.split(":")):
            if not token:
                raise ValueError(f"empty part in GPU spec {text!r}")
            ends = [e.strip() for e in token.split("..")] if ".." in token else [token]
            if token.lower() in GPU_VENDORS and vendor is None and not names:
                vendor = GPU_VENDORS[token.lower()]
            elif all(e == "" or looks_like_memory(e) for e in ends) and memory is None:
                memory = parse_memory_range(token)
            elif all(e == "" or e.isdigit() for e in ends) and count is None:
                count = parse_int_range(token)
            elif not names and memory is None and count is None:
                names = _parse_names(token)
            else:
                raise ValueError(
                    f"cannot read {token!r} in GPU spec {text!r} "
                    "(expected [vendor:][names:][memory:][count], e.g. nvidia:A100,H100:80GB:2..)"
                )
        return cls(vendor=vendor, names=names, count=count or Range(1, 1), memory=memory)

    @classmethod
    def _parse_object(cls, value: dict[str, Any]) -> GPUSpec:
        allowed = {"vendor", "name", "count", "memory", "total_memory", "compute_capability"}
        unknown = set(value) - allowed
        if unknown:
            raise ValueError(f"unknown GPU property {sorted(unknown)[0]!r} (expected one of {', '.join(sorted(allowed))})")
        vendor = value.get("vendor")
        if vendor is not None:
            if str(vendor).lower() not in GPU_VENDORS:
                raise ValueError(f"unknown GPU vendor {vendor!r} (expected one of nvidia, amd, google, tpu, intel)")
            vendor = GPU_VENDORS[str(vendor).lower()]
        raw_names = value.get("name")
        if raw_names is None:
            names: tuple[str, ...] = ()
        elif isinstance(raw_names, list):
            names = tuple(_check_name(str(n)) for n in raw_names)
        else:
            names = _parse_names(str(raw_names))
        cc = value.get("compute_capability")
        if cc is not None:
            cc = str(cc)
            if not re.match(r"^\d+\.\d+$", cc):
                raise ValueError(f"expected a compute capability like 7.5, got {cc!r}")
        return cls(
            vendor=vendor,
            names=names,
            count=parse_int_range(value["count"]) if value.get("count") is not None else Range(1, 1),
            memory=parse_memory_range(value["memory"]) if value.get("memory") is not None else None,
            total_memory=parse_memory_range(value["total_memory"]) if value.get("total_memory") is not None else None,
            compute_capability=cc,
        )

    def format(self) -> str | dict[str, Any]:
        """The canonical string; the object form when total_memory or compute_capability is set
        (the string syntax has no place for them)."""
        if self.total_memory is not None or self.compute_capability is not None or any(
            ":" in n or "," in n or ".." in n for n in self.names
        ):
            out: dict[str, Any] = {}
            if self.vendor:
                out["vendor"] = self.vendor
            if self.names:
                out["name"] = list(self.names)
            out["count"] = self.count.format()
            if self.memory is not None:
                out["memory"] = format_memory_range(self.memory)
            if self.total_memory is not None:
                out["total_memory"] = format_memory_range(self.total_memory)
            if self.compute_capability is not None:
                out["compute_capability"] = self.compute_capability
            return out
        parts: list[str] = []
        if self.vendor:
            parts.append(self.vendor)
        if self.names:
            parts.append(",".join(self.names))
        if self.memory is not None:
            parts.append(format_memory_range(self.memory))
        if not parts or self.count != Range(1, 1):
            parts.append(self.count.format())
        return ":".join(parts)

    def describe(self) -> str:
        """Short human form for tables, always with the count, e.g. `L40S:1`, `A100:80GB:2`."""
        if self.total_memory is None and self.compute_capability is None:
            return self._short()
        extra = []
        if self.total_memory is not None:
            extra.append(f"total={format_memory_range(self.total_memory)}")
        if self.compute_capability:
            extra.append(f"cc>={self.compute_capability}")
        return f"{self._short()} ({' '.join(extra)})"

    def _short(self) -> str:
        parts = [p for p in (self.vendor, ",".join(self.names)) if p]
        if self.memory is not None:
            parts.append(format_memory_range(self.memory))
        parts.append(self.count.format())
        return ":".join(parts)

    def __str__(self) -> str:
        return self.describe()

    @property
    def none(self) -> bool:
        """True when no GPU is wanted (`gpu: 0`)."""
        return self.count.max == 0

    def to_runtime(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "names": list(self.names),
            "count": self.count.to_runtime(),
            "memory_bytes": (self.memory or Range(Memory(0), None)).to_runtime(lambda m: m.bytes),
        }


def _check_name(name: str) -> str:
    name = name.strip()
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.+\- ]*$", name):
        raise ValueError(f"expected a GPU name like A100 or RTX4090, got {name!r}")
    return name


def _parse_names(token: str) -> tuple[str, ...]:
    return tuple(_check_name(n) for n in token.split(","))


@dataclass(frozen=True)
class DiskSpec:
    """Disk requirements: `disk: 100GB..` or `disk: {size: 100GB..}`."""

    size: Range[Memory]

    @classmethod
    def parse(cls, value: Any) -> DiskSpec:
        if isinstance(value, DiskSpec):
            return value
        if isinstance(value, dict):
            if set(value) != {"size"}:
                raise ValueError("a disk object takes exactly one property, size (e.g. size: 100GB..)")
            return cls(parse_memory_range(value["size"]))
        return cls(parse_memory_range(value))

    def format(self) -> str:
        return format_memory_range(self.size)

    def __str__(self) -> str:
        return self.format()


_INT_RANGE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^\s*\d*\s*\.\.\s*\d*\s*$|^\s*\d+\s*$"},
        {"type": "object", "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}}, "additionalProperties": False},
    ]
}
_MEMORY_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([KMGTkmgt]?[Bb])?\s*$"}]
}
_MEMORY_RANGE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^[0-9.KMGTBkmgtb ]*(\.\.[0-9.KMGTBkmgtb ]*)?$"},
        {"type": "object", "properties": {"min": _MEMORY_SCHEMA, "max": _MEMORY_SCHEMA}, "additionalProperties": False},
    ]
}
_GPU_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "examples": ["A100:80GB:2", "24GB..", "H100,A100:4", "nvidia:2.."]},
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "vendor": {"enum": sorted(GPU_VENDORS)},
                "name": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                "count": _INT_RANGE_SCHEMA,
                "memory": _MEMORY_RANGE_SCHEMA,
                "total_memory": _MEMORY_RANGE_SCHEMA,
                "compute_capability": {"anyOf": [{"type": "string"}, {"type": "number"}]},
            },
        },
    ]
}

IntRange = Annotated[
    Range[int],
    PlainValidator(parse_int_range),
    PlainSerializer(lambda r: r.format(), return_type=str),
    WithJsonSchema(_INT_RANGE_SCHEMA),
]
MemoryRange = Annotated[
    Range[Memory],
    PlainValidator(parse_memory_range),
    PlainSerializer(format_memory_range, return_type=str),
    WithJsonSchema(_MEMORY_RANGE_SCHEMA),
]
MemoryValue = Annotated[
    Memory,
    PlainValidator(Memory.parse),
    PlainSerializer(lambda m: m.format(), return_type=str),
    WithJsonSchema(_MEMORY_SCHEMA),
]
GPUValue = Annotated[
    GPUSpec,
    PlainValidator(GPUSpec.parse),
    PlainSerializer(lambda g: g.format()),
    WithJsonSchema(_GPU_SCHEMA),
]
DiskValue = Annotated[
    DiskSpec,
    PlainValidator(DiskSpec.parse),
    PlainSerializer(lambda d: d.format(), return_type=str),
    WithJsonSchema(
        {"anyOf": [_MEMORY_RANGE_SCHEMA, {"type": "object", "properties": {"size": _MEMORY_RANGE_SCHEMA}, "required": ["size"], "additionalProperties": False}]}
    ),
]


CPU_ARCHES = ("x86", "arm")


class ResourcesSpec(BaseModel):
    """The resource requirements of a replica, a task node or a fleet node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: IntRange = Field("2..", validate_default=True, description="The number of CPU cores, a number or a range (e.g. `4..`).")
    memory: MemoryRange = Field(
        "8GB..", validate_default=True, description="The RAM size (e.g. `8GB`), or a range (`16GB..64GB`)."
    )
    shm_size: MemoryValue | None = Field(
        None, description="The size of shared memory (e.g. `16GB`); needed by parallel communicating processes such as PyTorch dataloaders."
    )
    gpu: GPUValue | None = Field(
        None,
        description="The GPU requirements: a count (`2`), a string (`A100`, `80GB:2`, `A100:40GB:2`, `H100,A100:4`, `nvidia:2..`, `24GB..`) or an object (vendor, name, count, memory, total_memory, compute_capability).",
    )
    disk: DiskValue = Field(
        "100GB..", validate_default=True, description="The disk size (`100GB..`), or an object with `size`."
    )

    _cpu_arch: str | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _arch(cls, data: Any, handler: Any) -> ResourcesSpec:
        # dstack's `cpu: x86:96..` / `arm:8` (or `{arch, count}`) names the CPU architecture in front of
        # the count; the count stays `cpu` and the architecture is kept beside it.
        arch = None
        if isinstance(data, dict) and "cpu" in data:
            cpu = data["cpu"]
            if isinstance(cpu, str) and ":" in cpu:
                arch, _, count = cpu.partition(":")
                data = {**data, "cpu": count or "1.."}
            elif isinstance(cpu, dict) and ("arch" in cpu or "count" in cpu):
                unknown = set(cpu) - {"arch", "count"}
                if unknown:
                    raise ValueError(f"cpu takes arch and count, not {', '.join(sorted(unknown))}")
                arch = cpu.get("arch")
                data = {**data, "cpu": cpu.get("count", "2..")}
        if arch is not None:
            arch = str(arch).strip().lower()
            if arch not in CPU_ARCHES:
                raise ValueError(f"expected a CPU architecture x86 or arm before the count, got {arch!r}")
        spec: ResourcesSpec = handler(data)
        spec._cpu_arch = arch
        return spec

    @property
    def cpu_arch(self) -> str | None:
        """`x86` or `arm` when the configuration names one (`cpu: arm:8`), else None (any)."""
        return self._cpu_arch

    @field_validator("cpu")
    @classmethod
    def _cpu_positive(cls, v: Range[int]) -> Range[int]:
        if v.max is not None and v.max == 0:
            raise ValueError("expected at least one CPU core")
        return v

    @property
    def wants_gpu(self) -> bool:
        return self.gpu is not None and not self.gpu.none

    def describe(self) -> str:
        """One line for summaries, as dstack prints it: `cpu=2.. mem=8GB.. disk=100GB.. L40S:1`."""
        arch = f"{self.cpu_arch}:" if self.cpu_arch else ""
        parts = [f"cpu={arch}{self.cpu.format()}", f"mem={format_memory_range(self.memory)}"]
        if self.shm_size is not None:
            parts.append(f"shm={self.shm_size.format()}")
        parts.append(f"disk={self.disk.format()}")
        if self.wants_gpu:
            assert self.gpu is not None
            parts.append(self.gpu.describe())
        return " ".join(parts)

    def to_runtime(self) -> dict[str, Any]:
        """The `resources` object of the controller's service definition (docs/runtime-api.md)."""
        return {
            "cpu": self.cpu.to_runtime(),
            "memory_bytes": self.memory.to_runtime(lambda m: m.bytes),
            "disk_bytes": self.disk.size.to_runtime(lambda m: m.bytes),
            "gpu": self.gpu.to_runtime() if self.gpu is not None and self.wants_gpu else None,
        }
