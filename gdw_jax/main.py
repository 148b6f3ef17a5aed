"""Command line: ``python -m gdw_jax.main --config=configs/digits.py --workdir=runs/digits``.

Any config key can be overridden, e.g. ``--config.method=mwnet --config.noise_rate=0.6``;
``--config.seeds=0,1,2,3,4`` trains five seeds as one program (``docs/scaling.md``).
Methods defined outside the package run with ``--config.plugins=my_module,...`` (imported before
the config file is read, so their option groups can be overridden too, e.g.
``--config.plugins=examples.my_method --config.method=small_loss --config.small_loss.keep=0.7``).
Exit status: 0 done, 2 a config error (or a workdir another launch holds: docs/scaling.md), 3 a
non-finite step, 4 a file that cannot be written, 128 + signal after a SIGTERM / SIGINT (saved;
the same command resumes). Kept thin: the work is in :func:`gdw_jax.train.train_and_evaluate`,
importable from notebooks. Above every other module (``gdw_jax/train.py`` lists the layers);
importing the trainer does not start JAX's backends, so the CPU flags (:mod:`gdw_jax.cpu_flags`)
still apply when :func:`main` sets them.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gdw_jax import cpu_flags, fileio, methods, runs, train, validation

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "configs", "digits.py")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for config, labels, metrics and results.")


def _no_such_key(e: Exception, argv):
  key = str(e.args[0] if e.args else e).strip("'\"")
  given = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
  culprit = next((g for g in given if g.split(".")[-1] == key), key)
  print(f"gdw_jax: error: {culprit}: no such config key (see the config file, or "
        f"--helpfull for the --config.* keys)", file=sys.stderr)
  sys.exit(2)


def _plugins_in(argv):
  """The value of ``--config.plugins=a,b`` (or ``--config.plugins a,b``) in ``argv``."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config.plugins="):
      return arg.split("=", 1)[1]
    if arg == "--config.plugins" and i + 1 < len(argv):
      return argv[i + 1]
  return ""


def _load_plugins(argv):
  """Import the plugin modules before the config file builds its groups from the registry."""
  try:
    methods.load_plugins(_plugins_in(argv))
  except ValueError as e:
    print(f"gdw_jax: error: --config.{e}", file=sys.stderr)
    sys.exit(2)


_load_plugins(sys.argv)
try:  # with the default config file, ml_collections applies sys.argv's overrides right here
  config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Training config file.",
                                  lock_config=True)
except (KeyError, AttributeError) as _e:
  _no_such_key(_e, sys.argv)
flags.mark_flags_as_required(["workdir"])


def _parse_flags(argv):
  """absl's parser, plus one-line errors (not tracebacks) for an override of a missing key and
  for a bad ``--config=file.py:key=value`` argument (``official=ture``, an unknown key)."""
  try:
    return FLAGS(argv)
  except (KeyError, AttributeError) as e:
    _no_such_key(e, argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if "Error whilst parsing config file" in str(e):  # get_config raised: keep its message
      cause = lines[-1].split(": ", 1)[-1] if ": " in lines[-1] else lines[-1]
      print(f"gdw_jax: error: {lines[0].split(':', 1)[0]}: {cause}", file=sys.stderr)
    else:
      print(f"gdw_jax: error: {' '.join(lines)}", file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    # app.run raises absl logging to INFO; orbax then logs ~30 lines per checkpoint save, which
    # bury the progress bar. Warnings still show; --verbosity=0 brings the INFO lines back.
    logging.set_verbosity(logging.WARNING)
  # Before anything initialises JAX's backends (XLA reads its flags once); reading the config
  # and importing jax do not. float64 runs keep XLA's defaults (faster there: cpu_flags.py).
  added = cpu_flags.apply(dtype=FLAGS.config.dtype)
  if added:
    print(cpu_flags.describe(added), file=sys.stderr)
  try:
    validation.check_overrides(FLAGS.config, config_flags.get_override_values(FLAGS["config"]))
    final = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except train.ConfigError as e:
    print(f"gdw_jax: error: {e}", file=sys.stderr)
    sys.exit(2)
  except train.NonFiniteError as e:
    print(f"gdw_jax: error: {e}", file=sys.stderr)
    sys.exit(3)
  except fileio.WriteError as e:  # disk full, read-only workdir: the files written stay whole
    print(f"gdw_jax: error: {e}", file=sys.stderr)
    sys.exit(4)
  except train.Preempted as e:  # SIGTERM / SIGINT: saved; the same command resumes
    print(f"gdw_jax: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
  if FLAGS.config.seeds:  # several runs: the summary table (mean ± std over seeds)
    print(runs.summary_table(final))
    print(f"-> {os.path.join(FLAGS.workdir, 'summary.json')}")
    return
  out = os.path.join(FLAGS.workdir, "final.json")
  if final["last5_acc"] is None:
    print(f"trained {final['steps']} steps; no test accuracy (no test set) -> {out}")
  else:
    print(f"last5_acc={final['last5_acc']:.2f} best_acc={final['best_acc']:.2f} "
          f"last_acc={final['last_acc']:.2f} -> {out}")
  for note in final.get("notes", ()):  # e.g. a meta set that is not known to be clean
    print(f"note: {note}")
  print(f"label issues (most suspicious first): "
        f"{os.path.join(FLAGS.workdir, 'label_issues.csv')}")


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
