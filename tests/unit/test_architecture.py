"""The import graph is the architecture: layers with no arrow upwards and no cycle anywhere,
imports inside functions included (grimp reads every import statement)."""

import grimp
from cli_helpers import ROOT
from importlinter.cli import lint_imports


def test_the_layers_contract_in_pyproject_is_kept():
    # cli > bench | rollout > reports > evaluation > sweeps > train > runspec > algorithms >
    # curriculum | models | episodes > envs > cluster | interrupts | provenance | storage |
    # wandb_logging > specfile | stats > keys | runfiles  (as pyproject.toml declares them)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0


def _cycle(graph: grimp.ImportGraph) -> list[str] | None:
    """A cycle of direct imports between marlscale's modules, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            found = visit(imported, path + [module])
            if found:
                return found
        done.add(module)
        return None

    for module in sorted(graph.modules):
        found = visit(module, [])
        if found:
            return found
    return None


def test_no_two_modules_import_each_other_even_lazily():
    graph = grimp.build_graph("marlscale", include_external_packages=False)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_check_finds_a_cycle():
    graph = grimp.ImportGraph()
    for module in ("a", "a.x", "a.y"):
        graph.add_module(module)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    assert _cycle(graph) == ["a.x", "a.y", "a.x"]
