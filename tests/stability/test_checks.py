"""In-repo entry to the importable suite: runs audit.suite.test_checks."""

from audit.suite.test_checks import *  # noqa: F403
