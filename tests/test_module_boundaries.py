"""Module boundaries from the style guide: protocol/ is sans-IO and storage/ knows nothing of the network."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULES = {
    "protocol": {"linkd", "trio", "socket", "asyncio", "selectors", "httpx", "starlette", "hypercorn"},
    "linkd/storage": {"trio", "socket", "asyncio", "linkd.broker", "linkd.link", "linkd.admin", "httpx", "starlette"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level >= 2 and "linkd/storage" in str(path.parent.relative_to(ROOT)):
            names.add("linkd." + (node.module or ""))  # storage reaching up into a sibling package
    return names


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_does_not_import_forbidden_modules(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            if any(name == banned or name.startswith(banned + ".") for banned in RULES[package]):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)
