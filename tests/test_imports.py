"""Tests of what each package may import: the floors of the code stay apart.

inception (the networks) imports no other package of the project; input_pipeline (the data)
imports nothing of training and holds no process-wide settings; training uses the data only
through the pipeline's public API; the process-wide malloc settings live in host/runtime.py, used by
the entry points and the training devices only.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("host", "inception", "input_pipeline", "settings", "rundir", "training", "evaluation")
# Every package, with those it may import: the ones below it.
LAYERS = {
    "host": set(),
    "inception": set(),
    "input_pipeline": {"host"},
    "settings": {"host", "inception", "input_pipeline"},
    "rundir": {"host", "inception", "input_pipeline", "settings"},
    "training": {"host", "inception", "input_pipeline", "settings", "rundir"},
    "evaluation": {"host", "inception", "input_pipeline", "settings", "rundir", "training"},
}
# What training may import of the data package: the package itself (InputPipeline,
# load_dataset, ...) and the modules that define the pipeline's preprocessing, crops and examples.
PIPELINE_API = {"input_pipeline", "input_pipeline.preprocessing", "input_pipeline.crops",
                "input_pipeline.examples"}


def imported_modules(path):
    """Every module `path` imports, at any depth (functions' own imports too)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module)
    return found


def package_imports(package):
    """{module file: the modules it imports} for every module of `package`."""
    folder = os.path.join(ROOT, package)
    return {name: imported_modules(os.path.join(folder, name))
            for name in sorted(os.listdir(folder)) if name.endswith(".py")}


def top(module):
    return module.split(".")[0]


def test_every_package_is_listed_in_the_layers():
    packages = {name for name in os.listdir(ROOT)
                if os.path.exists(os.path.join(ROOT, name, "__init__.py"))}
    assert packages == set(LAYERS)


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_each_package_imports_only_the_layers_below_it(package):
    for name, modules in package_imports(package).items():
        project = {top(m) for m in modules} & set(LAYERS) - {package}
        assert project <= LAYERS[package], (
            f"{package}/{name} imports {sorted(project - LAYERS[package])}")


def test_the_data_package_imports_nothing_of_training_and_sets_nothing_process_wide():
    for name, modules in package_imports("input_pipeline").items():
        assert "training" not in {top(m) for m in modules}, name
        # Process-wide state (glibc's malloc through ctypes) is host/runtime.py's alone.
        assert "ctypes" not in modules, name
        assert not {"configure_malloc", "reapply_malloc_settings"} & _names_imported(
            os.path.join(ROOT, "input_pipeline", name), "runtime"), name


def _names_imported(path, module):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    return {alias.name for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == module
            for alias in node.names}


@pytest.mark.parametrize("name", sorted(package_imports("training")))
def test_training_uses_the_data_only_through_the_pipeline_api(name):
    data = {m for m in package_imports("training")[name] if top(m) == "input_pipeline"}
    assert data <= PIPELINE_API, f"training/{name} imports {sorted(data - PIPELINE_API)}"


def test_no_package_imports_the_entry_points_or_their_flags():
    for package in PACKAGES:
        for name, modules in package_imports(package).items():
            assert not {"flags", "train", "evaluate", "predict"} & modules, f"{package}/{name}"
