"""Broken, noisy and look-alike plugins, installed for real and driven through the real CLI.

Each fake plugin is a distribution on disk (``<name>.dist-info`` with METADATA and
entry_points.txt, next to its module) put on PYTHONPATH of an ``adcore`` subprocess,
so discovery, import, stdout and exit codes are the ones a user sees.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REAL_DETECTORS = {"draem", "padim", "reverse_distillation", "riad", "simplenet", "spade"}

HOOK = "from adcore.hookspecs import hookimpl\n"  # every fake module starts with it
FAKE_PLUGINS = {
    "raises-at-import": "raise RuntimeError('boom at import')\n",
    "exits-at-import": "import sys\nsys.exit(3)\n",
    "syntax-error": "def broken(:\n    pass\n",
    "hook-raises": """
        @hookimpl
        def register_detectors(register):
            register("half_registered", "collections:OrderedDict")
            raise ValueError("boom in hook")

        @hookimpl
        def register_datasets(register):
            register("kept_dataset", "collections:OrderedDict")
        """,
    "bad-register-call": """
        @hookimpl
        def register_detectors(register):
            register("no_target")
        """,
    "noisy": """
        import os, sys
        print("noise on stdout at import")
        print("noise on stderr at import", file=sys.stderr)
        os.write(1, b"noise on descriptor 1 at import\\n")

        @hookimpl
        def register_detectors(register):
            print("noise on stdout in a hook")
            register("noisy_detector", "collections:OrderedDict")
        """,
    "bad-name": """
        @hookimpl
        def register_detectors(register):
            register("Bad-Name", "collections:OrderedDict")
            register("good_name", "collections:OrderedDict", aliases=("Bad Alias",))
            register("also_good", "collections:OrderedDict")
        """,
    "lookalike": """
        @hookimpl
        def register_detectors(register):
            register("patchcore", "adcore_fake_lookalike:PatchCore", description="totally the real one")

        @hookimpl
        def register_backbones(register):
            register("resnet18", "adcore_fake_lookalike:create")
        """,
    "lazy-boom": """
        @hookimpl
        def register_detectors(register):
            register("lazy_raise", "adcore_fake_lazy_raise_impl:Detector")
            register("lazy_exit", "adcore_fake_lazy_exit_impl:Detector")
        """,
}
LAZY_TARGETS = {
    "adcore_fake_lazy_raise_impl": "raise RuntimeError('boom at first use')\n",
    "adcore_fake_lazy_exit_impl": "import sys\nsys.exit('exit at first use')\n",
}


def _module_name(distribution: str) -> str:
    return "adcore_fake_" + distribution.replace("-", "_")


def _write_distribution(site: Path, distribution: str, source: str) -> None:
    """One installed distribution: its metadata, its ``adcore`` entry point and its module."""
    dist_info = site / f"{distribution.replace('-', '_')}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
    entry_point = distribution.replace("-", "_")
    (dist_info / "entry_points.txt").write_text(f"[adcore]\n{entry_point} = {_module_name(distribution)}\n")
    (site / f"{_module_name(distribution)}.py").write_text(HOOK + textwrap.dedent(source))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding every fake distribution, as ``pip install --target`` would leave it."""
    root = tmp_path_factory.mktemp("site")
    for distribution, source in FAKE_PLUGINS.items():
        _write_distribution(root, distribution, source)
    for module, source in LAZY_TARGETS.items():
        (root / f"{module}.py").write_text(source)
    return root


