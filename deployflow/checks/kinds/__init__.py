"""One module per pre-deployment check kind; ``deployflow.checks.runner`` dispatches to them.

Each module exposes ``check_<kind>(section, checkout, ctx) -> CheckResult`` for the runner's
registry. What several kinds share (running the command, error results, git ref handling) is in
``common``.
"""
