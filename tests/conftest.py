"""Suite-wide settings: the Hypothesis profiles.

- ``ci`` (loaded when the CI environment variable is set): derandomized, so a CI run is
  reproducible and never fails on an input that the previous run did not try; no example database
  (as Hypothesis's built-in ``ci`` profile, which this one replaces).
- ``nightly`` (HYPOTHESIS_PROFILE=nightly): randomized, ten times the examples, for a scheduled
  job that looks for new failures. A failure prints the ``@reproduce_failure`` blob to replay it.
- ``default``: Hypothesis's own defaults (randomized, local example database in .hypothesis/).

HYPOTHESIS_PROFILE names a profile explicitly and wins over CI. Tests that set max_examples in
their own ``@settings`` keep that number in every profile; tests that leave it to the profile
(the fuzz tests among them) get 100 examples, or 1,000 at night.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,  # shared CI machines: a slow example is not a failure
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "nightly",
    derandomize=False,
    max_examples=1000,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)

settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default")
)
