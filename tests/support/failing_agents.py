"""An ``AGENT_MODULES`` module that fails as it is imported, as one reading a setting that is
not there does (a ``KeyError``, not an ``ImportError``)."""

import os

SEARCH_API_KEY = os.environ["AGENT_SERVICE_TEST_VARIABLE_NOBODY_SETS"]
