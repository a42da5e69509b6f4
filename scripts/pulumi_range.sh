#!/usr/bin/env bash
# Run the README's test command against one Pulumi SDK of the supported range (pyproject.toml:
# pulumi>=3.270.0,<3.273), so each version of the range is one command:
#
#   scripts/pulumi_range.sh 3.270.0            # whole suite, as README.md / .ci/run run it
#   scripts/pulumi_range.sh 3.271.0 tests/engine   # extra arguments replace the test selection
#
# The SDK is installed into this checkout's .venv after the test extra (which would otherwise pull
# the newest allowed one back in), the version actually imported is printed, and the venv is left on
# that version: run `.venv/bin/pip install -q -e '.[test]'` with no pin, or this script with the newest
# version, to return. The engine's private SDK hooks are version-gated (engine/embedded/sdk_hooks.py).
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:?usage: scripts/pulumi_range.sh PULUMI_VERSION [pytest arguments...]}"
shift
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
.venv/bin/pip install -q "pulumi==${version}"
got="$(.venv/bin/python -c 'from importlib.metadata import version; print(version("pulumi"))')"
[ "$got" = "$version" ] || { echo "pulumi $got is installed, not $version" >&2; exit 1; }
echo "pulumi SDK $got"
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m pytest -q -n 2 "$@"
fi
exec .venv/bin/python -m pytest -q -n 2
