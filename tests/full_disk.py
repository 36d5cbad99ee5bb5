"""A real full (or read-only) filesystem for tests: a tiny tmpfs mounted under the test's tmp dir
and filled until it refuses a byte, unmounted after. Mounting needs root (CAP_SYS_ADMIN); where
it fails the test is skipped, saying why."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size_kib: int = 256) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` KiB mounted at ``path`` (created), unmounted on exit."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "a real full filesystem needs a tmpfs mounted (root with CAP_SYS_ADMIN); `mount` "
            f"said: {mounted.stderr.strip() or mounted.returncode}"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False, capture_output=True)


def fill(path: Path) -> int:
    """Write to ``path/filler`` until the filesystem refuses (ENOSPC); returns the bytes
    written. Asserts it really refuses a byte afterwards."""
    written = 0
    refused: OSError | None = None
    with (path / "filler").open("wb", buffering=0) as filler:
        chunk = b"\0" * 4096
        while refused is None:
            try:
                written += filler.write(chunk) or 0
            except OSError as exc:
                refused = exc
    assert refused.errno == errno.ENOSPC, refused
    with pytest.raises(OSError, match="No space left"):
        (path / "probe").write_bytes(b"x" * 4096)
    return written


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
