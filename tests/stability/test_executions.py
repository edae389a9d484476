"""In-repo entry to the importable suite: runs audit.suite.test_executions."""

from audit.suite.test_executions import *  # noqa: F403
