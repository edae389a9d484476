"""In-repo entry to the importable suite: runs audit.suite.test_equivalence."""

from audit.suite.test_equivalence import *  # noqa: F403
