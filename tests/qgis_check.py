"""Open a QGIS project headless and report its layers as one JSON line (run by QGIS's own Python).

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_check.py data/predictions/cropseg.qgs

QGIS's bindings (Debian: ``python3-qgis``) live in the system Python, not in the project's venv,
so the test finds an interpreter that has them (:func:`find_qgis_python`) and runs this file with it.
Exit status 1 when the project does not open or a layer is invalid.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


def find_qgis_python() -> str | None:
    """This interpreter if it imports ``qgis.core``, else the system ``python3`` if it does, else None."""
    candidates = [sys.executable, "/usr/bin/python3", shutil.which("python3")]
    for python in dict.fromkeys(c for c in candidates if c):
        try:
            done = subprocess.run([python, "-c", "import qgis.core"], capture_output=True, timeout=120,
                                  env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return python
    return None


def main(project_path: str) -> int:
    from qgis.core import QgsApplication, QgsProject

    app = QgsApplication([], False)
    app.initQgis()
    try:
        project = QgsProject.instance()
        opened = project.read(str(Path(project_path).resolve()))
        layers = list(project.mapLayers().values())
        report = {"opened": bool(opened), "layers": len(layers),
                  "invalid": [f"{l.name()}: {l.source()}" for l in layers if not l.isValid()],
                  "renderers": [], "categorized_on": [], "labels_enabled": True, "features": [],
                  "absolute_paths": project.readBoolEntry("Paths", "/Absolute", True)[0], "names": []}
        for layer in sorted(layers, key=lambda l: l.name()):
            report["names"].append(layer.name())
            renderer = layer.renderer()
            report["renderers"].append(renderer.type() if renderer else None)
            if layer.type() == layer.VectorLayer:
                report["categorized_on"].append(renderer.classAttribute())
                report["labels_enabled"] &= bool(layer.labelsEnabled())
                report["features"].append(int(layer.featureCount()))
        print(json.dumps(report))
        return 0 if opened and layers and not report["invalid"] and not report["absolute_paths"] else 1
    finally:
        app.exitQgis()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
