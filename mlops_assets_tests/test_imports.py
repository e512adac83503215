"""Loading definitions stays fast: `dagster dev` reloads them often. The heavy libraries load
only inside the functions that use them, and no module imports back up the layers."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mlops_assets"
HEAVY = ("torch", "mlflow", "evidently", "onnxruntime", "lightgbm", "sklearn", "matplotlib")


def test_building_the_demo_definitions_imports_no_heavy_library():
    code = (
        "import sys, mlops_assets\n"
        "from mlops_assets.demo import demo_spec\n"
        "from mlops_assets.definitions import build_mlops_defs\n"
        "import tempfile\n"
        "defs = build_mlops_defs(demo_spec(tempfile.mkdtemp()))\n"
        "defs.resolve_asset_graph()\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def test_no_module_imports_the_package_root():
    offenders = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if p.name != "__init__.py" or p.parent != PACKAGE
                 if "mlops_assets" in _imports(p)]
    assert offenders == []


def test_arrows_point_down():
    rules = {
        # layer: packages it must never import
        "core": ("mlops_assets.stages", "mlops_assets.automation", "mlops_assets.resources", "mlops_assets.sources",
                 "mlops_assets.definitions", "mlops_assets.pipeline", "dagster", "mlflow"),
        "stages": ("mlops_assets.automation", "mlops_assets.definitions", "mlops_assets.component"),
        "automation": ("mlops_assets.stages", "mlops_assets.definitions", "mlops_assets.component"),
        "resources": ("mlops_assets.stages", "mlops_assets.automation", "mlops_assets.definitions"),
        "sources": ("mlops_assets.stages", "mlops_assets.automation", "mlops_assets.definitions"),
        "serving": ("mlops_assets.stages", "mlops_assets.automation", "mlops_assets.definitions"),
    }
    broken = []
    for layer, forbidden in rules.items():
        for path in _modules(layer):
            for module in _imports(path):
                if any(module == f or module.startswith(f + ".") for f in forbidden):
                    broken.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert broken == []


def test_only_the_registry_resource_speaks_mlflow():
    allowed = {"resources/registry.py", "resources/mlflow_runs.py", "resources/pyfunc_model.py"}
    speakers = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                if any(m == "mlflow" or m.startswith("mlflow.") for m in _imports(p))}
    assert speakers <= allowed, speakers - allowed
