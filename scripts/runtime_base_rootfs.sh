#!/usr/bin/env bash
# A minimal base for the runtime image where no registry is reachable (CI, air-gapped builders):
# this machine's Debian Python 3.11 (/usr/bin/python3.11, its standard library and the shared
# libraries they load), CA certificates, and a static busybox as /bin/sh, imported with
# `podman import` as the image named by $1 (default localhost/gpustack-runtime-base:py3.11).
set -euo pipefail
name="${1:-localhost/gpustack-runtime-base:py3.11}"
python=/usr/bin/python3.11
[ -x "$python" ] || { echo "needs Debian's python3.11 at $python (apt-get install python3.11)" >&2; exit 1; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,usr/bin,usr/lib,etc/ssl/certs,tmp,lib64}
chmod 1777 "$root/tmp"
cp -a "$python" "$root/usr/bin/python3.11"
ln -s python3.11 "$root/usr/bin/python3"
# The standard library, without its tests and GUI toolkits.
tar -C /usr/lib -c --exclude='python3.11/test' --exclude='python3.11/idlelib' --exclude='python3.11/tkinter' \
    --exclude='__pycache__' python3.11 | tar -C "$root/usr/lib" -x
# Every shared library the interpreter and its extension modules load, at the same paths, and
# the ones the manylinux policy lets binary wheels (pydantic-core, uvloop, ...) expect.
manylinux() { ldconfig -p | awk -v n="$1" '!found && $1 == n && /x86-64|x86_64|AArch64/ {print "=> " $NF; found = 1}'; }  # reads all: no SIGPIPE
{ ldd "$python"; find /usr/lib/python3.11/lib-dynload -name '*.so' -exec ldd {} \; ;
  for lib in libgcc_s.so.1 libstdc++.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libutil.so.1; do manylinux "$lib"; done
} 2>/dev/null \
    | grep -o '/[^ ]*\.so[^ ]*' | sort -u | while read -r lib; do
        mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
    done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/" 2>/dev/null || true
if command -v busybox >/dev/null && ! ldd "$(command -v busybox)" >/dev/null 2>&1; then  # static only
    cp -L "$(command -v busybox)" "$root/bin/busybox" && ln -s busybox "$root/bin/sh"
fi
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
tar -C "$root" -c . | podman import --change 'CMD ["/usr/bin/python3"]' - "$name" >/dev/null
echo "$name"
