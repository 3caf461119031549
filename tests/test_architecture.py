"""Only tracetui/ui/ may import Textual: the receiver and the scripting commands must start without it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import receiver_env

import tracetui

PACKAGE = Path(tracetui.__file__).parent
UI = PACKAGE / "ui"


def textual_imports(source: str, label: str) -> list[str]:
    """`import textual...` / `from textual... import` statements anywhere in the source (also inside functions)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=label)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{label}:{node.lineno}: {n}" for n in names if n == "textual" or n.startswith("textual.")]
    return found


def non_ui_modules() -> list[Path]:
    files = [p for p in sorted(PACKAGE.rglob("*.py")) if UI not in p.parents]
    assert len(files) >= 10, files  # the scan really covers the package
    return files


def test_no_module_outside_ui_imports_textual():
    offenders = [
        hit
        for path in non_ui_modules()
        for hit in textual_imports(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    ]
    assert offenders == []


def test_the_scanner_finds_every_form_of_textual_import():
    # Guard against a scan that can never fail.
    code = (
        "import os\nimport textual\nfrom textual.app import App\nimport textual_fake\n"
        "def f():\n    import rich, textual.widgets as w\n"
    )
    assert textual_imports(code, "probe.py") == [
        "probe.py:2: textual",
        "probe.py:3: textual.app",
        "probe.py:6: textual.widgets",
    ]


PROBE = textwrap.dedent(
    """
    import dataclasses, json, sys, threading
    from pathlib import Path

    import tracetui.cli.main, tracetui.ingest.receiver, tracetui.llm.semconv, tracetui.model.fmt
    import tracetui.store.reader, tracetui.store.writer, tracetui.store.schema
    import tracetui.ingest.grpc_server, tracetui.otlp.decode, tracetui.otlp.files

    # the command line, as `tracetui serve --help` and `tracetui traces --help` run it
    for args in (["serve", "--help"], ["traces", "--help"], ["spans", "--help"]):
        try:
            tracetui.cli.main.main(args, standalone_mode=False)
        except SystemExit:
            pass

    # the receiver's whole start-up and shutdown path, in this process
    from tracetui.model.config import ReceiverSettings
    stop = threading.Event()
    stop.set()
    ports = {f.name: 0 for f in dataclasses.fields(ReceiverSettings) if f.name.endswith("_port")}
    settings = ReceiverSettings(db_path=Path(sys.argv[1]), **ports)
    code = tracetui.ingest.receiver.run_receiver(settings, stop=stop)

    # and a scripting command on the database it made
    tracetui.cli.main.main(["traces", "--db", sys.argv[1], "--json"], standalone_mode=False)

    loaded = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
    heavy = sorted(m for m in ("pandas", "numpy", "pyarrow") if sys.modules.get(m) is not None)
    print(json.dumps({"code": code, "textual": loaded, "heavy": heavy}), file=sys.stderr)
    """
)


def test_receiver_and_scripting_paths_never_load_textual(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "probe.db")],
        capture_output=True,
        text=True,
        timeout=60,
        env=receiver_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    assert result["code"] == 0
    assert result["textual"] == []
    # sqlite-utils (the FTS index of a new database) imports these when installed: ~75 MB a process
    assert result["heavy"] == []
    assert proc.stdout.strip().splitlines()[-1] == "[]"  # the traces command really ran


@pytest.mark.parametrize("args", [["serve", "--help"], ["traces", "--help"]], ids=["serve", "traces"])
def test_entry_point_help_does_not_load_textual(args):
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['tracetui', *{args!r}]\n"
        "try:\n    runpy.run_module('tracetui', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('TEXTUAL_LOADED' if any(m.split('.')[0] == 'textual' for m in sys.modules) else 'CLEAN')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=receiver_env())
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "CLEAN"


# --- the layers (README "Layout"; contracts in pyproject.toml [tool.importlinter]) -------------------


def _contracts() -> list[dict]:
    import tomllib

    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    return pyproject["tool"]["importlinter"]["contracts"]


def test_the_import_contracts_hold():
    """No import points up the layers, the UI never reaches the store, only the UI imports Textual."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in done.stdout


def test_every_package_has_its_place_in_the_layers():
    """A new package cannot escape the rule: each one under tracetui/ is named in the layers contract."""
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    named = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    packages = {f"tracetui.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == named
