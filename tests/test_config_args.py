"""``--config=configs/X.py:key=value,...``: booleans are read strictly, and a bad argument is one
clear line on the command line (exit 2), not a traceback."""
import os
import re
import subprocess
import sys

import pytest

from configs import cifar, common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("text,value", [("true", True), ("True", True), ("1", True),
                                        ("yes", True), ("false", False), ("FALSE", False),
                                        ("0", False), ("no", False)])
def test_booleans_accept_the_usual_spellings(text, value):
  assert common.parse_arg(f"flag={text}", flag=not value)["flag"] is value


@pytest.mark.parametrize("text", ["ture", "", "2", "on?"])
def test_a_misspelt_boolean_is_an_error_not_false(text):
  with pytest.raises(ValueError, match=re.escape(f"config argument flag={text!r} is not")):
    common.parse_arg(f"flag={text}", flag=True)


def test_official_flag_is_strict():
  assert cifar.get_config("official=true").split_rng == "legacy"
  assert cifar.get_config("official=no").split_rng == "numpy"
  with pytest.raises(ValueError, match="official='ture' is not a boolean"):
    cifar.get_config("official=ture")


@pytest.mark.parametrize("arg,message", [
    ("configs/cifar.py:official=ture", "official='ture' is not a boolean"),
    ("configs/digits.py:bogus=1", "unknown config argument 'bogus'")])
def test_cli_reports_a_bad_config_argument_in_one_line(tmp_path, arg, message):
  out = subprocess.run([sys.executable, "-m", "gdw_jax.main", f"--config={arg}",
                        f"--workdir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("gdw_jax: error: ") and message in lines[0]
  assert not (tmp_path / "run").exists()


def test_experiments_set_parser_types_values_and_refuses_unknown_keys():
  from configs import digits
  from gdw_jax.options import ConfigError
  c = digits.get_config()
  common.apply_overrides(c, ["mlp_hidden=(16,)", "learning_rate=0.05", "progress=False",
                             "noise_type=flip", "cmwnet.meta_every=4"])
  assert (c.mlp_hidden, c.learning_rate, c.progress, c.noise_type) == ((16,), 0.05, False, "flip")
  assert c.cmwnet.meta_every == 4
  for bad, message in (("learning_rat=0.1", "--set learning_rat: no such config key"),
                       ("nope.x=1", "--set nope.x: no such config key"),
                       ("learning_rate", "--set 'learning_rate' is not key=value"),
                       ("cmwnet.families=4", "--set cmwnet.families=4: Could not override")):
    with pytest.raises(ConfigError, match=re.escape(message)):
      common.apply_overrides(c, [bad])
  common.apply_overrides(c, ["wrn_depth=16"], allow_new=True)  # a model's own option
  assert c.wrn_depth == 16
