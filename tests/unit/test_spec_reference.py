"""The configuration reference is generated from the spec's models and kept current by lint."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployflow.spec import AnalysisSpec, ServiceSpec
from deployments import spec_reference

pytestmark = pytest.mark.unit


def test_every_key_of_the_spec_and_its_sections_is_listed() -> None:
    page = spec_reference.render()
    for name in ServiceSpec.model_fields:
        assert f"| `{name}` |" in page
    for name in AnalysisSpec.model_fields:
        assert f"| `{name}` |" in page
    # One table per backend kind, reached from the top level by a link.
    assert "## `router` with `kind: nginx` {#router-nginx}" in page
    assert "[`nginx`](#router-nginx)" in page


def test_types_and_defaults_are_written_as_a_spec_author_writes_them() -> None:
    page = spec_reference.render()
    assert "| `interval` | duration | `30s` |" in page
    assert "| `service` | string (matching `^[a-z0-9][a-z0-9-]{0,62}$`) | *required* |" in page
    assert "| `pre_checks` | [object](#pre-checks) | *not set* |" in page
    assert "| `concurrency` | `wait` or `refuse` | `refuse` |" in page
    assert "| `steps` | list of integer (≥ 1, ≤ 100) or [object]" in page


def test_check_fails_when_the_committed_file_is_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "spec.md"
    assert spec_reference.main(["--output", str(output)]) == 0
    assert spec_reference.main(["--check", "--output", str(output)]) == 0
    output.write_text(output.read_text().replace("| `interval` |", "| `intervals` |"))
    capsys.readouterr()
    assert spec_reference.main(["--check", "--output", str(output)]) == 1
    assert "make spec-reference" in capsys.readouterr().out
