"""The code each DVC stage runs, derived from the import graph, and a check of ``dvc.yaml`` against it.

A stage depends on its script and on every ``src/cropseg`` module the script imports, directly or
through other modules, at module level or inside a function (a lazy import runs too; counting
it costs at most a needless rerun). Parsing with :mod:`ast` imports nothing, so the check is
cheap and sees imports that only some code paths execute.

    python -m cropseg.code_deps            # each stage's module list, as dvc.yaml should list it
    python -m cropseg.code_deps --check    # exit 1 naming every stage whose deps differ
    python -m cropseg.code_deps --write    # rewrite those lists in dvc.yaml (after the stage's script)

Why a derived list rather than the whole package as one dependency: editing one module then
reruns exactly the stages that run it (editing ``predict.py`` does not re-fetch, re-compute
medians or retrain), and the check, run by the test suite, fails as soon as a stage's imports
and its ``dvc.yaml`` deps disagree.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import yaml

PACKAGE = "cropseg"


def _imported(path: Path, package_dir: Path) -> set[str]:
    """Names of the package's modules that ``path`` imports (``cropseg.x`` -> ``x``)."""
    tree = ast.parse(path.read_text(), str(path))
    in_package = path.parent == package_dir
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1 and in_package or node.level == 0 and module.split(".")[0] == PACKAGE:
                base = module.split(".")[1] if node.level == 0 and "." in module else (
                    module.split(".")[0] if node.level == 1 and module else "")
                if base:
                    found.add(base)
                else:  # from . import x / from cropseg import x
                    found.update(alias.name for alias in node.names)
    return {name for name in found if (package_dir / f"{name}.py").is_file()}


def stage_modules(script: Path, package_dir: Path) -> list[str]:
    """Every package module ``script`` runs (transitively), as sorted file names.

    Args:
        script: a stage script (``stages/x.py``) or a module of the package.
        package_dir: ``src/cropseg``; ``__init__.py`` is always listed when it exists.
    """
    seen: set[str] = set()
    todo = sorted(_imported(script, package_dir))
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(sorted(_imported(package_dir / f"{name}.py", package_dir) - seen))
    if (package_dir / "__init__.py").is_file():
        seen.add("__init__")
    return sorted(f"{name}.py" for name in seen)


def expected_deps(repo: Path) -> dict[str, list[str]]:
    """stage -> the ``src/cropseg/*.py`` paths its ``cmd``'s script runs."""
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    package_dir = repo / "src" / PACKAGE
    out = {}
    for stage, spec in pipeline["stages"].items():
        script = next((w for w in str(spec["cmd"]).split() if w.startswith("stages/") and w.endswith(".py")), None)
        if script is None:
            continue
        out[stage] = [f"src/{PACKAGE}/{m}" for m in stage_modules(repo / script, package_dir)]
    return out


def problems(repo: Path) -> list[str]:
    """One line per stage whose listed package modules differ from its imports."""
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    lines = []
    for stage, wanted in expected_deps(repo).items():
        listed = {str(d) for d in pipeline["stages"][stage].get("deps", []) if str(d).startswith(f"src/{PACKAGE}/")}
        missing, extra = sorted(set(wanted) - listed), sorted(listed - set(wanted))
        if missing or extra:
            lines.append(f"dvc.yaml: stage {stage}: deps must list the modules it runs"
                         + (f"; missing {', '.join(missing)}" if missing else "")
                         + (f"; not imported {', '.join(extra)}" if extra else ""))
    return lines


def rewrite(repo: Path) -> bool:
    """Replace each stage's ``src/cropseg/*.py`` deps in ``dvc.yaml`` by the derived list, right after
    the line of its script; other lines and comments stay. Returns whether the file changed."""
    import re

    path = repo / "dvc.yaml"
    wanted = expected_deps(repo)
    pipeline = yaml.safe_load(path.read_text())
    scripts = {stage: next(w for w in str(spec["cmd"]).split() if w.startswith("stages/"))
               for stage, spec in pipeline["stages"].items() if stage in wanted}
    module_line = re.compile(rf"^\s+- src/{PACKAGE}/[\w.]+\.py\s*(#.*)?$")
    stage_line = re.compile(r"^  ([A-Za-z0-9_-]+):")
    old = path.read_text().splitlines(keepends=True)
    new, stage = [], None
    for line in old:
        match = stage_line.match(line)
        if match:
            stage = match.group(1)
        if stage in wanted and module_line.match(line):
            continue
        new.append(line)
        if stage in wanted and line.strip() == f"- {scripts[stage]}":
            indent = line[: len(line) - len(line.lstrip())]
            new.extend(f"{indent}- {dep}\n" for dep in wanted[stage])
    if new == old:
        return False
    from .atomic import atomic_file

    with atomic_file(path, "w") as handle:
        handle.write("".join(new))
    return True


def main(argv: list[str] | None = None) -> int:
    """The command line of the module docstring; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml disagrees with the imports")
    parser.add_argument("--write", action="store_true", help="rewrite the module lists of dvc.yaml")
    args = parser.parse_args(argv)
    if args.write:
        print("dvc.yaml: rewritten" if rewrite(args.repo) else "dvc.yaml: already up to date")
        return 0
    if args.check:
        found = problems(args.repo)
        print("\n".join(found) if found else "dvc.yaml: every stage lists the modules it runs")
        return 1 if found else 0
    for stage, deps in expected_deps(args.repo).items():
        print(f"{stage}:\n" + "\n".join(f"      - {d}" for d in deps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
