import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from figures import pytest_terminal_summary  # noqa: E402,F401  (prints the ratio table)
