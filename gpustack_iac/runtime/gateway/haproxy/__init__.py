"""HAProxy as the gateway's data plane; the Python gateway renders its configuration and drives it (docs/gateway.md)."""
