"""A service spec saved on the Prefect server, so the deploy form offers services by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field

from deployflow.spec import ServiceSpec, check_spec_text, spec_from_text


class ServiceSpecBlock(Block):
    """One service's spec (the YAML of a spec file), chosen by name in the deploy form.

    The YAML is validated when the block is saved from Python (``save``), by the same loader as a
    spec file: a block that would fail a deploy cannot be saved, and the error names each field.
    The Prefect UI saves a block's fields without running this code, so a deploy checks the spec
    again when it loads the block (``get_spec``): a bad one ends the run before anything starts,
    with one line naming each field (a block that does not validate still loads, so the run can
    say so rather than fail resolving its parameters). What depends on the machine that runs the
    deploy is checked there too: ``${VAR}`` references not set where the block is saved, programs
    named in the spec, relative paths.

    Attributes:
        spec: The spec's YAML text.
        base_dir: Folder relative paths in the spec resolve against; empty: the flow run's working
            directory (the deployment's checkout, after prefect.yaml's pull step).

    Example:
        ```python
        from pathlib import Path
        from blocks import ServiceSpecBlock

        ServiceSpecBlock(spec=Path("examples/sandbox.yaml").read_text()).save("sandbox-shop")
        spec = ServiceSpecBlock.load("sandbox-shop").get_spec()
        ```
    """

    _block_type_name = "ServiceSpec"
    _description = "A service's deployflow spec (YAML), offered by name in the deploy form."
    # An error names the fields and problems, never echoes the YAML it was given.
    model_config = ConfigDict(hide_input_in_errors=True)

    spec: str = Field(
        description="The service spec as YAML, exactly as in a spec file (examples/sandbox.yaml).",
        json_schema_extra={"format": "text"},
    )
    base_dir: str | None = Field(
        default=None,
        description="Folder the spec's relative paths resolve against on the machine running the "
        "deploy; empty: the flow run's working directory (the deployment's checkout).",
    )

    def check(self) -> None:
        """Check the spec as far as this machine can, without ``${VAR}`` references it does not
        set (what ``save`` runs).

        Raises:
            SpecError: Every problem, naming the block and each field (never echoing the YAML).
        """
        check_spec_text(self.spec, self.describe())

    def save(self, name: str | None = None, overwrite: bool = False, client: Any = None) -> Any:
        """Save the block as ``name``, once ``check`` passed (see ``Block.save``).

        Raises:
            SpecError: The spec is invalid; nothing was saved.
        """
        self.check()
        return super().save(name=name, overwrite=overwrite, client=client)

    async def asave(
        self, name: str | None = None, overwrite: bool = False, client: Any = None
    ) -> Any:
        """``save`` from async code.

        Raises:
            SpecError: The spec is invalid; nothing was saved.
        """
        self.check()
        return await super().asave(name=name, overwrite=overwrite, client=client)

    def describe(self) -> str:
        """How logs and errors name this block."""
        return f"ServiceSpec block {self._block_document_name or '(unsaved)'!r}"

    def get_spec(self) -> ServiceSpec:
        """The validated spec, relative paths resolved, programs checked on this machine.

        Raises:
            SpecError: Every problem, naming the block and each field.
        """
        base = Path(self.base_dir) if self.base_dir else Path.cwd()
        source = f"{self.describe()} (relative paths resolved against {base})"
        return spec_from_text(self.spec, source, base)
