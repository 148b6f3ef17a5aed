"""One tiny digits run per method, trained once per pytest process and shared by the analysis,
report and notebook tests (a module-level cache: session fixtures are per defining module)."""
import atexit
import functools
import os
import shutil
import tempfile

# 15 epochs: long enough for the weight nets to pass their early phase, where MW-Net's weights
# still favour the noisy samples, so the label-issue tests can check the ranking on these runs.
EPOCHS = 15
# erm runs long-tailed so the head/tail split is exercised; all runs have 40% uniform noise.
RUNS = {
    "erm": {"imbalance_factor": 0.2},
    "mwnet": {},
    "gdw": {},
}


@functools.lru_cache(maxsize=None)
def workdirs():
  """``{method: workdir}`` of finished runs (the trainer's own end-of-run report included)."""
  from configs import digits
  from gdw_jax import train

  root = tempfile.mkdtemp(prefix="gdw_analysis_runs_")
  atexit.register(shutil.rmtree, root, ignore_errors=True)
  out = {}
  for method, overrides in RUNS.items():
    config = digits.get_config()
    config.method = method
    config.num_epochs = EPOCHS
    config.progress = False
    for key, value in overrides.items():
      config[key] = value
    out[method] = os.path.join(root, method)
    train.train_and_evaluate(config, out[method])
  return out
