"""A stand-in coding agent for `benchmarks/parallel_search.py`: reads Knight's prompt file, picks
one knob change of the champion, and writes it as submit_patch JSON to the output file.

The choice is drawn from the sha256 of the prompt, which holds the iteration number and (in
parallel rounds) the call's focus, so calls differ and a rerun proposes the same. The benchmark
wraps it in `sleep 5` to model a proposer with a fixed 5-s latency.

    python benchmarks/knob_agent.py PROMPT_FILE OUTPUT_FILE
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from pathlib import Path

from knight.tunables import knob_edits, read_knobs

SOURCE = re.compile(
    r"^`(?P<file>[^`]+)` \(line numbers.*?\n```python\n(?P<body>.*?)\n```", re.S | re.M
)


def champion(prompt: str) -> tuple[str, str]:
    """(kernel file name, champion source) from the prompt's numbered source section."""
    match = SOURCE.search(prompt)
    if match is None:
        raise SystemExit("knob_agent: no champion source in the prompt")
    lines = [
        line.split(" | ", 1)[1] if " | " in line else "" for line in match["body"].splitlines()
    ]
    return match["file"], "\n".join(lines) + "\n"


def main() -> None:
    prompt = Path(sys.argv[1]).read_text(encoding="utf-8")
    kernel, source = champion(prompt)
    rng = random.Random(hashlib.sha256(prompt.encode()).digest())
    knobs = read_knobs(source)
    moves = [(k.name, v) for k in knobs.values() for v in k.allowed if v != k.value]
    if not moves:
        raise SystemExit("knob_agent: the champion declares no knobs")
    name, value = rng.choice(sorted(moves, key=repr))
    answer = {
        "hypothesis": f"Set {name} to {value!r}",
        "rationale": "a random knob move (benchmark stand-in agent)",
        "tags": ["knob", name],
        "skills_used": [],
        "edits": [e.model_dump() for e in knob_edits(source, {name: value}, kernel)],
    }
    Path(sys.argv[2]).write_text(json.dumps(answer), encoding="utf-8")


if __name__ == "__main__":
    main()
