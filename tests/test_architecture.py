"""Imports run one way, from the ground up (docs/ARCHITECTURE.md).

Every module of the package is parsed with `ast` (no import runs), and every
import is collected: top-level ones, those inside functions (a lazy import is
still an import), and the module paths named in strings that `importlib` /
`_lazy.lazy_getattr` import later (`"deeplab_keras.models.layers"`). Then:

  (a) there is no import cycle, between modules or between packages;
  (b) each package imports only its own layer or the layers below, except the
      few upward imports allow-listed below, each with its reason (and each
      explained in its module's docstring).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "deeplab_keras"

# The layers, ground first. A package (or top-level module) may import its own
# layer and those below. `<root>` is `deeplab_keras/__init__.py`, the facade that
# registers the serializable classes and re-exports the main names.
LAYERS = (
    ("_lazy", "utils", "preprocessing", "palette", "labels", "viz"),  # 1. ground: no package imports
    ("models", "crf"),                                                  # 2. the networks and the CRF
    ("convert",),                                                       # 3. file formats -> weights
    ("pretrained",),                                                    # 4. released models: registry, download, cache
    ("data",),                                                          # 5. readers, pipeline
    ("evaluation",),                                                    # 6. metrics, mIoU
    ("training",),                                                      # 7. the recipe (may use evaluation)
    ("export",),                                                        # 8. SavedModel / TFLite / ONNX
    ("app", "predict", "<root>"),                                       # 9. main job, CLIs, the facade
)
LAYER_OF = {pkg: i for i, names in enumerate(LAYERS) for pkg in names}

# Justified upward imports: (importing module, imported module) -> why.
ALLOWED_UPWARD = {
    # Backwards compatibility: `deeplab_keras.models.load_pretrained` (and Release,
    # available_pretrained, get_release) is in the README; the registry moved one
    # layer up because it converts files. Re-exported lazily, on attribute access.
    ("deeplab_keras.models", "deeplab_keras.pretrained"):
        "models.load_pretrained: lazy backwards-compatible re-export",
    # Backwards compatibility: `from deeplab_keras.training import run` is in the
    # README; the main job (train -> evaluate -> export) moved to the top layer.
    ("deeplab_keras.training", "deeplab_keras.app.job"):
        "training.run: lazy backwards-compatible re-export",
    # `python -m deeplab_keras.evaluation` is documented; the command line lives in
    # the top layer (it needs training's presets and checkpoints). Nothing imports
    # a __main__ module, so this edge closes no loop.
    ("deeplab_keras.evaluation.__main__", "deeplab_keras.app.evaluate_cli"):
        "python -m deeplab_keras.evaluation",
}


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules():
    """{module name: (path, is a package __init__)} of every module of the package."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        found[_module_name(path)] = (path, path.name == "__init__.py")
    return found


