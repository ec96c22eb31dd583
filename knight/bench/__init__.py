"""`knight bench`: a proposer run over the problem suite, with speed-ups and floor fractions.

`knight.bench.suite` runs and measures; `knight.bench.command` is the CLI command. Nothing is
imported here, so registering the command costs nothing at start-up.
"""
