"""What doctor reports: findings, the checks it skipped and why, and how a finding names what it is about."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["high", "medium", "low"]
SEVERITY_ORDER: dict[str, int] = {"high": 0, "medium": 1, "low": 2}

# The option that names the listener's own DSN; findings about that DSN say so.
LISTENER_DSN_OPTION = "--listener-dsn"


@dataclass(frozen=True)
class Finding:
    """One problem: a stable check id, how bad it is, what it is about, and the one-line fix."""

    check: str
    severity: Severity
    object: str
    message: str
    fix: str


@dataclass(frozen=True)
class NotChecked:
    """A check doctor did not run, and why: not a finding, and no verdict either way."""

    check: str
    reason: str


@dataclass
class Report:
    """Everything doctor found, worst first, the checks it skipped, and lines of context that are not problems."""

    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    not_checked: list[NotChecked] = field(default_factory=list)
    ledger_installed: bool = False

    @property
    def has_high(self) -> bool:
        """Whether any finding is high, which makes the command exit non-zero."""
        return any(f.severity == "high" for f in self.findings)

    def as_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return {
            "ledger_installed": self.ledger_installed,
            "high": sum(f.severity == "high" for f in self.findings),
            "findings": [asdict(f) for f in self.findings],
            "not_checked": [asdict(n) for n in self.not_checked],
            "notes": list(self.notes),
        }


Row = Mapping[str, Any]


def dsn_label(listener: bool) -> str:
    """The DSN a finding is about, in words: --listener-dsn's when listener."""
    return "the listener's DSN" if listener else "the DSN"


def quote(name: str) -> str:
    """An identifier double-quoted, for a fix to paste."""
    return '"' + name.replace('"', '""') + '"'


def role_name(name: str) -> str:
    """A role as a REVOKE names it: PUBLIC and plain lower-case names bare, any other quoted."""
    return name if name == "PUBLIC" or re.fullmatch(r"[a-z_][a-z0-9_]*", name) else quote(name)


def quote_ident(name: str) -> str:
    """An identifier bare when it can be, else quoted."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else quote(name)
