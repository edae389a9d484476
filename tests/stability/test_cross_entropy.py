"""In-repo entry to the importable suite: runs audit.suite.test_cross_entropy."""

from audit.suite.test_cross_entropy import *  # noqa: F403
