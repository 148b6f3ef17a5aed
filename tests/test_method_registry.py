"""A method is one file: keyword constructors, declared option groups, plugins through the CLI,
and the interface fixes of issue 14 (one init signature, norm_size, GDW's instance weight)."""
import json
import os
import subprocess
import sys

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdw_jax
from configs import common, digits
from gdw_jax import bilevel, methods, models, validation
from gdw_jax.methods.base import MethodSpec
from gdw_jax.models.mlp import MLP
from gdw_jax.options import OptionGroup
from gdw_jax.validation import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C, N = 4, 8


def _ctx(labels=(0, 1, 2, 3, 0, 1, 0, 2), norm_size=None, step=0):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(N, 5)), jnp.float32)
  y = jnp.asarray(labels)
  model = models.functional(MLP(C, hidden=(6,)))
  params, ms = model.init(jax.random.PRNGKey(0), x)
  logits, _ = model.apply(params, ms, x, True)
  return bilevel.StepContext(apply_fn=model.apply, params=params, model_state=ms, x=x, labels=y,
                             logits=logits, lr=jnp.asarray(0.5), meta_x=x[:6], meta_y=y[:6],
                             step=jnp.asarray(step), norm_size=norm_size)


# --------------------------------------------------------------- constructors and the registry

COUNTS = np.array([30, 20, 12, 6])
INFO = methods.DataInfo(C, int(COUNTS.sum()), COUNTS, 10)
CONSTRUCTED = {  # the keyword constructor with its defaults: the papers' settings
    "erm": lambda: gdw_jax.erm(),
    "focal": lambda: gdw_jax.focal(),
    "cb": lambda: gdw_jax.cb(class_counts=COUNTS),
    "ldam_drw": lambda: gdw_jax.ldam_drw(class_counts=COUNTS, steps_per_epoch=10),
    "l2rw": lambda: gdw_jax.l2rw(),
    "mwnet": lambda: gdw_jax.mwnet(),
    "gdw": lambda: gdw_jax.gdw(),
    "absgd": lambda: gdw_jax.absgd(steps_per_epoch=10),
    "cmwnet": lambda: gdw_jax.cmwnet(class_counts=COUNTS, steps_per_epoch=10),
    "cmwnet_sl": lambda: gdw_jax.cmwnet_sl(class_counts=COUNTS, steps_per_epoch=10,
                                           num_train=int(COUNTS.sum())),
}


@pytest.mark.parametrize("name", sorted(CONSTRUCTED))
def test_config_registry_builds_the_constructors_method(name):
  """``base_config()`` holds each method's declared defaults, and the registry's build from it
  gives the same step as the keyword constructor with its defaults (one way to make a method).
  Step 1600: past every default switch (DRW and ABSGD at epoch 160, 10 steps an epoch)."""
  assert set(methods.names()) >= set(CONSTRUCTED)
  config = common.base_config()
  config.method, config.num_epochs = name, 200  # the switches at 160 are inside the run
  validation.validate(config)
  built, made = methods.get(name)(config, INFO), CONSTRUCTED[name]()
  assert built.name == made.name == name
  ctx = _ctx(step=1600)
  params, ms = ctx.params, ctx.model_state
  s1, s2 = built.init(jax.random.PRNGKey(1), params, ms), made.init(jax.random.PRNGKey(1), params,
                                                                    ms)
  if built.transform_input is not None:  # CMW-Net-SL: mixup info for update
    x_in, info = built.transform_input(s1, jax.random.PRNGKey(2), ctx.x, ctx.labels, ctx.step)
    ctx = bilevel.StepContext(**{**ctx.__dict__, "input_info": info, "phase": 2,
                                 "rng": jax.random.PRNGKey(3)})
  g1, s1, _ = built.update(ctx, s1)
  g2, s2, _ = made.update(ctx, s2)
  np.testing.assert_array_equal(g1, g2)
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
    np.testing.assert_array_equal(a, b)


def test_each_option_group_is_declared_once_with_its_constructors_defaults():
  groups = {g.name: g for g in methods.option_groups()}
  assert set(groups) == {"vnet", "mwnet", "gdw", "cmwnet", "cmwnet_sl", "absgd", "proden"}
  assert groups["gdw"].defaults == dict(outer_lr=100.0, clip=0.2, weight_min=1e-6,
                                        weight_max=1e6, candidate_step="restricted",
                                        candidate_target="estimate")
  assert groups["absgd"].defaults["start_epoch"] == 160
  config = common.base_config()
  for name, group in groups.items():
    assert config[name].to_dict() == dict(group.defaults)
  c = digits.get_config()  # 60 epochs: the declared epoch switches at the official fractions
  assert (c.absgd.start_epoch, c.cmwnet_sl.warmup_epochs, c.loss.drw_epoch) == (48, 2, 48)


