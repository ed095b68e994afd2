"""The HIL report: one row per scenario (JUnit XML has the details) and the rig's facts.

Never a clinical value here: scenarios record only timings, counts, device models, firmware and
serial numbers (invariant 3).
"""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPORT_DIR = Path(__file__).resolve().parents[1] / "report"


@dataclass
class Row:
    scenario: str
    result: str = "passed"
    duration_s: float = 0.0
    reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class HilReport:
    rig: str
    profile_path: str
    rows: dict[str, Row] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self, nodeid: str) -> Row:
        name = nodeid.split("::", 1)[-1]
        return self.rows.setdefault(nodeid, Row(name))

    def add_facts(self, facts: dict[str, Any]) -> None:
        """Merge what a rig learnt about itself; devices are keyed by name."""
        devices = {d["name"]: d for d in self.facts.get("devices", [])}
        for d in facts.get("devices", []):
            devices[d["name"]] = {**devices.get(d["name"], {}), **d}
        self.facts.update({k: v for k, v in facts.items() if k != "devices" and v is not None})
        self.facts["devices"] = list(devices.values())

    def as_json(self) -> dict[str, Any]:
        rows = list(self.rows.values())
        return {
            "rig": self.rig,
            "profile": self.profile_path,
            "started": self.started.isoformat(),
            "finished": datetime.now(UTC).isoformat(),
            "host": platform.node(),
            "suite_commit": _git_describe(),
            **self.facts,
            "scenarios": [
                {"scenario": r.scenario, "result": r.result, "duration_s": round(r.duration_s, 2),
                 **({"reason": r.reason} if r.reason else {}),
                 **({"timings_s": r.timings} if r.timings else {})}
                for r in rows
            ],
            "totals": {res: sum(r.result == res for r in rows)
                       for res in ("passed", "failed", "skipped", "error")},
        }

    def write(self) -> Path:
        REPORT_DIR.mkdir(exist_ok=True)
        path = REPORT_DIR / "rig-report.json"
        path.write_text(json.dumps(self.as_json(), indent=2, sort_keys=False) + "\n")
        return path

    def table(self) -> list[str]:
        rows = list(self.rows.values())
        width = max([len(r.scenario) for r in rows] + [8])
        lines = [f"{'scenario':<{width}}  {'result':<7}  {'time':>7}  reason / timings",
                 "-" * (width + 40)]
        for r in rows:
            extra = r.reason or ", ".join(f"{k} {v:.1f}s" for k, v in r.timings.items())
            lines.append(f"{r.scenario:<{width}}  {r.result:<7}  {r.duration_s:6.1f}s  {extra}")
        return lines

    def fact_lines(self) -> list[str]:
        f = self.as_json()
        lines = [f"rig {f['rig']} ({f['profile']}) on {f['host']}",
                 f"software: {f.get('software', 'unknown')} (suite {f['suite_commit']})",
                 f"adapter: {f.get('adapter') or '-'}"]
        if f.get("network"):
            lines.append(f"network: {f['network']}")
        for d in f.get("devices", []):
            ident = d.get("serial_number") or d.get("address") or ""
            lines.append(
                f"  {d['name']:<14} {d.get('transport', ''):<7} {d.get('model', '?'):<26} "
                f"fw {d.get('firmware', '?'):<10} {ident:<18} ({d.get('source', 'profile')})"
            )
        return lines


def _git_describe() -> str:
    try:
        proc = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, timeout=10, check=False, cwd=REPORT_DIR.parent)
    except OSError:
        return "unknown"
    return proc.stdout.strip() or "unknown"
