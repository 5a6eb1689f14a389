"""The tutorial notebooks execute top to bottom, and git holds them without outputs.

Each notebook runs in a fresh IPython kernel started from *this* interpreter (a
kernel spec written to a temporary JUPYTER_PATH), so the test works from a clean
virtual environment without `python -m ipykernel install`. The notebooks write
only into DEEPLAB_NOTEBOOK_DIR, a temporary folder.
"""

import ast
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL_NAME = "deeplab-keras-test"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernel spec for sys.executable on JUPYTER_PATH, and a quiet TensorFlow."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "deeplab_keras tests", "language": "python",
    }))
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "TF_CPP_MIN_LOG_LEVEL")}
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(root)] + ([saved["JUPYTER_PATH"]] if saved["JUPYTER_PATH"] else []))
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _execute(name, work_dir, monkeypatch):
    """Run a notebook in `work_dir`; returns the executed notebook (raises on a cell error)."""
    monkeypatch.setenv("DEEPLAB_NOTEBOOK_DIR", str(work_dir))
    monkeypatch.delenv("DEEPLAB_CHECKPOINT", raising=False)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=600,
                            resources={"metadata": {"path": str(work_dir)}})
    client.execute()
    return nb


def _outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield cell, cell.outputs


def _text(nb):
    parts = []
    for _, outputs in _outputs(nb):
        for out in outputs:
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out:
                parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


def _figures(nb):
    return sum("image/png" in out.get("data", {}) for _, outs in _outputs(nb) for out in outs)


def test_01_train_and_evaluate_runs(kernel_env, tmp_path, monkeypatch):
    # 6 epochs of 15 steps instead of 50: the test checks that the notebook
    # runs and logs, not how far 300 steps get.
    monkeypatch.setenv("DEEPLAB_NOTEBOOK_STEPS_PER_EPOCH", "15")
    nb = _execute("01_train_and_evaluate.ipynb", tmp_path, monkeypatch)
    # The CSV log holds the loss and the validation mIoU of every epoch.
    lines = (tmp_path / "training_log.csv").read_text().split()
    assert lines[0] == "epoch,loss,val_miou" and len(lines) == 1 + 6
    assert (tmp_path / "model.keras").stat().st_size > 0
    assert len(list((tmp_path / "predictions" / "labels").glob("*.png"))) == 3
    text = _text(nb)
    assert "mean IoU" in text and "before the CRF" in text
    assert "3 image(s) segmented, 0 failed." in text
    # data batch, training curves, before/after CRF figure, overlay (PNG/JPEG).
    assert _figures(nb) >= 4


def test_02_export_and_deploy_runs(kernel_env, tmp_path, monkeypatch):
    nb = _execute("02_export_and_deploy.ipynb", tmp_path, monkeypatch)
    assert (tmp_path / "savedmodels" / "deeplab_builtin" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "model.tflite").stat().st_size > 0
    assert (tmp_path / "model.onnx").stat().st_size > 0
    body = json.loads((tmp_path / "request.json").read_text())
    assert body["signature_name"] == "serving_default" and body["instances"][0]["b64"]
    # The three format comparisons (dict results of compare_outputs) all agree.
    scores = [ast.literal_eval(out.data["text/plain"])
              for cell, outs in _outputs(nb) for out in outs
              if cell.source.splitlines()[-1].startswith("compare_outputs(")
              and out.output_type == "execute_result"]
    assert len(scores) == 3
    for s in scores:
        assert s["label_agreement"] >= 0.999 and s["logits_max_abs_diff"] <= 1e-3
    assert _figures(nb) >= 1


def test_notebooks_are_stored_without_outputs_and_match_their_generator():
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        import make_notebooks
    finally:
        sys.path.remove(str(NOTEBOOKS))
    assert make_notebooks.main(["--check"]) == 0, "run python notebooks/make_notebooks.py"
    for name in make_notebooks.NOTEBOOKS:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name
