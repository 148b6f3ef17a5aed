"""Print README.md's command number N (0: install + the digits run, 1: install + the suite).

They are the two lines of the README's first ``bash`` block, the ones a new user types; ``.ci/run``
runs them from here so that CI checks the README as written, not a copy of it.
"""
import os
import re
import sys


def readme_commands(path: str):
  text = open(path, encoding="utf-8").read()
  block = re.search(r"^```bash\n(.*?)^```", text, re.S | re.M)
  if block is None:
    sys.exit(f"{path}: no ```bash block holding the two commands")
  lines = [l.strip() for l in block.group(1).splitlines() if l.strip()]
  if len(lines) != 2:
    sys.exit(f"{path}: the first ```bash block must hold exactly the two commands, has {lines}")
  return lines


if __name__ == "__main__":
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  print(readme_commands(os.path.join(root, "README.md"))[int(sys.argv[1])])
