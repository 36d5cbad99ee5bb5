"""The local sandbox: real HAProxy, Prometheus, PostgreSQL and app processes on loopback."""
