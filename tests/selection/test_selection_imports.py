import subprocess
import sys


def test_import_selection_is_light():
    code = (
        "import sys; from thresher import selection; selection.load_recipe({'inputs': ['x.jsonl'], "
        "'steps': [{'type': 'length'}]}); "
        "heavy = [m for m in ('torch', 'ray', 'pyarrow', 'matplotlib', 'datasets', 'transformers')"
        " if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_selection_imports_no_sibling_package():
    code = (
        "import sys, thresher.selection, thresher.selection.engine, "
        "thresher.selection.executors.local, thresher.selection.executors.ray_cluster; "
        "thresher.selection.registry.load_builtin_steps(); "
        "bad = [m for m in sys.modules if m.split('.')[:2] in "
        "(['thresher', 'prompting'], ['thresher', 'compression'], ['thresher', 'api'])]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
