"""In-repo entry to the importable suite: runs audit.suite.test_worked_examples."""

from audit.suite.test_worked_examples import *  # noqa: F403
