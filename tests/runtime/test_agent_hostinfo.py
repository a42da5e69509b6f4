"""Host facts: the nvidia-smi parser on captured output, and detection on this machine."""

from __future__ import annotations

import shutil

from gpustack_iac.runtime.agent.hostinfo import Gpu, detect_docker, detect_gpus, parse_nvidia_smi

MIB = 1024 * 1024

# Output of `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`
# as printed on an 8x H100 SXM machine (first and last lines kept) ...
H100_SXM = """0, NVIDIA H100 80GB HBM3, 81559
7, NVIDIA H100 80GB HBM3, 81559
"""
# ... on a mixed workstation, with the driver's trailing spaces ...
MIXED = "0, NVIDIA A100-SXM4-40GB, 40960  \n1, Tesla T4, 15360\n2, NVIDIA L40S, 46068\n"
# ... and when a GPU has fallen off the bus (nvidia-smi then prints an error line and [N/A] fields).
DEGRADED = """0, NVIDIA GeForce RTX 4090, 24564
Unable to determine the device handle for GPU0000:02:00.0: Unknown Error
1, [N/A], [N/A]
"""


def test_parses_h100_output() -> None:
    assert parse_nvidia_smi(H100_SXM) == [
        Gpu(index=0, name="NVIDIA H100 80GB HBM3", vendor="nvidia", memory_bytes=81559 * MIB),
        Gpu(index=7, name="NVIDIA H100 80GB HBM3", vendor="nvidia", memory_bytes=81559 * MIB),
    ]


def test_parses_mixed_gpus_and_trims_spaces() -> None:
    gpus = parse_nvidia_smi(MIXED)
    assert [(g.index, g.name, g.memory_bytes // MIB) for g in gpus] == [
        (0, "NVIDIA A100-SXM4-40GB", 40960),
        (1, "Tesla T4", 15360),
        (2, "NVIDIA L40S", 46068),
    ]


def test_skips_error_lines_and_unavailable_gpus() -> None:
    assert [g.index for g in parse_nvidia_smi(DEGRADED)] == [0]


def test_empty_output_is_no_gpus() -> None:
    assert parse_nvidia_smi("") == []
    assert parse_nvidia_smi("No devices were found\n") == []


def test_detection_on_this_machine() -> None:
    gpus = detect_gpus()
    if shutil.which("nvidia-smi") is None:
        assert gpus == []
    else:
        assert all(g.vendor == "nvidia" and g.memory_bytes > 0 for g in gpus)
    if shutil.which("docker") is None:
        assert detect_docker() is False
