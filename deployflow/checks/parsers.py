"""Pure parsers for the reports check tools write: coverage, lint/type problems, audits.

Each parser takes the text a tool produced and returns plain data, or raises ``ReportError`` naming
what is wrong with the text. Nothing here runs a process or reads a file.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Any, Literal


class ReportError(ValueError):
    """The report is missing a piece, malformed, or says the tool could not do its job."""


class AuditSourceUnavailable(ReportError):
    """The audit tool could not reach its advisory source; its silence proves nothing."""


# ---------------------------------------------------------------------------------------- coverage


@dataclass(frozen=True)
class Coverage:
    """Line coverage measured by a report."""

    covered: int
    total: int

    @property
    def percent(self) -> float:
        """Covered lines in percent of measured lines."""
        return 100.0 * self.covered / self.total


def _coverage(covered: int, total: int, source: str) -> Coverage:
    if total <= 0:
        raise ReportError(f"{source} measured no lines (is the coverage target right?)")
    if covered < 0 or covered > total:
        raise ReportError(f"{source} says {covered} of {total} lines are covered, which cannot be")
    return Coverage(covered=covered, total=total)


def parse_cobertura(text: str) -> Coverage:
    """Line coverage from a Cobertura XML report (pytest-cov ``--cov-report=xml`` and others)."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise ReportError(f"Cobertura report is not valid XML: {exc}") from exc
    if root.tag != "coverage":
        raise ReportError(f"Cobertura report's root element is <{root.tag}>, expected <coverage>")
    covered, valid = root.get("lines-covered"), root.get("lines-valid")
    if covered is not None and valid is not None:
        try:
            return _coverage(int(covered), int(valid), "Cobertura report")
        except ValueError as exc:
            if isinstance(exc, ReportError):
                raise
            raise ReportError("Cobertura lines-covered/lines-valid are not integers") from exc
    # Some producers only write line-rate; count the <line> elements to get the totals.
    lines = root.findall(".//class/lines/line")
    if not lines:
        raise ReportError("Cobertura report has neither lines-covered/lines-valid nor <line> data")
    hits = sum(1 for line in lines if int(line.get("hits", "0") or 0) > 0)
    return _coverage(hits, len(lines), "Cobertura report")


def parse_lcov(text: str) -> Coverage:
    """Line coverage from an lcov tracefile: the sum of LH over the sum of LF of all records."""
    covered = total = records = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith(("LF:", "LH:")):
            try:
                value = int(line[3:])
            except ValueError as exc:
                raise ReportError(f"lcov line {number} has a non-integer count: {line!r}") from exc
            if line.startswith("LF:"):
                total += value
            else:
                covered += value
        elif line == "end_of_record":
            records += 1
    if records == 0:
        raise ReportError("lcov report has no records (no end_of_record line)")
    return _coverage(covered, total, "lcov report")


def parse_istanbul_summary(text: str) -> Coverage:
    """Line coverage from Istanbul/NYC/c8 ``coverage-summary.json`` (the ``total.lines`` entry)."""
    data = _load_json(text, "Istanbul coverage summary")
    try:
        lines = data["total"]["lines"]
        return _coverage(int(lines["covered"]), int(lines["total"]), "Istanbul coverage summary")
    except (KeyError, TypeError) as exc:
        raise ReportError(
            "Istanbul coverage summary has no total.lines.covered/total entry"
        ) from exc


def parse_coverage(text: str, report_format: Literal["cobertura", "lcov", "istanbul"]) -> Coverage:
    """Dispatch to the parser of ``report_format``."""
    if report_format == "cobertura":
        return parse_cobertura(text)
    if report_format == "lcov":
        return parse_lcov(text)
    return parse_istanbul_summary(text)


# ---------------------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One lint or type error, located in a file."""

    path: str
    line: int | None
    code: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.severity} {self.code}: {self.message}".replace(" : ", ": ")


def _load_json(text: str, what: str) -> Any:
    if not text.strip():
        raise ReportError(f"{what} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}") from exc


