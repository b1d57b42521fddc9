"""The ``mlpgx`` command line, run for real in a subprocess
(``python -m mlpgx ...``, the same entry point as the console script), from a
temporary directory so the installed / in-place-built package is imported."""
from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import mlpgx
from mlpgx.data import MGC, load_arctic_a0001

ROOT = str(pathlib.Path(mlpgx.__file__).resolve().parents[1])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


def run_cli(*args, cwd, extra_path=None, timeout=120):
    env = dict(os.environ)
    paths = ([extra_path] if extra_path else []) + [ROOT]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("MPLBACKEND", None)
    return subprocess.run([sys.executable, "-m", "mlpgx", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def assert_one_line_error(proc, code):
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mlpgx: error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.fixture(scope="module")
def mgc():
    return np.ascontiguousarray(load_arctic_a0001()[:, MGC])   # (578, 180) float32


@pytest.fixture
def corpus(tmp_path, mgc):
    """tmp_path/in: three good utterances, a corrupt file, a wrong column count."""
    d = tmp_path / "in"
    d.mkdir()
    good = {"utt1": mgc[:200], "utt2": mgc[200:450], "utt3": mgc[450:].astype(np.float64)}
    for stem, m in good.items():
        np.save(d / f"{stem}.npy", m)
    (d / "corrupt.npy").write_bytes(b"\x93NUMPY this is not really an array")
    np.save(d / "wrongcols.npy", mgc[:50, :100])
    (d / "notes.txt").write_text("ignored: not .npy/.npz")
    return d, good


# --------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------

def test_generate_directory_with_bad_files(tmp_path, corpus):
    d, good = corpus
    proc = run_cli("generate", d, "-o", "out", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "3 written, 2 failed" in proc.stdout
    failed = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(failed) == 2, proc.stderr
    assert any(ln.startswith(str(d / "corrupt.npy") + ": ") for ln in failed), proc.stderr
    assert any(ln.startswith(str(d / "wrongcols.npy") + ": ") and "columns" in ln
               for ln in failed), proc.stderr
    assert "Traceback" not in proc.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["utt1.npy", "utt2.npy", "utt3.npy"]
    for stem, m in good.items():
        c = np.load(out / f"{stem}.npy")
        expected = mlpgx.mlpg(m)
        assert c.dtype == expected.dtype and c.shape == (len(m), 60)
        np.testing.assert_array_equal(c, expected)


def test_generate_overwrite(tmp_path, mgc):
    np.save(tmp_path / "a.npy", mgc[:100])
    proc = run_cli("generate", "a.npy", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 written, 0 failed" in proc.stdout
    target = tmp_path / "out" / "a.npy"
    sentinel = np.zeros((3, 3))
    np.save(target, sentinel)
    proc = run_cli("generate", "a.npy", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 1
    assert "0 written, 1 failed" in proc.stdout
    assert "a.npy:" in proc.stderr and "--overwrite" in proc.stderr
    np.testing.assert_array_equal(np.load(target), sentinel)     # untouched
    proc = run_cli("generate", "a.npy", "-o", "out", "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    np.testing.assert_array_equal(np.load(target), mlpgx.mlpg(mgc[:100]))
    # never over its own input, even with --overwrite
    proc = run_cli("generate", "a.npy", "-o", ".", "--overwrite", cwd=tmp_path)
    assert proc.returncode == 1
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), mgc[:100])


def test_generate_npz_with_variances_and_dtype(tmp_path, mgc):
    m = mgc[:150]
    v = np.random.default_rng(0).uniform(0.5, 2.0, m.shape).astype(np.float32)
    np.savez(tmp_path / "u.npz", means=m, variances=v)
    np.savez(tmp_path / "k.npz", mgc=m)                       # --key
    proc = run_cli("generate", "u.npz", "-o", "out", "--boundary", "nnmnkwii",
                   "--dtype", "float64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    c = np.load(tmp_path / "out" / "u.npy")
    np.testing.assert_array_equal(c, mlpgx.mlpg(m.astype(np.float64), v.astype(np.float64),
                                                boundary="nnmnkwii"))
    proc = run_cli("generate", "k.npz", "-o", "out", "--key", "mgc", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "k.npy"), mlpgx.mlpg(m))
    np.savez(tmp_path / "two.npz", a=m, b=m)
    proc = run_cli("generate", "two.npz", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 1 and "'means'" in proc.stderr


def test_generate_variance_directory_and_global(tmp_path, mgc):
    rng = np.random.default_rng(1)
    (tmp_path / "m").mkdir()
    (tmp_path / "v").mkdir()
    ms = {"x": mgc[:120], "y": mgc[120:300], "z": mgc[300:340]}
    vs = {}
    for stem, m in ms.items():
        np.save(tmp_path / "m" / f"{stem}.npy", m)
        if stem != "z":                       # z has no variances file: a failure
            vs[stem] = rng.uniform(0.5, 2.0, m.shape).astype(np.float32)
            np.save(tmp_path / "v" / f"{stem}.npy", vs[stem])
    proc = run_cli("generate", "m", "-o", "out", "--variances", "v", cwd=tmp_path)
    assert proc.returncode == 1
    assert "2 written, 1 failed" in proc.stdout
    assert "z.npy" in proc.stderr and "variances" in proc.stderr
    for stem in vs:
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{stem}.npy"),
                                      mlpgx.mlpg(ms[stem], vs[stem]))
    gv = mgc.var(axis=0) + 1e-6
    np.save(tmp_path / "gv.npy", gv)
    proc = run_cli("generate", "m/*.npy", "-o", "gout", "--global-variances", "gv.npy",
                   cwd=tmp_path)                    # a quoted glob, expanded by mlpgx
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 written, 0 failed" in proc.stdout
    for stem, m in ms.items():
        np.testing.assert_array_equal(np.load(tmp_path / "gout" / f"{stem}.npy"),
                                      mlpgx.mlpg(m, gv))
    # both variance options at once: a usage error
    proc = run_cli("generate", "m", "-o", "o2", "--variances", "v", "--global-variances",
                   "gv.npy", cwd=tmp_path)
    assert_one_line_error(proc, 2)


def test_generate_voiced_lf0(tmp_path):
    from mlpgx.data import LF0, VUV

    feats = load_arctic_a0001()
    lf0, vuv = np.ascontiguousarray(feats[:, LF0]), feats[:, VUV]
    (tmp_path / "m").mkdir()
    (tmp_path / "vuv").mkdir()
    np.save(tmp_path / "m" / "a.npy", lf0[:300])
    np.save(tmp_path / "m" / "b.npy", lf0[300:])
    np.save(tmp_path / "vuv" / "a.npy", vuv[:300])             # 0/1 floats
    np.save(tmp_path / "vuv" / "b.npy", vuv[300:] > 0.5)      # bools
    proc = run_cli("generate", "m", "-o", "out", "--voiced", "vuv", "--unvoiced-value=-1e10",
                   "--msd-rule", "sptk", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for stem, sl in (("a", slice(0, 300)), ("b", slice(300, None))):
        np.testing.assert_array_equal(
            np.load(tmp_path / "out" / f"{stem}.npy"),
            mlpgx.mlpg(lf0[sl], voiced=vuv[sl], unvoiced_value=-1e10, msd_rule="sptk"))
    # from an .npz that carries its mask; default marker NaN
    np.savez(tmp_path / "u.npz", means=lf0, voiced=vuv)
    proc = run_cli("generate", "u.npz", "-o", "out2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = np.load(tmp_path / "out2" / "u.npy")
    assert np.isnan(out[vuv == 0]).all() and np.isfinite(out[vuv == 1]).all()
    # a mask of the wrong length fails that file, with the reason
    np.save(tmp_path / "short.npy", vuv[:10])
    proc = run_cli("generate", "m/a.npy", "-o", "out3", "--voiced", "short.npy",
                   cwd=tmp_path)
    assert proc.returncode == 1 and "voiced must have shape" in proc.stderr


def test_generate_hts_windows(tmp_path, mgc):
    texts = ["1 1.0", "2 -1.0 1.0", "3 1.0 -2.0 1.0"]
    files = []
    for i, t in enumerate(texts):
        p = tmp_path / f"mgc.win{i + 1}"
        p.write_text(t + "\n")
        files.append(p.name)
    np.save(tmp_path / "a.npy", mgc[:90])
    proc = run_cli("generate", "a.npy", "-o", "out", "--windows", *files, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ws = mlpgx.windows.from_hts_files([tmp_path / f for f in files])
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "a.npy"),
                                  mlpgx.mlpg(mgc[:90], windows=ws))
    (tmp_path / "broken.win").write_text("3 1.0 x 1.0\n")
    proc = run_cli("generate", "a.npy", "-o", "out2", "--windows", files[0], "broken.win",
                   cwd=tmp_path)
    assert_one_line_error(proc, 2)
    assert "broken.win" in proc.stderr


def test_generate_jobs_identical(tmp_path, corpus):
    d, _ = corpus
    p1 = run_cli("generate", d, "-o", "o1", cwd=tmp_path)
    p2 = run_cli("generate", d, "-o", "o2", "--jobs", "2", cwd=tmp_path)
    assert p1.returncode == p2.returncode == 1
    assert p1.stdout == p2.stdout
    assert sorted(p1.stderr.splitlines()) == sorted(p2.stderr.splitlines())
    names = sorted(p.name for p in (tmp_path / "o1").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "o2").iterdir()) and len(names) == 3
    for n in names:
        np.testing.assert_array_equal(np.load(tmp_path / "o1" / n), np.load(tmp_path / "o2" / n))


def test_generate_missing_input(tmp_path, mgc):
    np.save(tmp_path / "a.npy", mgc[:40])
    proc = run_cli("generate", "a.npy", "nothere.npy", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 1
    assert "1 written, 1 failed" in proc.stdout
    assert "nothere.npy: no such file" in proc.stderr


# --------------------------------------------------------------------------
# verify, bench, demo
# --------------------------------------------------------------------------

def test_verify(tmp_path):
    proc = run_cli("verify", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name in mlpgx.backends.available():
        rows = [ln for ln in lines if ln.split()[:1] == [name]]
        assert any("arctic_a0001" in ln for ln in rows), proc.stdout
        assert len(rows) >= 10 and all(ln.rstrip().endswith("PASS") for ln in rows), rows
    assert "FAIL" not in proc.stdout
    proc = run_cli("verify", "--backend", "no-such-backend", cwd=tmp_path)
    assert_one_line_error(proc, 2)


def test_no_arguments_prints_the_example_table(tmp_path):
    proc = run_cli(cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in mlpgx.backends.available():
        for dtype in ("float32", "float64"):
            rows = [ln for ln in proc.stdout.splitlines() if ln.split()[:2] == [name, dtype]]
            assert len(rows) == 1 and rows[0].rstrip().endswith("PASS"), proc.stdout
            assert float(rows[0].split()[2]) > 0, proc.stdout   # fwd (ms), warm
    assert "fwd (ms)" in proc.stdout and "MLPG trajectory" in proc.stdout


def _check_plot(proc, png):
    if HAVE_MPL:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert png.read_bytes()[:8] == PNG_SIGNATURE
    else:
        assert_one_line_error(proc, 1)
        assert "mlpgx[plot]" in proc.stderr


def test_bench_quick_with_plot(tmp_path):
    proc = run_cli("bench", "--quick", "--plot", "bench.png", cwd=tmp_path)
    _check_plot(proc, tmp_path / "bench.png")
    if HAVE_MPL:
        rows = [ln.split() for ln in proc.stdout.splitlines()]
        for T in ("100", "1000", "10000"):
            assert ["floor", T] in [r[:2] for r in rows], proc.stdout
            assert ["cython", T] in [r[:2] for r in rows], proc.stdout
        assert "forward" in proc.stdout and "adjoint" in proc.stdout
        # the adjoint given the forward's output: timed for the backend that
        # reuses it, '-' for the reference (which solves for c itself)
        head = next(r for r in rows if r[:2] == ["method", "T"])
        col = head.index("adj(out)")
        for r in rows:
            if r[:1] == ["cython"]:
                assert float(r[col]) > 0, proc.stdout
            elif r[:1] in (["reference"], ["floor"]):
                assert r[col] == "-", proc.stdout


def test_demo_with_plot(tmp_path):
    proc = run_cli("demo", "--plot", "demo.png", cwd=tmp_path)
    _check_plot(proc, tmp_path / "demo.png")
    proc = run_cli("demo", "--noise", "0.5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "smoother" in proc.stdout and "RMSE" in proc.stdout
    rows = {ln[:22].strip(): ln[22:].split() for ln in proc.stdout.splitlines()
            if ln.startswith(("noisy static means", "MLPG trajectory"))}
    noisy, traj = (list(map(float, rows[k])) for k in ("noisy static means", "MLPG trajectory"))
    assert traj[0] < noisy[0] and traj[1] < noisy[1]      # smoother and closer to the truth


def test_plot_without_matplotlib(tmp_path):
    """A fake ``matplotlib`` that fails to import stands in for a missing one."""
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib')\n")
    for cmd in (["demo", "--plot", "x.png"], ["bench", "--quick", "--plot", "x.png"]):
        proc = run_cli(*cmd, cwd=tmp_path, extra_path=str(fake))
        assert_one_line_error(proc, 1)
        assert "mlpgx[plot]" in proc.stderr
        assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------------------
# help and usage errors
# --------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", [[], ["generate"], ["verify"], ["bench"], ["demo"]])
def test_help(tmp_path, cmd):
    proc = run_cli(*cmd, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: mlpgx")
    assert "examples:" in proc.stdout


@pytest.mark.parametrize("cmd", [["--no-such-option"], ["verify", "--no-such-option"],
                                 ["generate", "a.npy"], ["frobnicate"],
                                 ["generate", "a.npy", "-o", "o", "--jobs", "0"],
                                 ["demo", "--plot", "x.jpg"],
                                 ["demo", "--seed", "-1"], ["verify", "--seed", "x"],
                                 ["bench", "--plot", "no/such/folder/x.png"],
                                 ["generate", "a.npy", "-o", ""]])
def test_usage_errors(tmp_path, cmd):
    proc = run_cli(*cmd, cwd=tmp_path)
    assert_one_line_error(proc, 2)
    named = [c for c in cmd if c.startswith("-")]
    if named:   # the message names the option it is about
        assert any(opt.split("=")[0] in proc.stderr for opt in named), proc.stderr


def test_debug_shows_traceback(tmp_path):
    proc = run_cli("generate", "a.npy", "-o", "o", "--windows", "nope", cwd=tmp_path)
    assert_one_line_error(proc, 2)
    proc = run_cli("--debug", "generate", "a.npy", "-o", "o", "--windows", "nope", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" in proc.stderr


# ---------------------------------------------------------------------------
# the installed console script itself
# ---------------------------------------------------------------------------

def _console_script():
    import shutil
    here = pathlib.Path(sys.executable).parent / ("mlpgx.exe" if os.name == "nt" else "mlpgx")
    return str(here) if here.exists() else shutil.which("mlpgx")


def test_console_script_generate_and_verify(tmp_path, mgc):
    script = _console_script()
    if script is None:
        if os.environ.get("CI"):
            pytest.fail("the mlpgx console script is not installed")
        pytest.skip("the mlpgx console script is not installed (pip install .)")
    np.save(tmp_path / "utt.npy", mgc[:120])
    proc = subprocess.run([script, "generate", str(tmp_path / "utt.npy"), "-o",
                           str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "utt.npy"),
                                  mlpgx.mlpg(mgc[:120]))
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "generate" in proc.stdout
