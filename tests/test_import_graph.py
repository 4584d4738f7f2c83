"""The package graph, read statically from every import statement (including imports inside
functions): ``mmdvit.analysis`` never imports ``mmdvit.deploy`` (deploy builds on analysis, not
the reverse), and the sparse core ``mmdvit.sparse`` imports only torch, the standard library and
itself."""
import ast
import sys
from pathlib import Path
from typing import Set

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path, root: Path = ROOT) -> Set[str]:
    """Absolute names of the modules the file at ``path`` (under ``root``) imports, relative
    imports resolved; ``from a import b`` gives ``a`` and ``a.b`` (b may be a module)."""
    package = list(path.relative_to(root).parent.parts)
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parent = package[:len(package) - node.level + 1]
                base = '.'.join(parent + ([node.module] if node.module else []))
            names.add(base)
            names.update(f'{base}.{alias.name}' for alias in node.names)
    return names


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + '.')


def test_imported_modules_resolves_every_spelling(tmp_path):
    module = tmp_path / 'mmdvit' / 'analysis' / 'example.py'
    module.parent.mkdir(parents=True)
    module.write_text('import os\nfrom ..deploy import export_onnx\nfrom .. import deploy\n'
                      'from .inputs import sample_photos\n\n\ndef late():\n'
                      '    import mmdvit.deploy.onnx_export\n')
    assert imported_modules(module, tmp_path) == {
        'os', 'mmdvit', 'mmdvit.deploy', 'mmdvit.deploy.export_onnx', 'mmdvit.analysis.inputs',
        'mmdvit.analysis.inputs.sample_photos', 'mmdvit.deploy.onnx_export'
    }


@pytest.mark.parametrize('path', sorted((ROOT / 'mmdvit' / 'analysis').rglob('*.py')),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_analysis_does_not_import_deploy(path):
    assert not [n for n in imported_modules(path) if within(n, 'mmdvit.deploy')]


@pytest.mark.parametrize('path', sorted((ROOT / 'mmdvit' / 'sparse').rglob('*.py')),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_torch_stdlib_and_itself_only(path):
    allowed = {'torch', *sys.stdlib_module_names}
    foreign = [n for n in imported_modules(path)
               if not (within(n, 'mmdvit.sparse') or n.split('.')[0] in allowed)]
    assert not foreign
