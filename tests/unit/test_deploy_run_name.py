"""A deploy's run name says the service, the version and the environment, whichever way the
service was given; working it out never fails the run."""

from __future__ import annotations

from pathlib import Path

from deployflow.release import run_name, service_named
from tests.samples import nothing_running_spec


class Block:
    spec = nothing_running_spec("payments")


def test_the_service_comes_from_the_block_or_the_spec_file(tmp_path: Path):
    spec = tmp_path / "shop.yaml"
    spec.write_text(nothing_running_spec("shop"))
    assert run_name(None, str(spec), "v2", "production") == "deploy shop v2 to production"
    assert service_named(Block(), str(spec)) == "payments"  # the chosen block wins
    assert service_named({"spec": "service: billing\n"}, None) == "billing"


def test_an_unreadable_spec_names_the_file_and_nothing_chosen_says_so(tmp_path: Path):
    assert service_named(None, str(tmp_path / "gone.yaml")) == "gone.yaml"
    broken = tmp_path / "broken.yaml"
    broken.write_text("service: [unclosed\n")
    assert service_named(None, str(broken)) == "broken.yaml"
    assert service_named(None, None) == "(no service chosen)"
