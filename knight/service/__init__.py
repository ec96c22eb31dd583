"""Knight as a service: the HTTP API (`knight serve`), bearer tokens and the remote evaluator.

Modules: `app` (the FastAPI app), `evaluations` (queue), `runs` (run processes), `tokens`,
`remote` (`RemoteEvaluator`), `commands` (the CLI). Kept import-free so `knight` starts fast.
"""
