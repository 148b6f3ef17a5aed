"""Test setup: import this checkout's package, keep XLA quiet and fast on CPU."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