def parse_eslint_json(text: str, root: str = "") -> list[Problem]:
    """Problems from ``eslint --format json``; paths are made relative to ``root`` when under it."""
    files = _load_json(text, "ESLint JSON output")
    if not isinstance(files, list):
        raise ReportError("ESLint JSON output is not a list of file results")
    prefix = root.rstrip("/") + "/" if root else ""
    problems: list[Problem] = []
    for entry in files:
        if not isinstance(entry, dict) or not isinstance(entry.get("messages"), list):
            raise ReportError("ESLint JSON output has a file result without a messages list")
        path = str(entry.get("filePath", "?"))
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        for message in entry["messages"]:
            problems.append(
                Problem(
                    path=path,
                    line=message.get("line"),
                    code=str(message.get("ruleId") or "fatal"),
                    message=str(message.get("message", "")),
                    severity="error" if message.get("severity") == 2 else "warning",
                )
            )
    return problems


def parse_ruff_json(text: str, root: str = "") -> list[Problem]:
    """Problems from ``ruff check --output-format json``."""
    items = _load_json(text, "ruff JSON output")
    if not isinstance(items, list):
        raise ReportError("ruff JSON output is not a list of diagnostics")
    prefix = root.rstrip("/") + "/" if root else ""
    problems: list[Problem] = []
    for item in items:
        try:
            path = str(item["filename"])
            location = item.get("location") or {}
            problems.append(
                Problem(
                    path=path[len(prefix) :] if prefix and path.startswith(prefix) else path,
                    line=location.get("row"),
                    code=str(item.get("code") or "syntax"),
                    message=str(item["message"]),
                )
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ReportError("ruff JSON output has a diagnostic without filename/message") from exc
    return problems


_TSC = re.compile(
    r"^(?P<path>.+?)\((?P<line>\d+),\d+\): (?P<sev>error|warning) (?P<code>TS\d+): (?P<msg>.*)$"
)
_TSC_GLOBAL = re.compile(r"^(?P<sev>error|warning) (?P<code>TS\d+): (?P<msg>.*)$")


def parse_tsc(text: str) -> list[Problem]:
    """Problems from ``tsc --noEmit`` text output (``--pretty false`` or piped, which is plain)."""
    problems: list[Problem] = []
    for line in text.splitlines():
        if match := _TSC.match(line):
            problems.append(
                Problem(
                    path=match["path"],
                    line=int(match["line"]),
                    code=match["code"],
                    message=match["msg"],
                    severity="error" if match["sev"] == "error" else "warning",
                )
            )
        elif match := _TSC_GLOBAL.match(line):
            problems.append(
                Problem(path="(project)", line=None, code=match["code"], message=match["msg"])
            )
    return problems


_MYPY = re.compile(
    r"^(?P<path>[^:\n]+):(?P<line>\d+):(?:\d+:)? (?P<sev>error): "
    r"(?P<msg>.*?)(?:  \[(?P<code>[a-z0-9-]+)\])?$"
)


def parse_mypy(text: str) -> list[Problem]:
    """Errors from mypy's default text output (notes are context, not problems)."""
    problems: list[Problem] = []
    for line in text.splitlines():
        if match := _MYPY.match(line):
            problems.append(
                Problem(
                    path=match["path"],
                    line=int(match["line"]),
                    code=match["code"] or "mypy",
                    message=match["msg"],
                )
            )
    return problems


# ------------------------------------------------------------------------------------------ audits

SEVERITY_ORDER: dict[str, int] = {"info": 0, "low": 1, "moderate": 2, "high": 3, "critical": 4}


@dataclass(frozen=True)
class Vulnerability:
    """One vulnerable package as an audit reported it."""

    package: str
    severity: str | None  # None: the tool does not say (pip-audit)
    advisories: tuple[str, ...]
    version: str | None = None
    fix: str | None = None

    def at_or_above(self, threshold: str) -> bool:
        """True when this is at least as severe as ``threshold``; unknown severity counts as yes."""
        if self.severity is None:
            return True
        return SEVERITY_ORDER.get(self.severity, 4) >= SEVERITY_ORDER[threshold]

    def __str__(self) -> str:
        version = f" {self.version}" if self.version else ""
        severity = self.severity or "severity not reported"
        fix = f" (fix: {self.fix})" if self.fix else ""
        return f"{self.package}{version} [{severity}]: {', '.join(self.advisories)}{fix}"


@dataclass(frozen=True)
class AuditFindings:
    """Everything an audit report says."""

    vulnerabilities: list[Vulnerability]
    audited: int | None = None  # packages examined, when the tool says
    skipped: dict[str, str] = field(default_factory=dict)  # package -> why it was not audited


def parse_npm_audit(text: str) -> AuditFindings:
    """Findings from ``npm audit --json`` (report version 2, npm 7+; version 1 is also read)."""
    data = _load_json(text, "npm audit JSON output")
    if not isinstance(data, dict):
        raise ReportError("npm audit JSON output is not an object")
    if "error" in data or "statusCode" in data:
        error = data.get("error") or {}
        detail = (
            data.get("message")
            or (error.get("summary") if isinstance(error, dict) else None)
            or (error.get("code") if isinstance(error, dict) else None)
            or "no detail"
        )
        raise AuditSourceUnavailable(f"npm audit could not get advisories: {detail}")
    metadata = data.get("metadata")
    dependencies = metadata.get("dependencies") if isinstance(metadata, dict) else None
    audited = dependencies.get("total") if isinstance(dependencies, dict) else dependencies
    if isinstance(data.get("vulnerabilities"), dict):
        return AuditFindings(
            vulnerabilities=[
                _npm_v2_entry(name, entry) for name, entry in data["vulnerabilities"].items()
            ],
            audited=audited if isinstance(audited, int) else None,
        )
    if isinstance(data.get("advisories"), dict):
        return AuditFindings(
            vulnerabilities=[
                Vulnerability(
                    package=str(advisory.get("module_name", "?")),
                    severity=str(advisory.get("severity", "critical")),
                    advisories=(str(advisory.get("url") or advisory.get("title") or key),),
                )
                for key, advisory in data["advisories"].items()
            ],
            audited=audited if isinstance(audited, int) else None,
        )
    raise ReportError("npm audit JSON output has neither 'vulnerabilities' nor 'advisories'")


def _npm_v2_entry(name: str, entry: Any) -> Vulnerability:
    if not isinstance(entry, dict) or "severity" not in entry:
        raise ReportError(f"npm audit entry for {name!r} has no severity")
    advisories: list[str] = []
    for via in entry.get("via", []):
        if isinstance(via, dict):
            advisories.append(str(via.get("url") or via.get("title") or via.get("source")))
        else:
            # A string names the dependency through which this package is vulnerable.
            advisories.append(f"via {via}")
    fix = entry.get("fixAvailable")
    fix_text = None
    if isinstance(fix, dict):
        fix_text = f"{fix.get('name')}@{fix.get('version')}"
    elif fix is True:
        fix_text = "npm audit fix"
    return Vulnerability(
        package=name,
        severity=str(entry["severity"]),
        advisories=tuple(advisories) or ("no advisory listed",),
        version=str(entry["range"]) if entry.get("range") else None,
        fix=fix_text,
    )


def parse_pip_audit(text: str) -> AuditFindings:
    """Findings from ``pip-audit -f json``; dependencies it could not audit are kept as skipped."""
    data = _load_json(text, "pip-audit JSON output")
    if not isinstance(data, dict) or not isinstance(data.get("dependencies"), list):
        raise ReportError("pip-audit JSON output has no 'dependencies' list")
    vulnerabilities: list[Vulnerability] = []
    skipped: dict[str, str] = {}
    audited = 0
    for dependency in data["dependencies"]:
        if not isinstance(dependency, dict) or "name" not in dependency:
            raise ReportError("pip-audit JSON output has a dependency without a name")
        name = str(dependency["name"])
        if "skip_reason" in dependency:
            skipped[name] = str(dependency["skip_reason"])
            continue
        audited += 1
        for vuln in dependency.get("vulns", []):
            fixes = vuln.get("fix_versions") or []
            vulnerabilities.append(
                Vulnerability(
                    package=name,
                    severity=None,
                    advisories=(str(vuln.get("id")), *map(str, vuln.get("aliases", [])[:2])),
                    version=str(dependency.get("version")) if dependency.get("version") else None,
                    fix=", ".join(map(str, fixes)) or None,
                )
            )
    return AuditFindings(vulnerabilities=vulnerabilities, audited=audited, skipped=skipped)
