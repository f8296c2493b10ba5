import subprocess
import sys


def test_packages_import_without_torch():
    code = (
        "import sys; from thresher import core, selection, prompting, compression, api; "
        "import thresher.core.models, thresher.core.backends, thresher.core.tokens; "
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'faiss') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
