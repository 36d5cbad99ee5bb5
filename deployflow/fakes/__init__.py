"""Local stand-ins for external APIs, shipped with deployflow (as httpx ships ``MockTransport``).

Each fake is a real server on a free loopback port that speaks the real wire protocol, so the real
client library is exercised end to end by the tests and the sandbox.
"""
