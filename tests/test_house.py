"""The package's layout: one complete module map, imports that run one way, no citations of unshipped notes."""

import ast
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "inolib"
# the order of the groups: a module imports only from its own group or groups before it (cli: anything)
LAYERS = {"top": 0, "data": 1, "vos": 2, "run": 3, "course": 4}


def modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = f.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def group(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PKG / parts[1]).is_dir()) else "top"


def imports_of(mod: str, path: Path) -> set[str]:
    """Every inolib module ``mod`` imports, at the top of the file or inside functions."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("inolib"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("inolib"))
    return found & set(modules())


def test_the_module_map_names_every_module_and_only_existing_ones():
    text = (REPO / "docs" / "modules.md").read_text()
    named = set(re.findall(r"`(inolib/[\w/]+\.py)`", text))
    files = {str(f.relative_to(REPO)) for f in PKG.rglob("*.py") if f.name != "__init__.py"}
    assert files - named == set(), "modules missing from docs/modules.md"
    assert named - files == set(), "docs/modules.md names modules that do not exist"
    top = [f for f in PKG.glob("*.py") if f.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= 14, sorted(f.name for f in top)


def test_imports_run_one_way():
    mods = modules()
    wrong = []
    for mod, path in mods.items():
        g = group(mod)
        if mod in ("inolib.cli", "inolib.__main__", "inolib"):
            continue
        for target in imports_of(mod, path):
            tg = group(target)
            if g == "released":
                ok = tg in ("top", "released")
            elif tg == "released":
                ok = False  # the yardstick is for tests and benchmarks only
            else:
                ok = target != "inolib.cli" and LAYERS[tg] <= LAYERS[g]
            if not ok:
                wrong.append(f"{mod} -> {target}")
    assert not wrong, wrong



def test_no_citation_of_an_unshipped_note_and_no_path_into_tests():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    refs, paths = [], []
    for name in files:
        p = REPO / name
        if p.suffix not in (".py", ".md", ".ipynb", ".toml", ".yml") or not p.is_file():
            continue
        text = p.read_text(errors="replace")
        if re.search(r"ref\s*§|ino_reference\.md|shared/[r]eference", text):
            refs.append(name)
        if re.search(r"sys\.path\.\w+\(.*tests", text):
            paths.append(name)
    assert not refs, f"cite the paper, the released code or docs/released_code.md instead: {refs}"
    assert not paths, f"import the transcriptions from inolib.released, not through sys.path: {paths}"


def test_the_readme_is_short_and_its_links_resolve():
    text = (REPO / "README.md").read_text()
    assert len(text.split()) <= 1700, "the README is read in minutes: move detail into docs/"
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.name} -> {target}")
    assert not broken, broken
    for doc in ("training.md", "propagation.md", "checkpoints.md", "gpu_check.md", "released_code.md", "modules.md"):
        assert f"docs/{doc}" in text, f"the README links docs/{doc}"


def test_docstrings_are_read_at_a_glance():
    long = []
    for f in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc.split()) > 100:
                    long.append(f"{f.relative_to(REPO)}:{node.lineno} {node.name} ({len(doc.split())} words)")
    assert not long, long


def test_old_module_names_still_import_with_a_warning_naming_the_new_home():
    import importlib

    import pytest

    import inolib

    for old, homes in inolib.MOVED.items():
        assert all(h in modules() for h in homes), old
        with pytest.warns(DeprecationWarning, match=homes[0].replace(".", r"\.")):
            module = importlib.import_module(old)
        public = [n for n in vars(importlib.import_module(homes[-1])) if not n.startswith("_")]
        assert getattr(module, public[-1]) is getattr(importlib.import_module(homes[-1]), public[-1])
    from inolib.segment import VideoSequence, segment_davis, write_ids_png  # noqa: F401  (split over three)
    from inolib.train import Trainer, read_log  # noqa: F401
    with pytest.raises(ImportError):
        from inolib.train import no_such_name  # noqa: F401


def test_paths_found_from_the_package_survive_the_move(tmp_path, monkeypatch):
    """The lessons find data/ from any folder, and launch_local's workers import this inolib: both go up from the
    package's own folder, not from a module's (which moved)."""
    from inolib.course import notebook
    from inolib.run.launch import worker_env

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INOLIB_DATA", raising=False)
    assert notebook.data_dir() == REPO / "data"
    assert worker_env(0, 1, 1, base={})["PYTHONPATH"].split(":")[0] == str(REPO)
