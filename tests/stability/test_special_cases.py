"""In-repo entry to the importable suite: runs audit.suite.test_special_cases."""

from audit.suite.test_special_cases import *  # noqa: F403
