"""The flagd file flag provider and the flag rollout plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployflow.flags.flagd_file import FlagdFileProvider, flag_definition, rollout_of
from deployflow.flags.rollout import FlagStep, flag_rollout_plan
from deployflow.providers import registry
from deployflow.providers.base import BackendError, BuildContext, FlagProvider
from deployflow.spec import SpecError, parse_spec
from tests.samples import spec_data

pytestmark = pytest.mark.unit


def test_fractional_targeting_gives_the_share_of_users_the_on_variant() -> None:
    assert flag_definition(25)["targeting"] == {"fractional": [["on", 25], ["off", 75]]}
    assert flag_definition(25)["defaultVariant"] == "off"
    assert "targeting" not in flag_definition(100)
    assert flag_definition(100)["defaultVariant"] == "on"
    assert flag_definition(0)["defaultVariant"] == "off"
    for percent in (0, 5, 50, 100):
        assert rollout_of(flag_definition(percent)) == percent
    with pytest.raises(ValueError, match=r"0\.\.100"):
        flag_definition(101)


def test_changes_replace_the_file_whole_and_keep_other_flags(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    theirs = {"state": "ENABLED", "variants": {"a": "x"}, "defaultVariant": "a"}
    path.write_text(json.dumps({"$schema": "s", "flags": {"theirs": theirs}}))
    provider = FlagdFileProvider(path)
    assert isinstance(provider, FlagProvider)
    inode = path.stat().st_ino
    provider.set_rollout("new-checkout", 5)
    assert path.stat().st_ino != inode  # renamed over, never rewritten in place
    data = json.loads(path.read_text())
    assert data["flags"]["theirs"] == theirs
    assert provider.rollout("new-checkout") == 5
    provider.set_rollout("new-checkout", 0)
    assert provider.rollout("new-checkout") == 0
    assert provider.rollout("unknown") is None
    assert [p.name for p in tmp_path.iterdir()] == ["flags.json"]  # no temporary left behind
    assert path.stat().st_mode & 0o044 == 0o044  # readable by the service


def test_a_missing_file_is_created_and_a_broken_one_is_refused(tmp_path: Path) -> None:
    provider = FlagdFileProvider(tmp_path / "flags.json")
    assert provider.rollout("new-checkout") is None
    provider.set_rollout("new-checkout", 100)
    assert provider.rollout("new-checkout") == 100
    (tmp_path / "flags.json").write_text("{not json")
    with pytest.raises(BackendError, match="not valid JSON"):
        provider.rollout("new-checkout")
    with pytest.raises(BackendError, match="cannot write"):
        FlagdFileProvider(tmp_path / "missing" / "flags.json").set_rollout("x", 5)


def test_the_plan_takes_each_flag_through_every_step() -> None:
    assert flag_rollout_plan(["a", "b"], [50, 100]) == (
        FlagStep("a", 50),
        FlagStep("a", 100),
        FlagStep("b", 50),
        FlagStep("b", 100),
    )


def test_the_spec_flags_section_builds_a_provider_through_the_registry(tmp_path: Path) -> None:
    spec = parse_spec(
        spec_data(
            flags={
                "provider": {"kind": "flagd-file", "path": str(tmp_path / "f.json")},
                "release": ["new-checkout"],
            }
        )
    )
    assert spec.flags is not None
    assert spec.flags.steps == [5, 25, 50, 100]
    built = registry.build("flags", spec.flags.provider, BuildContext(env={}))
    assert built.describe() == f"flagd file {tmp_path / 'f.json'}"
    with pytest.raises(SpecError) as bad:
        parse_spec(
            spec_data(
                flags={"provider": {"kind": "launchdarkly"}, "release": [], "steps": [50, 20]}
            )
        )
    text = str(bad.value)
    assert "flags.provider" in text
    assert "flags.release" in text
    assert "flags.steps: steps must be strictly increasing" in text