def _adcore(site: Path, *args: str, load: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed ``adcore`` command with the fake distributions importable."""
    env = {key: value for key, value in os.environ.items() if key != "ADCORE_LOAD_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    if load is not None:
        env["ADCORE_LOAD_PLUGINS"] = load
    script = shutil.which("adcore", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-c", "from adcore.cli.main import cli; cli()"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def infos(site: Path) -> dict[str, dict]:
    """``adcore plugins --json`` with every fake installed, by distribution; it must parse."""
    result = _adcore(site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    return {info["distribution"]: info for info in json.loads(result.stdout)}


@pytest.mark.parametrize(("distribution", "error"), [
    ("raises-at-import", "RuntimeError: boom at import"),
    ("exits-at-import", "SystemExit: 3"),
    ("syntax-error", "SyntaxError: "),
    ("hook-raises", "register_detectors failed, so none of its names are used: ValueError: boom in hook"),
    ("bad-register-call", "register_detectors failed, so none of its names are used: TypeError: "),
])
def test_failing_plugin_is_recorded_on_one_line(infos, distribution, error):
    info = infos[distribution]
    assert error in info["error"] and "\n" not in info["error"]
    assert info["version"] == "0.1"


def test_other_plugins_load_and_a_failing_hook_keeps_the_plugins_other_hooks(infos):
    real = [info for info in infos.values() if info["distribution"].startswith("adcore-plugin-")]
    assert real and all(info["error"] is None for info in real)
    assert {name for info in real for name in info["provides"].get("detector", [])} >= REAL_DETECTORS
    assert infos["hook-raises"]["provides"] == {"dataset": ["kept_dataset"]}


def test_plugin_output_is_kept_off_stdout(site, infos):
    assert "noise on stdout at import" in infos["noisy"]["output"]
    assert "noise on stdout in a hook" in infos["noisy"]["output"]
    assert "noise on descriptor 1 at import" in infos["noisy"]["output"]  # written past sys.stdout
    listing = _adcore(site, "list", "detectors")
    assert listing.returncode == 0, listing.stderr
    listed = {line.split()[0] for line in listing.stdout.splitlines()}
    assert listed >= REAL_DETECTORS | {"noisy_detector"}
    assert "noise on" not in listing.stdout
    assert "noise on" not in listing.stderr


def test_bad_names_are_refused_and_the_valid_ones_kept(infos):
    info = infos["bad-name"]
    assert info["provides"] == {"detector": ["also_good"]}
    assert "refused detector 'Bad-Name'" in info["error"] and "[a-z][a-z0-9_]*" in info["error"]
    assert "alias 'Bad Alias'" in info["error"]


def test_lookalike_name_belongs_to_neither(site, infos, tmp_path):
    assert "patchcore" not in infos["adcore-plugin-patchcore"]["provides"].get("detector", [])
    assert [c["distributions"] for c in infos["lookalike"]["conflicts"]] == [
        ["adcore-plugin-patchcore", "lookalike"], ["adcore", "lookalike"]]
    result = _adcore(site, "run", "--detector", "patchcore", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "adcore-plugin-patchcore and lookalike" in result.stderr and "ADCORE_LOAD_PLUGINS" in result.stderr
    assert not (tmp_path / "out").exists()


def test_conflicts_show_in_plugins_and_list(site):
    shown = _adcore(site, "plugins").stdout
    assert "CONFLICT: detector 'patchcore' is registered by both adcore-plugin-patchcore and lookalike" in shown
    backbones = _adcore(site, "list", "backbones").stdout
    assert "resnet18  [adcore, lookalike]  CONFLICT" in backbones
    assert "uninstall lookalike" in backbones


def test_load_plugins_resolves_a_conflict(site):
    listing = _adcore(site, "list", "detectors", load="patchcore,padim")
    assert listing.returncode == 0 and listing.stderr == ""
    assert listing.stdout.splitlines()[1].startswith("patchcore  [adcore-plugin-patchcore]")


@pytest.mark.parametrize(("detector", "error"), [
    ("lazy_raise", "RuntimeError: boom at first use"),
    ("lazy_exit", "SystemExit: exit at first use"),
])
def test_lazy_target_failing_at_first_use_is_one_line_naming_the_plugin(site, tmp_path, detector, error):
    result = _adcore(site, "run", "--detector", detector, "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: detector '{detector}' of plugin lazy-boom cannot be loaded")
    assert error in result.stderr and result.stderr.count("\n") == 1


def test_load_plugins_naming_a_missing_plugin_warns(site):
    result = _adcore(site, "list", "detectors", load="nonexistent")
    assert result.returncode == 0
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Warning: ADCORE_LOAD_PLUGINS names nonexistent, which is not installed")
    assert "patchcore (adcore-plugin-patchcore)" in result.stderr and "lookalike (lookalike)" in result.stderr


def test_unreadable_entry_points_file_is_that_plugins_error(tmp_path):
    dist_info = tmp_path / "garbled-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: garbled\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[adcore]\nno equals sign here\n")
    result = _adcore(tmp_path, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    infos = {info["distribution"]: info for info in json.loads(result.stdout)}
    assert infos["garbled"]["error"].startswith("entry_points.txt: ")
    assert {name for info in infos.values() for name in info["provides"].get("detector", [])} >= REAL_DETECTORS


def test_a_detector_whose_constructor_raises_is_one_line_naming_the_plugin(monkeypatch):
    from adcore.errors import PluginError
    from adcore.runner import RunOptions, make_detector
    from adcore_plugin_padim.detector import PaDiM

    def broken(self, *args, **kwargs):
        raise ZeroDivisionError("plugin bug")

    monkeypatch.setattr(PaDiM, "__init__", broken)
    with pytest.raises(PluginError, match=r"detector 'padim' of .*padim.* failed to build: ZeroDivisionError"):
        make_detector(RunOptions(detector="padim"))
