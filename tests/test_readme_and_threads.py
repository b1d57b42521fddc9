"""The README's worked example runs, and OMP_NUM_THREADS / num_threads are
respected."""
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import mlpgx

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_quick_start_is_two_commands():
    text = README.read_text()
    block = re.search(r"## Quick start\s+```bash\n(.*?)```", text, re.S)
    assert block, "README has no quick-start bash block"
    commands = [ln for ln in block.group(1).splitlines() if ln.strip()]
    assert len(commands) == 2
    assert "python -m mlpgx" in commands[0] and "pytest" in commands[1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1].split("#")[0].strip() in ci, ".ci/run must run the README's test command"


def test_readme_worked_example_runs(capsys):
    text = README.read_text()
    blocks = re.findall(r"## Worked example\s+```python\n(.*?)```", text, re.S)
    assert blocks
    namespace = {}
    exec(compile(blocks[0], "README-worked-example", "exec"), namespace)
    c = namespace["c"]
    assert c.shape == (578, 60) and c.dtype == np.float32
    assert "PASS" in capsys.readouterr().out


@pytest.mark.parametrize("n", ["1", "2"])
def test_omp_num_threads_respected(n, tmp_path):
    code = ("import mlpgx._ext as e; print(e.solver.max_threads(), e.solver.openmp_enabled())")
    env = dict(os.environ, OMP_NUM_THREADS=n)
    # run outside the source tree so the installed package is imported
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, cwd=tmp_path).stdout.split()
    if out[1] == "True":
        assert out[0] == n
    else:
        assert out[0] == "1"


def test_thread_plan_splits_dimensions_only_for_small_batches():
    plan = mlpgx._ext.solver._plan_threads
    nthreads, starts, width = plan(8, 60, 1000, 2)       # B >= threads: whole sequences
    assert nthreads == 2 and starts == [0] and width >= 60
    nthreads, starts, width = plan(1, 60, 1000, 2)       # B < threads: split D
    assert nthreads == 2 and len(starts) == 2 and starts[1] == width
    nthreads, starts, width = plan(1, 60, 1000, None)
    assert nthreads == min(mlpgx._ext.solver.max_threads(), 4)
