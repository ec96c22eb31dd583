"""The report a person wants to look at: plots and pages built from a Knight database.

`knight.report.build.build_report` makes the self-contained HTML file of `knight report`;
`knight.report.live.make_router` serves the same run pages over HTTP while runs progress.
Nothing is imported here, so registering the CLI command costs nothing at start-up.
"""
