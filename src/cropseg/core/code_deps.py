"""The code each DVC stage runs, derived from the import graph, and a check of ``dvc.yaml`` against it.

A stage depends on its script and on every ``src/cropseg`` module the script imports, directly or
through other modules, at module level or inside a function (a lazy import runs too; counting
it costs at most a needless rerun). Parsing with :mod:`ast` imports nothing, so the check is
cheap and sees imports that only some code paths execute.

    python -m cropseg.core.code_deps            # each stage's module list, as dvc.yaml should list it
    python -m cropseg.core.code_deps --check    # exit 1 naming every stage whose deps differ
    python -m cropseg.core.code_deps --write    # rewrite those lists in dvc.yaml (after the stage's script)

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


def _module_file(package_dir: Path, dotted: str) -> Path | None:
    """``a.b`` (relative to the package) -> ``package_dir/a/b.py`` or ``package_dir/a/b/__init__.py``."""
    base = package_dir.joinpath(*dotted.split(".")) if dotted else package_dir
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imported(path: Path, package_dir: Path) -> set[Path]:
    """The package's module files that ``path`` imports, directly (relative or absolute imports)."""
    tree = ast.parse(path.read_text(), str(path))
    inside = path.resolve().is_relative_to(package_dir.resolve())
    here = path.resolve().parent.relative_to(package_dir.resolve()).parts if inside else ()
    found: set[Path] = set()

    def add(dotted: str, names: list[str]) -> None:
        target = _module_file(package_dir, dotted)
        if target is not None:
            found.add(target)
        for name in names:  # `from pkg import module`
            sub = _module_file(package_dir, f"{dotted}.{name}" if dotted else name)
            if sub is not None:
                found.add(sub)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    add(".".join(parts[1:]), [])
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.split(".")[0] == PACKAGE:
                add(".".join(module.split(".")[1:]), [a.name for a in node.names])
            elif node.level > 0 and inside:
                anchor = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                dotted = ".".join([*anchor, *([module] if module else [])])
                add(dotted, [a.name for a in node.names])
    return found


def _packages_of(module: Path, package_dir: Path) -> set[Path]:
    """The ``__init__.py`` files Python runs before ``module``: the package's and every enclosing one."""
    inits, folder = set(), module.parent
    while folder.resolve().is_relative_to(package_dir.resolve()):
        if (folder / "__init__.py").is_file():
            inits.add(folder / "__init__.py")
        if folder.resolve() == package_dir.resolve():
            break
        folder = folder.parent
    return inits


def stage_modules(script: Path, package_dir: Path) -> list[str]:
    """Every package module ``script`` runs (transitively), as sorted paths relative to ``package_dir``.

    Args:
        script: a stage script (``stages/x.py``) or a module of the package.
        package_dir: ``src/cropseg``; the ``__init__.py`` of every package a listed module lives in
            is listed too (Python runs it on import).
    """
    seen: set[Path] = set()
    todo = sorted(_imported(script, package_dir))
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(sorted((_imported(module, package_dir) | _packages_of(module, package_dir)) - seen))
    return sorted(m.relative_to(package_dir).as_posix() for m in seen)


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
    module_line = re.compile(rf"^\s+- src/{PACKAGE}/[\w./]+\.py\s*(#.*)?$")
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
