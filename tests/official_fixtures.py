"""Where the official-code fixtures live (``../shared/fixtures``, beside the repository)."""
import os

import pytest

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                        "shared", "fixtures")


def fixture_path(name: str) -> str:
  """The fixture's path; a missing fixture fails the test (these tests are never skipped)."""
  path = os.path.join(FIXTURES, name)
  if not os.path.isfile(path):
    pytest.fail(f"fixture {path} is missing: these tests need ../shared/fixtures beside the "
                f"repository (they are never skipped)")
  return path
