"""The data layer's imports run one way: down to the ground layer, never up.

Read from the source (module-level imports, imports inside functions, and the
lazy tables' module strings), so an upward import hidden in a function fails
here too.
"""

import ast
from pathlib import Path

import deeplab_keras

PACKAGE = Path(deeplab_keras.__file__).parent
# What data/ may import from the package: itself and the ground layer.
ALLOWED = {"data", "palette", "labels", "preprocessing", "utils", "_lazy"}


def _package_imports(path):
    """[(line, 'deeplab_keras.x.y')] of every package import in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith("deeplab_keras.") and " " not in node.value:
            found.append((node.lineno, node.value))
    return [(line, name) for line, name in found if name.startswith("deeplab_keras.")]


def test_data_imports_nothing_above_it():
    files = sorted((PACKAGE / "data").rglob("*.py"))
    assert len(files) > 10  # the scan sees the custom/ package too
    upward = [f"{f.relative_to(PACKAGE)}:{line}: {name}" for f in files
              for line, name in _package_imports(f) if name.split(".")[1] not in ALLOWED]
    assert not upward, "data/ imports a layer above it:\n" + "\n".join(upward)


def test_utils_imports_nothing_of_the_package():
    found = [f"{f.name}:{line}: {name}" for f in sorted((PACKAGE / "utils").glob("*.py"))
             for line, name in _package_imports(f)]
    assert not found, found


def test_the_scan_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from deeplab_keras.training.trainer import train\n")
    assert _package_imports(bad) == [(2, "deeplab_keras.training.trainer")]
