"""A report's copies are written in order, the tracking database and the Prefect artifact first,
the file under the data dir last; a copy that fails is named with why and loses no other."""

from __future__ import annotations

import errno

from deployflow.notify.evidence import failure_words, keep_copies


def test_every_copy_is_tried_in_order_and_a_full_disk_loses_only_the_file() -> None:
    written: list[str] = []

    def file() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/reports/demo-3/report.md")

    copies = keep_copies(
        [
            ("the tracking database", lambda: written.append("database")),
            ("the Prefect artifact", lambda: written.append("artifact")),
            ("its file", file),
        ]
    )
    assert written == ["database", "artifact"]
    assert copies.kept == ("the tracking database", "the Prefect artifact")
    assert copies.lost == (
        ("its file", "No space left on device (/data/reports/demo-3/report.md)"),
    )


def test_a_copy_that_fails_first_does_not_stop_the_ones_after_it() -> None:
    written: list[str] = []

    def database() -> None:
        raise RuntimeError("connection refused\nbackground on this error at ...")

    copies = keep_copies(
        [
            ("the tracking database", database),
            ("the Prefect artifact", lambda: written.append("artifact")),
            ("its file", lambda: written.append("file")),
        ]
    )
    assert written == ["artifact", "file"]
    assert copies.lost == (("the tracking database", "RuntimeError: connection refused"),)


def test_a_read_only_or_forbidden_data_dir_is_said_in_words() -> None:
    assert failure_words(OSError(errno.EROFS, "Read-only file system", "/d")) == (
        "Read-only file system (/d)"
    )
    assert failure_words(PermissionError(errno.EACCES, "Permission denied")) == "Permission denied"
