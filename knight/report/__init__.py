"""The report a person wants to look at: plots and pages built from a Knight database.

`build_report` makes the self-contained HTML file of `knight report`; `knight.report.live`
serves the same run pages over HTTP while runs progress.
"""

from knight.report.build import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]