def test_validation_and_losses_name_no_method():
  for module in ("validation.py", "losses.py", "train.py"):
    text = open(os.path.join(ROOT, "gdw_jax", module)).read()
    for name in ("\"gdw\"", "\"mwnet\"", "\"cmwnet\"", "\"cmwnet_sl\"", "\"absgd\"", "\"l2rw\"",
                 "\"ldam_drw\"", "METHOD_GROUPS", "config.get("):
      assert name not in text or (module == "train.py" and name == "config.get("), (module, name)


@pytest.mark.parametrize("group,key", [("loss", "focal_gamma"), ("vnet", "momentum"),
                                       ("gdw", "weight_max")])
def test_a_hand_built_config_missing_a_key_is_an_error_not_a_default(group, key):
  config = digits.get_config()
  with config[group].unlocked():
    del config[group][key]
  with pytest.raises(ConfigError, match=f"config has no key '{group}.{key}'"):
    validation.validate(config)


def test_entry_point_methods_are_registered(monkeypatch):
  from importlib import metadata

  spec = MethodSpec("ep_method", lambda config, info, dtype=None: gdw_jax.erm(name="ep_method"),
                    groups=(OptionGroup("ep_method", {"alpha": 0.5}),))

  class EntryPoint:
    value = "somewhere:SPEC"

    def load(self):
      return spec

  class Broken(EntryPoint):
    value = "broken:SPEC"

    def load(self):
      raise ImportError("no module named broken")

  monkeypatch.setattr(metadata, "entry_points",
                      lambda group: [Broken(), EntryPoint()] if group == "gdw_jax.methods" else [])
  monkeypatch.setattr(methods, "_entry_points_loaded", False)
  try:
    assert "ep_method" in methods.names()  # the broken one is skipped (logged)
    assert common.base_config().ep_method.alpha == 0.5
  finally:
    methods._SPECS.pop("ep_method", None)


def test_unknown_plugin_module_is_a_config_error():
  config = digits.get_config()
  config.plugins = "no_such_module_xyz"
  with pytest.raises(ConfigError, match="plugins: cannot import module 'no_such_module_xyz'"):
    validation.validate(config)


def _cli(tmp_path, *args):
  return subprocess.run([sys.executable, "-m", "gdw_jax.main", f"--workdir={tmp_path / 'w'}",
                         *args, "--config.progress=False", "--config.report=False",
                         "--config.checkpoint=False"], cwd=ROOT, capture_output=True, text=True,
                        timeout=600)


def test_user_defined_method_trains_through_the_cli(tmp_path):
  """examples/my_method.py (the small-loss trick, registered from outside the package) run by
  ``python -m gdw_jax.main --config.plugins=examples.my_method``, with its own option."""
  r = _cli(tmp_path, "--config=configs/digits.py:epochs=2", "--config.plugins=examples.my_method",
           "--config.method=small_loss", "--config.small_loss.keep=0.6")
  assert r.returncode == 0, r.stderr[-2000:]
  final = json.load(open(tmp_path / "w" / "final.json"))
  assert final["method"] == "small_loss" and final["steps"] == 24
  config = json.load(open(tmp_path / "w" / "config.json"))
  assert config["small_loss"] == {"keep": 0.6} and config["plugins"] == "examples.my_method"
  w = np.load(tmp_path / "w" / "sample_weights.npz")
  kept = w["instance_weight"][-1]
  noisy = w["noisy_labels"] != w["true_labels"]
  assert set(np.unique(kept)) == {0.0, 1.0}
  assert abs(kept.mean() - 0.6) < 0.01   # 60 of every 100 (the last batch: 58 of 97)
  # The small-loss trick drops the noisy labels first: measured 30% of them kept in epoch 2,
  # 79% of the clean ones.
  assert kept[noisy].mean() < 0.5 * kept[~noisy].mean()


