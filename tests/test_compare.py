"""cropseg.compare (the experiments' comparison): real numbers, and no matplotlib side effect on import."""

import json
import subprocess
import sys

from cropseg.compare import MethodResult, write_outputs


def _history(f1s: list[float], block: int) -> list[dict[str, float]]:
    return [{"step": 10.0 * (i + 1), "samples_seen": 20.0 * (i + 1), "samples_considered": 20.0 * block * (i + 1),
             "weighted_f1": f1, "accuracy": f1, "macro_f1": f1} for i, f1 in enumerate(f1s)]


def test_importing_compare_sets_no_matplotlib_backend():
    code = "import sys, cropseg.compare; print(sorted(m for m in sys.modules if m.startswith('matplotlib')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_outputs_compare_steps_to_uniform_best(tmp_path):
    results = [MethodResult("uniform", 1, _history([0.2, 0.5, 0.6], 1), 0.2, 0.2),
               MethodResult("rho_loss", 2, _history([0.3, 0.6, 0.7], 2), 0.05, 0.2),
               MethodResult("loss", 2, _history([0.1, 0.2, 0.3], 2), 0.4, 0.2)]
    summary = write_outputs(results, tmp_path)
    assert summary["uniform_best_weighted_f1"] == 0.6 and summary["uniform_steps_to_best"] == 30.0
    assert summary["methods"]["rho_loss"]["steps_ratio_vs_uniform"] == 20.0 / 30.0
    assert summary["methods"]["loss"]["steps_to_uniform_best"] == float("inf")
    assert summary["rho_vs_loss_noisy_share"] == 0.05 / 0.4
    assert json.loads((tmp_path / "summary.json").read_text())["uniform_steps_to_best"] == 30.0
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "uniform.csv").read_text().splitlines()[1] == "10,20,20,0.2,0.2,0.2"
