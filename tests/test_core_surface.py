"""The sparse core's public surface is what ``mmdvit.sparse.__all__`` declares: library code
(``mmdvit/`` outside the core, ``tools/``) imports only those names, and only from the package
itself, never from its submodules (tests may)."""
import ast
from pathlib import Path
from typing import Iterator, Tuple

import mmdvit.sparse as core

ROOT = Path(__file__).resolve().parents[1]
CORE = 'mmdvit.sparse'


def module_name(path: Path) -> str:
    """Dotted module name of a file under ROOT (``mmdvit/a/b.py`` -> ``mmdvit.a.b``)."""
    parts = path.relative_to(ROOT).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def absolute(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module an ``import from`` in ``path`` reads (relative levels resolved)."""
    if not node.level:
        return node.module or ''
    package = module_name(path).split('.')
    if path.name != '__init__.py':
        package = package[:-1]
    base = package[:len(package) - node.level + 1]
    return '.'.join(base + ([node.module] if node.module else []))


def library_files() -> Iterator[Path]:
    """Library code: mmdvit/ outside the core, and tools/."""
    for path in sorted((ROOT / 'mmdvit').rglob('*.py')):
        if (ROOT / 'mmdvit' / 'sparse') not in path.parents:
            yield path
    yield from sorted((ROOT / 'tools').rglob('*.py'))


def core_imports() -> Iterator[Tuple[str, str, str]]:
    """(file, module, name) of every name library code imports from the core."""
    for path in library_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = str(path.relative_to(ROOT))
            if isinstance(node, ast.ImportFrom):
                module = absolute(node, path)
                if module == CORE or module.startswith(CORE + '.'):
                    for alias in node.names:
                        yield where, module, alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(CORE + '.'):
                        yield where, alias.name, '*'


def test_absolute_resolves_relative_imports():
    path = ROOT / 'mmdvit' / 'models' / 'heads' / 'fpn.py'
    node = ast.parse('from ...sparse.gate import x').body[0]
    assert absolute(node, path) == 'mmdvit.sparse.gate'
    init = ROOT / 'mmdvit' / 'models' / '__init__.py'
    assert absolute(ast.parse('from ..sparse import x').body[0], init) == 'mmdvit.sparse'


def test_library_code_imports_only_declared_names_from_the_package():
    imports = list(core_imports())
    # The walk sees the known users (guards against a walk that finds nothing).
    assert ('mmdvit/models/heads/fpn.py', CORE, 'SparseModule') in imports
    assert any(where.startswith('tools/') for where, _, _ in imports)
    undeclared = [i for i in imports if i[2] not in core.__all__]
    assert not undeclared, f'add to mmdvit.sparse.__all__ (or keep internal): {undeclared}'
    from_submodules = [i for i in imports if i[1] != CORE]
    assert not from_submodules, f'import these from mmdvit.sparse itself: {from_submodules}'


def test_every_declared_name_exists():
    missing = [name for name in core.__all__ if not hasattr(core, name)]
    assert not missing
    assert len(set(core.__all__)) == len(core.__all__)
