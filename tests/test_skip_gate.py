"""CI's gate on unexpected skips (tests/skip_gate.py), run on a real pytest session."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from skip_gate import ALLOWED_SKIPS, unexpected

HERE = Path(__file__).resolve().parent


def run_pytest(folder: Path, ci: bool, *options: str) -> subprocess.CompletedProcess[str]:
    (folder / "test_sample.py").write_text(textwrap.dedent("""\
        import pytest

        def test_runs():
            pass

        @pytest.mark.skip(reason="no frobnicator here")
        def test_skipped():
            pass

        @pytest.mark.xfail(reason="known")
        def test_expected_failure():
            assert False
        """))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "skip_gate",
                           "-p", "no:cacheprovider", *options, "test_sample.py"],
                          capture_output=True, text=True, cwd=folder, env=env, timeout=120)


@pytest.mark.parametrize("options", [(), ("-n", "2")], ids=["plain", "xdist"])
def test_an_unlisted_skip_fails_ci_and_is_named(tmp_path: Path, options: tuple[str, ...]
                                                ) -> None:
    """Also when the skip happens in a pytest-xdist worker, as in the project's own runs."""
    result = run_pytest(tmp_path, True, *options)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 skipped test(s) not in ALLOWED_SKIPS" in result.stdout
    assert "test_sample.py::test_skipped: no frobnicator here" in result.stdout
    assert "test_expected_failure" not in result.stdout.split("ALLOWED_SKIPS")[1]


def test_outside_ci_a_skip_is_only_a_skip(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, ci=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALLOWED_SKIPS" not in result.stdout


def test_the_allow_list_matches_by_pattern_and_gives_reasons() -> None:
    skips = [("tests/test_deploy.py::test_helm_template_renders", "helm is not installed"),
             ("tests/test_watcher.py::test_x[borg-2]", "set HIVE_TEST_BORG2")]
    assert unexpected(skips) == skips[1:]
    assert all(reason.strip() for reason in ALLOWED_SKIPS.values())
