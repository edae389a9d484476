"""bce-stability-audit: the harness (subjects, runners, grading, contracts, report, CLI).

`from audit import subject` registers a loss of your own (DESIGN.md section 9).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    # lazy: `import audit` (the pytest plugin does it) stays cheap
    if name == "subject":
        from audit.subjects import subject

        return subject
    raise AttributeError(f"module 'audit' has no attribute {name!r}")