def test_cli_rejects_a_plugin_that_does_not_import(tmp_path):
  r = _cli(tmp_path, "--config.plugins=no_such_module_xyz", "--config.method=erm")
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1].startswith(
      "gdw_jax: error: --config.plugins: cannot import module 'no_such_module_xyz'")
  assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------------- issue 14 interface

def test_norm_size_is_the_divisor_and_batch_size_the_batch():
  assert _ctx().norm_size == N and _ctx().batch_size == N
  ctx = _ctx(norm_size=100)
  assert ctx.norm_size == 100 and ctx.batch_size == N
  g_default, _, _ = gdw_jax.erm().update(_ctx(), {})
  g_100, _, _ = gdw_jax.erm().update(ctx, {})
  np.testing.assert_allclose(g_100 * 100, g_default * N, rtol=1e-6)


def test_gdw_instance_weight_is_the_mean_weight_net_output():
  """Not column 0 of W: for a label-0 sample that is the constrained target entry, which differs
  from v once its probability is clamped (p_0 > prob_clamp = 0.999: a confident sample)."""
  method = gdw_jax.gdw()
  state = method.init(jax.random.PRNGKey(0))
  ctx = _ctx(labels=(0, 0, 0, 1, 2, 3, 0, 1))
  confident = ctx.logits.at[:3, 0].add(12.0)  # label-0 samples 0-2: p_0 > 0.999
  ctx = bilevel.StepContext(**{**ctx.__dict__, "logits": confident})
  _, _, aux = method.update(ctx, state)
  ce = -jax.nn.log_softmax(confident)[jnp.arange(N), ctx.labels]
  v = method.weight_fn(state, ce, ctx.labels)[:, None]
  np.testing.assert_allclose(aux["instance_weight"], jnp.mean(v), rtol=1e-6)
  p = jnp.minimum(jax.nn.softmax(confident), 0.999)
  column0 = methods.gdw.zero_mean_constraint(jnp.tile(v, (1, C)), p, ctx.labels)[:, 0]
  assert abs(float(jnp.mean(column0) - jnp.mean(v))) > 0.05  # what was logged before


def test_every_method_has_one_init_signature():
  """``init(rng, params, model_state)`` for all; ``init(rng)`` the same state without the
  classifier copy (only CMW-Net-SL keeps one: its EMA teacher)."""
  ctx = _ctx()
  for name, make in CONSTRUCTED.items():
    method = make()
    full = method.init(jax.random.PRNGKey(0), ctx.params, ctx.model_state)
    template = method.init(jax.random.PRNGKey(0))
    if name == "cmwnet_sl":
      assert template.pop("ema") == {"params": None, "model_state": None}
      teacher = full.pop("ema")
      for a, b in zip(jax.tree.leaves(teacher["params"]), jax.tree.leaves(ctx.params)):
        np.testing.assert_array_equal(a, b)
    assert jax.tree.structure(full) == jax.tree.structure(template), name


def test_cmwnet_sl_weight_function_figure_is_drawn(tmp_path):
  """analysis rebuilds CMW-Net-SL (init without the classifier) and draws its weight-vs-loss
  curves from a saved method state (it was skipped with a TypeError before)."""
  from gdw_jax.analysis import load_run, report, weight_fn
  config = digits.get_config("method=cmwnet_sl")
  counts = np.array([130, 120, 110, 125, 30, 28, 26, 24, 22, 20])
  info = methods.DataInfo(10, int(counts.sum()), counts, 7)
  method = methods.get("cmwnet_sl")(config, info)
  model = models.get("mlp", 10, config)
  params, ms = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 64)))
  state = method.init(jax.random.PRNGKey(1), params, ms)
  (tmp_path / "method_state.msgpack").write_bytes(flax.serialization.to_bytes(state))
  (tmp_path / "config.json").write_text(config.to_json_best_effort())
  (tmp_path / "data.json").write_text(json.dumps({
      "num_classes": 10, "num_train": int(counts.sum()),
      "train_class_counts_noisy": counts.tolist()}))
  wf = weight_fn.weight_function(load_run(str(tmp_path)))
  families = methods.cmwnet.task_families(counts)  # k-means on the counts: 3 families, 3 heads
  assert len(wf.curves) == len(set(families)) == 3
  for curve in wf.curves:
    assert len(set(families[curve.classes])) == 1
  report.write_report(str(tmp_path))
  summary = json.load(open(tmp_path / "analysis.json"))
  assert "weight_function.png" in summary["figures"], summary["skipped"]
