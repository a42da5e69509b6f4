"""Time to validate 1,000 services in 100 files (target: under 2 s).

Prints the loader's time (read, YAML with marks, models, cross-document checks) next to a peer
measured in the same run on the same files: plain `yaml.load_all` with PyYAML's fastest loader,
which only parses and checks nothing. Usage: python bench/validate.py [--files 100] [--per-file 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from gpustack_iac.spec.loader import load_paths

SERVICE = """\
type: service
name: svc-{f}-{i}
port: 8000
python: "3.11"
env:
  - MODEL=org/model-{i}
  - HF_TOKEN
commands:
  - pip install vllm
  - vllm serve $MODEL --port 8000
model: org/model-{f}-{i}
probes:
  - url: /health
    interval: 5
scaling:
  metric: rps
  target: 10
replica_groups:
  - name: l40s
    replicas: 1..3
    regions: [eu-west-1]
    resources:
      gpu: L40S:48GB:1
      memory: 32GB..
  - name: a100
    replicas: 0..2
    spot_policy: spot
    resources:
      gpu: A100:80GB:2
      disk: 200GB..
"""


def write_corpus(root: Path, files: int, per_file: int) -> None:
    for f in range(files):
        docs = [SERVICE.format(f=f, i=i) for i in range(per_file)]
        (root / f"svc-{f:03d}.gpustack.yml").write_text("---\n".join(docs))


def _time(fn: object, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--per-file", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_corpus(root, args.files, args.per_file)
        total = args.files * args.per_file
        env = {"HF_TOKEN": "hf_bench"}

        def ours() -> None:
            spec = load_paths([root], env)
            assert len(spec.services) == total

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        def peer() -> None:
            count = 0
            for path in sorted(root.glob("*.gpustack.yml")):
                count += sum(1 for _ in yaml.load_all(path.read_text(), Loader=loader))
            assert count == total

        ours()  # warm-up: imports, pydantic's validators
        ours_times = _time(ours, args.rounds)
        peer_times = _time(peer, args.rounds)
    best, median = min(ours_times), statistics.median(ours_times)
    peer_best = min(peer_times)
    print(f"validate {total} services in {args.files} files ({args.rounds} rounds)")
    print(f"  gpustack-iac load_paths : best {best:.3f} s, median {median:.3f} s  ({best / total * 1e6:.0f} µs/service)")
    print(f"  peer: yaml.load_all ({loader.__name__}, parse only): best {peer_best:.3f} s")
    print(f"  ratio to parse-only peer: {best / peer_best:.1f}x; target < 2 s: {'met' if best < 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
