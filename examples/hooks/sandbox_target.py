"""Command-target hooks for the local sandbox: start, stop, list and tail the demo service.

An example of "your own commands" (see docs/configuration/backends.md, "command target"): here
they manage the demo app the way the sandbox itself does, sharing its state directory, so the
versions they start are scraped by the sandbox's Prometheus and the sandbox's v1 is listed too.

    python sandbox_target.py start VERSION      prints {"host": ..., "port": ..., "id": ...}
    python sandbox_target.py stop VERSION
    python sandbox_target.py status             prints [{"version": ..., "host": ..., ...}]
    python sandbox_target.py logs VERSION LINES

Environment: SANDBOX_STATE_DIR (the sandbox's state directory), DEPLOYFLOW_DEMO_FAULTS (passed on
to the versions it starts), SANDBOX_HOST (the address versions listen on; `deployflow sandbox
--host`). Run it with the project's interpreter (it imports deployflow).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from deployflow.sandbox.supervisor import sandbox_target


def main(argv: list[str]) -> int:
    faults = os.environ.get("DEPLOYFLOW_DEMO_FAULTS", "")
    target = sandbox_target(
        Path(os.environ["SANDBOX_STATE_DIR"]),
        env={"DEPLOYFLOW_DEMO_FAULTS": faults} if faults else None,
        host=os.environ.get("SANDBOX_HOST", "127.0.0.1"),
    )
    action = argv[0]
    if action == "start":
        instance = target.start(argv[1])
        print(
            json.dumps({"host": instance.host, "port": instance.port, "id": f"pid-{instance.pid}"})
        )
    elif action == "stop":
        target.stop(argv[1])
    elif action == "status":
        listed = [
            {"version": i.version, "host": i.host, "port": i.port} for i in target.instances()
        ]
        print(json.dumps(listed))
    elif action == "logs":
        print(target.logs(argv[1], lines=int(argv[2])))
    else:
        print(f"unknown action {action!r}: start, stop, status or logs", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
