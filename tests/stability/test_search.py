"""In-repo entry to the importable suite: runs audit.suite.test_search."""

from audit.suite.test_search import *  # noqa: F403
