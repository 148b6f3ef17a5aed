"""notebooks/analysis.ipynb executes headless on a tiny GDW run (so it never rots)."""
import os

import nbformat
from nbclient import NotebookClient

import analysis_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "analysis.ipynb")


def test_notebook_has_no_stored_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_notebook_executes_on_a_gdw_run(monkeypatch):
  workdir = analysis_runs.workdirs()["gdw"]
  monkeypatch.setenv("GDW_ANALYSIS_WORKDIR", workdir)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # Started in notebooks/, as a user opening it would; it must find and import this checkout.
  NotebookClient(nb, timeout=300, kernel_name="python3",
                 resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert f"gdw_jax from {os.path.join(ROOT, 'gdw_jax')}\n" in text
  assert "last-epoch AUC" in text and "true_column" in text
  assert os.path.join(workdir, "report.md") in text
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  # curves, weight function, clean vs noisy, class-level maps, per-class, lowest-weighted
  assert len(images) == 6
