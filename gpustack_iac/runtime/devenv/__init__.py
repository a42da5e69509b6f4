"""Dev environments: an sshd the user's IDE attaches to, stopped after a time without sessions."""

# The line the dev environment prints once sshd listens: "<marker> <address> <port> <host key>".
READY_MARKER = "gpustack-devenv: ready"
