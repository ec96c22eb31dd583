"""Knight's database and its typed run-history API.

Public API (for the loop, the CLI, `knight serve`, `knight report`) — no SQLAlchemy needed:

- `open_store(where, access=...)` -> `RunStore`: `"read"` never writes and refuses an old schema
  with a hint; `"write"` creates or backs up and upgrades (see `RunStore.schema_upgrade`).
- `RunStore`: `start_run`, `reopen_run`, `run`, `resolve_run_id`, `list_runs`, `close_run`,
  `record_iteration`, `record_proposer_calls`, `progress`, `history`, `accepted_chain`,
  `lineage`, `beam`, `iteration_numbers`, `hold_run`, `iteration`, `problem_history`,
  `candidate_source`, `sources`, `skill_usage`.
- Records (pydantic): `RunSpec`, `RunInfo`, `RunProgress`, `IterationRecord`, `LessonRecord`,
  `IterationSummary`, `IterationDetail`, `AttemptRow`, `ProblemHistory`.

Lower level (store internals, the evaluation cache, migrations): `Database`, `open_database`,
the ORM models and `queries`.
"""

from knight.store.db import Database, SchemaUpgrade, database_url, open_database
from knight.store.migrate import head_revision
from knight.store.models import (
    ITERATION_STATUSES,
    LESSON_KINDS,
    LLM_CALL_STATUSES,
    RUN_STATUSES,
    SKILL_EVENTS,
    Base,
    Candidate,
    Evaluation,
    Iteration,
    Lesson,
    LLMCall,
    Run,
    SkillEvent,
    utcnow,
)
from knight.store.open import Access, open_store
from knight.store.queries import (  # session level: the evaluation cache, store internals
    cached_evaluation,
    get_or_create_candidate,
    save_evaluation,
    skill_usage,
)
from knight.store.records import (
    AttemptRow,
    IterationDetail,
    IterationRecord,
    IterationSummary,
    LessonRecord,
    ProblemHistory,
    RunInfo,
    RunProgress,
    RunSpec,
    WorkloadOutcome,
)
from knight.store.runs import RunStore

__all__ = [
    "ITERATION_STATUSES",
    "LESSON_KINDS",
    "LLM_CALL_STATUSES",
    "RUN_STATUSES",
    "SKILL_EVENTS",
    "Access",
    "AttemptRow",
    "Base",
    "Candidate",
    "Database",
    "Evaluation",
    "Iteration",
    "IterationDetail",
    "IterationRecord",
    "IterationSummary",
    "WorkloadOutcome",
    "LLMCall",
    "Lesson",
    "LessonRecord",
    "ProblemHistory",
    "Run",
    "RunInfo",
    "RunProgress",
    "RunSpec",
    "RunStore",
    "SchemaUpgrade",
    "SkillEvent",
    "cached_evaluation",
    "database_url",
    "get_or_create_candidate",
    "head_revision",
    "open_database",
    "open_store",
    "save_evaluation",
    "skill_usage",
    "utcnow",
]
