"""The resource mini-language: examples from the reference, runtime shape, and a round-trip property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpustack_iac.spec.resources import (
    DiskSpec,
    GPUSpec,
    Memory,
    Range,
    ResourcesSpec,
    parse_int_range,
    parse_memory_range,
)

GB = 1024**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A100:80GB:2", GPUSpec(names=("A100",), memory=Range(Memory(80 * GB), Memory(80 * GB)), count=Range(2, 2))),
        ("24GB..", GPUSpec(memory=Range(Memory(24 * GB), None))),
        ("H100,A100:4", GPUSpec(names=("H100", "A100"), count=Range(4, 4))),
        ("nvidia:2..", GPUSpec(vendor="nvidia", count=Range(2, None))),
        ("A100:40GB:2", GPUSpec(names=("A100",), memory=Range(Memory(40 * GB), Memory(40 * GB)), count=Range(2, 2))),
        ("nvidia", GPUSpec(vendor="nvidia")),
        ("A10G,A100", GPUSpec(names=("A10G", "A100"))),
        ("24GB..40GB:2", GPUSpec(memory=Range(Memory(24 * GB), Memory(40 * GB)), count=Range(2, 2))),
        ("tpu:v5litepod", GPUSpec(vendor="google", names=("v5litepod",))),
        (2, GPUSpec(count=Range(2, 2))),
        (
            {"vendor": "amd", "name": ["MI300X"], "count": "1..2", "memory": "192GB", "total_memory": "192GB..", "compute_capability": 9.0},
            GPUSpec(
                vendor="amd",
                names=("MI300X",),
                count=Range(1, 2),
                memory=Range(Memory(192 * GB), Memory(192 * GB)),
                total_memory=Range(Memory(192 * GB), None),
                compute_capability="9.0",
            ),
        ),
    ],
)
def test_gpu_examples_of_the_reference_parse(text: object, expected: GPUSpec) -> None:
    assert GPUSpec.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A100:xx:yy", "cannot read"),
        ("A100::2", "empty part"),
        ("A100:80GB:4..2", "greater than maximum"),
        ({"vendor": "ibm"}, "unknown GPU vendor"),
        ({"nme": "A100"}, "unknown GPU property 'nme'"),
        (True, "expected a GPU spec"),
    ],
)
def test_gpu_bad_values_say_what_is_expected(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GPUSpec.parse(text)


def test_memory_units_and_bare_numbers() -> None:
    assert Memory.parse("512MB").bytes == 512 * 1024**2
    assert Memory.parse("1TB") == Memory(1024 * GB)
    assert Memory.parse(8) == Memory(8 * GB)  # a bare number is gigabytes
    assert Memory.parse("0.5GB").format() == "512MB"
    assert parse_memory_range("..80GB") == Range(None, Memory(80 * GB))
    assert parse_int_range("2..") == Range(2, None)
    assert parse_int_range({"min": 1, "max": 3}) == Range(1, 3)


def test_defaults_follow_the_reference() -> None:
    r = ResourcesSpec()
    assert (r.cpu.format(), r.memory.format(Memory.format), r.disk.format()) == ("2..", "8GB..", "100GB..")
    assert r.gpu is None and not r.wants_gpu


def test_to_runtime_matches_the_service_definition_contract() -> None:
    r = ResourcesSpec.model_validate({"cpu": "1..", "memory": "64MB..", "disk": "0GB..", "gpu": "nvidia:L40S:48GB:1..2"})
    assert r.to_runtime() == {
        "cpu": {"min": 1, "max": None},
        "memory_bytes": {"min": 64 * 1024**2, "max": None},
        "disk_bytes": {"min": 0, "max": None},
        "gpu": {
            "vendor": "nvidia",
            "names": ["L40S"],
            "count": {"min": 1, "max": 2},
            "memory_bytes": {"min": 48 * GB, "max": 48 * GB},
        },
    }
    assert ResourcesSpec.model_validate({"gpu": 0}).to_runtime()["gpu"] is None


# ------------------------------------------------------------------ round trip: parse(format(x)) == x

_memory = st.builds(
    Memory,
    st.one_of(
        st.integers(min_value=0, max_value=4 * 1024**4),
        st.integers(min_value=0, max_value=4096).map(lambda n: n * GB),
        st.integers(min_value=1, max_value=4096).map(lambda n: n * 1024**2),
    ),
)


def _ranges(item: st.SearchStrategy) -> st.SearchStrategy:
    def build(pair: tuple[object, object]) -> Range:
        lo, hi = pair
        if lo is not None and hi is not None and lo > hi:  # type: ignore[operator]
            lo, hi = hi, lo
        return Range(lo, hi)

    return st.tuples(st.none() | item, st.none() | item).filter(lambda p: p != (None, None)).map(build)


_int_ranges = _ranges(st.integers(min_value=0, max_value=512))
_memory_ranges = _ranges(_memory)
_gpu_names = st.from_regex(r"\A[A-Z][A-Z0-9]{1,6}\Z").filter(lambda n: n.lower() not in ("amd", "tpu"))
_gpus = st.builds(
    GPUSpec,
    vendor=st.none() | st.sampled_from(["nvidia", "amd", "google", "intel"]),
    names=st.lists(_gpu_names, max_size=3, unique=True).map(tuple),
    count=_int_ranges,
    memory=st.none() | _memory_ranges,
    total_memory=st.none() | _memory_ranges,
    compute_capability=st.none() | st.sampled_from(["7.0", "7.5", "8.0", "8.9", "9.0"]),
)


@settings(max_examples=300, deadline=None)
@given(_memory)
def test_memory_round_trips(m: Memory) -> None:
    assert Memory.parse(m.format()) == m


@settings(max_examples=300, deadline=None)
@given(_int_ranges)
def test_int_range_round_trips(r: Range[int]) -> None:
    assert parse_int_range(r.format()) == r


@settings(max_examples=300, deadline=None)
@given(_memory_ranges)
def test_memory_range_round_trips(r: Range[Memory]) -> None:
    assert parse_memory_range(r.format(Memory.format)) == r


@settings(max_examples=500, deadline=None)
@given(_gpus)
def test_gpu_round_trips(g: GPUSpec) -> None:
    assert GPUSpec.parse(g.format()) == g


@settings(max_examples=200, deadline=None)
@given(
    cpu=_int_ranges.filter(lambda r: r.max != 0),
    memory=_memory_ranges,
    shm=st.none() | _memory,
    gpu=st.none() | _gpus,
    disk=_memory_ranges.map(DiskSpec),
)
def test_resources_round_trip_through_yaml_values(
    cpu: Range[int], memory: Range[Memory], shm: Memory | None, gpu: GPUSpec | None, disk: DiskSpec
) -> None:
    spec = ResourcesSpec(cpu=cpu, memory=memory, shm_size=shm, gpu=gpu, disk=disk)
    dumped = spec.model_dump(mode="json")  # the strings (and objects) a user would write
    assert ResourcesSpec.model_validate(dumped) == spec