def _resolve(name, modules):
    """The longest prefix of a dotted name that is a module of the package."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts = parts[:-1]
    return None


def scan(modules=None):
    """{module: {imported module of the package}} from the source text of each module."""
    modules = modules if modules is not None else _modules()
    edges = {}
    for name, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package = name if is_package else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # `from a import b` imports the module a.b when b is one, else a.
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                # Module paths imported later by importlib / lazy_getattr.
                text = node.value
                if text.startswith(PACKAGE + ".") and text.replace(".", "").replace("_", "").isalnum():
                    targets.add(text)
        resolved = {_resolve(t, modules) for t in targets if t == PACKAGE or t.startswith(PACKAGE + ".")}
        edges[name] = {t for t in resolved if t and t != name}
    return edges


def package_of(module):
    """The top-level package (or module) of `deeplab_keras.<x>...`; `<root>` for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def _cycle(graph):
    """One cycle of a {node: {node}} graph as a list, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def layering_problems(edges):
    """(upward imports not allow-listed, module cycle, package cycle) of a scan."""
    kept = {a: {b for b in bs if (a, b) not in ALLOWED_UPWARD} for a, bs in edges.items()}
    upward = []
    packages = {}
    for a, bs in kept.items():
        for b in bs:
            pa, pb = package_of(a), package_of(b)
            if pa == pb:
                continue
            packages.setdefault(pa, set()).add(pb)
            if pa not in LAYER_OF or pb not in LAYER_OF:
                upward.append(f"{a} -> {b}: package {pa if pa not in LAYER_OF else pb!r} has no layer "
                              "in tests/test_architecture.py LAYERS")
            elif LAYER_OF[pb] > LAYER_OF[pa]:
                upward.append(f"{a} -> {b}: {pa} (layer {LAYER_OF[pa] + 1}) imports {pb} "
                              f"(layer {LAYER_OF[pb] + 1})")
    # `<root>` is imported implicitly by every module (Python runs the parent
    # package first); only explicit imports count, so its edges close no cycle
    # unless a module names it.
    return sorted(upward), _cycle(kept), _cycle(packages)


def test_every_package_has_a_layer():
    missing = sorted({package_of(m) for m in _modules()} - set(LAYER_OF))
    assert not missing, f"give these packages a layer in LAYERS (docs/ARCHITECTURE.md): {missing}"


def test_imports_run_one_way():
    upward, module_cycle, package_cycle = layering_problems(scan())
    assert not upward, "upward imports (move the code, or allow-list it with its reason):\n" + "\n".join(upward)
    assert module_cycle is None, f"import cycle between modules: {' -> '.join(module_cycle)}"
    assert package_cycle is None, f"import cycle between packages: {' -> '.join(package_cycle)}"


def test_allow_list_is_current():
    """Each allow-listed upward import still exists, is upward, and says why in its docstring."""
    modules = _modules()
    edges = scan(modules)
    for (a, b), why in ALLOWED_UPWARD.items():
        assert b in edges.get(a, set()), f"allow-listed {a} -> {b} ({why}) no longer exists: remove it"
        assert LAYER_OF[package_of(b)] > LAYER_OF[package_of(a)], f"{a} -> {b} is not upward: remove it"
        doc = ast.get_docstring(ast.parse(modules[a][0].read_text())) or ""
        assert f"{PACKAGE}.{package_of(b)}" in doc, f"{a}'s docstring must say why it imports {b} upward"


@pytest.mark.parametrize("where, line", [
    ("data/fake_upward.py", "from deeplab_keras.training import apply_overrides\n"),
    ("data/fake_lazy.py", "def f():\n    from deeplab_keras.export import export_saved_model\n"),
    ("models/fake_string.py", "LAZY = {'x': 'deeplab_keras.convert.convert'}\n"),
    ("evaluation/fake_relative.py", "from ..training import trainer\n"),
])
def test_an_added_upward_import_is_caught(tmp_path, where, line):
    """The scan sees a new upward import in any of its forms (top level, inside a
    function, a lazy-map string, relative), so the checks above can fail."""
    modules = _modules()
    path = tmp_path / where
    path.parent.mkdir(parents=True)
    path.write_text(line)
    name = f"{PACKAGE}." + where[:-3].replace("/", ".")
    modules[name] = (path, False)
    upward, _, _ = layering_problems(scan(modules))
    assert any(u.startswith(f"{name} -> ") for u in upward), upward


def test_a_cycle_is_caught(tmp_path):
    """Two same-layer packages importing each other form a package cycle."""
    modules = _modules()
    for where, line in (("models/fake_a.py", "import deeplab_keras.crf.fake_b\n"),
                        ("crf/fake_b.py", "import deeplab_keras.models.fake_a\n")):
        path = tmp_path / where
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line)
        modules[f"{PACKAGE}." + where[:-3].replace("/", ".")] = (path, False)
    _, module_cycle, package_cycle = layering_problems(scan(modules))
    assert module_cycle and package_cycle
