"""The ``mlpgx`` command line (``python -m mlpgx`` is the same).

Subcommands::

    mlpgx generate INPUT... -o OUTDIR   MLPG over a corpus of .npy/.npz means
    mlpgx verify                        every backend vs the reference
    mlpgx bench [--quick] [--plot F]    time forward/adjoint vs T
    mlpgx demo [--plot F]               smoothing noisy means of a real utterance

With no arguments, ``mlpgx`` prints the verification table on the embedded
example (what ``python -m mlpgx`` has always done).

Errors are one line on stderr (``mlpgx: error: ...``) unless ``--debug`` is
given; the exit status is 2 for usage errors, 1 for failures, 0 otherwise.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

import numpy as np

PROG = "mlpgx"
_GLOB_CHARS = frozenset("*?[")


# --------------------------------------------------------------------------
# errors and the argument parser
# --------------------------------------------------------------------------

class CLIError(Exception):
    """A failure reported as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class UsageError(CLIError):
    def __init__(self, message: str):
        super().__init__(message, 2)


def _one_line(exc: BaseException) -> str:
    """An exception as one short line."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        text = " ".join(str(exc).split())
    if not text:
        text = type(exc).__name__
    elif not isinstance(exc, (ValueError, TypeError, OSError, CLIError)):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``mlpgx: error: ... (see 'mlpgx X --help')``."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32)


def _int_at_least(minimum, what):
    """An argparse type: an int >= ``minimum`` (``what`` names the range)."""
    def parse(text):
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {n}")
        return n
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_seed = _int_at_least(0, "an integer >= 0")


def _nonneg_float(text):
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(x) or x < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return x


def _png_path(text):
    if not text.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"the plot file must end in .png, got {text!r}")
    # checked now, not after the benchmark or demo has run
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"the folder of {text!r} does not exist")
    return text


MAIN_EPILOG = """\
examples:
  mlpgx                                     verification table on the embedded example
  mlpgx generate pred/ -o traj/ --variances var/ --jobs 4
  mlpgx generate 'pred/*.npz' -o traj/ --windows mgc.win1 mgc.win2 mgc.win3
  mlpgx verify --backend cython
  mlpgx bench --quick --plot bench.png
  mlpgx demo --plot demo.png

Run 'mlpgx COMMAND --help' for the options of a command."""

GENERATE_EPILOG = """\
inputs:
  A .npy file holds the means, shape (T, L*D), columns window-major
  [static d=0..D-1, delta d=0..D-1, accel d=0..D-1].  A .npz holds them under
  --key (default "means"; a single-array .npz is used whatever its name) and,
  optionally, per-frame variances under "variances".  A directory stands for
  every .npy/.npz inside it (sorted); a glob is expanded by mlpgx, so it may be
  quoted.  Variances, in order of precedence: --variances (a directory with a
  file of the same stem, or one file for a single input), --global-variances
  (one (L*D,) .npy for every input), the "variances" array of a .npz, and
  otherwise unit variances.

output:
  OUTDIR/<stem>.npy, the static trajectory (T, D), in the dtype of the inputs
  (or --dtype).  An existing output is a failure unless --overwrite is given.
  Bad files are skipped and listed at the end; the exit status is 1 when any
  file failed.

examples:
  mlpgx generate pred/ -o traj/                        unit variances, delta windows
  mlpgx generate pred/*.npy -o traj/ --variances var/  per-utterance variances
  mlpgx generate utt1.npz utt2.npz -o traj/ --key mgc --boundary nnmnkwii
  mlpgx generate pred/ -o traj/ --global-variances gv.npy --jobs 4 --overwrite
  mlpgx generate pred/ -o traj/ --windows mgc.win1 mgc.win2 mgc.win3"""

VERIFY_EPILOG = """\
Runs every available backend (or the one named) and the scipy.sparse
reference on the embedded CMU ARCTIC utterance and on random cases (several
lengths, dimensions, windows, boundary rules, padded batches, float32 and
float64), compares the forward pass and the adjoint, and prints a table.
The exit status is 0 only when every case passes.

examples:
  mlpgx verify
  mlpgx verify --backend cython --seed 3"""

BENCH_EPILOG = """\
Times mlpgx.mlpg and mlpgx.mlpg_adjoint for every available backend (the
scipy.sparse reference only up to T=1000) on random inputs of D static
dimensions with delta windows, next to the memory floor (one np.copy of means
and variances).  nnmnkwii and diffsptk are timed too when they are installed.
The adj(out) column times the adjoint given the forward's output
(mlpg_adjoint(..., output=c), what a training step's backward runs) for
backends that reuse it.  Times are the best of a few runs, in ms.

examples:
  mlpgx bench --quick
  mlpgx bench --plot bench.png         (needs matplotlib: pip install 'mlpgx[plot]')"""

DEMO_EPILOG = """\
Adds Gaussian noise (NOISE x each column's standard deviation) to the mgc
means of the embedded CMU ARCTIC utterance, as a stand-in for a model's
prediction error, runs MLPG with per-column variances, and compares the
trajectory with the noisy static means: frame-to-frame difference energy
(lower is smoother) and RMSE to the clean static stream.

examples:
  mlpgx demo
  mlpgx demo --noise 0.5 --seed 1 --plot demo.png    (needs matplotlib)"""


def build_parser() -> argparse.ArgumentParser:
    import mlpgx

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks instead of one-line errors")

    p = _Parser(prog=PROG, formatter_class=_Formatter, epilog=MAIN_EPILOG,
                description="Maximum likelihood parameter generation (MLPG) from the command "
                            "line.\nWith no command: MLPG on the embedded example with every "
                            "backend\nverified against the reference, as a table.")
    p.add_argument("--version", action="version", version=f"%(prog)s {mlpgx.__version__}")
    p.add_argument("--debug", action="store_true", default=False,
                   help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    g = sub.add_parser("generate", parents=[common], formatter_class=_Formatter,
                       help="MLPG over .npy/.npz files, one trajectory per file",
                       description="Generate static trajectories from means (and "
                                   "variances) of static + dynamic features.",
                       epilog=GENERATE_EPILOG)
    g.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=".npy/.npz file, directory or glob")
    g.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR",
                   help="where to write <stem>.npy (created if missing)")
    g.add_argument("--windows", nargs="+", default=["delta"], metavar="SPEC",
                   help="a preset (%s; default delta) or HTS window files, the static "
                        "window first" % "|".join(mlpgx.windows.PRESETS))
    vg = g.add_mutually_exclusive_group()
    vg.add_argument("--variances", metavar="FILE_OR_DIR",
                    help="directory of <stem>.npy/.npz variances, or one file for a "
                         "single input")
    vg.add_argument("--global-variances", metavar="FILE",
                    help=".npy of shape (L*D,) shared by every frame and file")
    g.add_argument("--boundary", default="per-window",
                   choices=("per-window", "nnmnkwii", "none"),
                   help="boundary rule of the dynamic windows (default per-window)")
    g.add_argument("--voiced", metavar="FILE_OR_DIR",
                   help="voicing masks of an MSD stream (log F0): directory of "
                        "<stem>.npy/.npz (T,) or (T, D) bool or 0/1 arrays, or one file "
                        "for a single input; .npz inputs may carry a 'voiced' array")
    g.add_argument("--unvoiced-value", type=float, default=float("nan"), metavar="X",
                   help="output on unvoiced frames (default nan; SPTK's magic number: "
                        "--unvoiced-value=-1e10, with '=')")
    g.add_argument("--msd-rule", default="hts", choices=("hts", "sptk"),
                   help="frames of a window's support that must be voiced: all (hts, "
                        "default) or those under nonzero coefficients (sptk)")
    g.add_argument("--backend", default="auto", help="backend name (default auto)")
    g.add_argument("--dtype", choices=("float32", "float64"),
                   help="compute and write in this dtype (default: that of the inputs)")
    g.add_argument("-j", "--jobs", type=_positive_int, default=1, metavar="N",
                   help="files processed in parallel (default 1)")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g.add_argument("--key", default="means",
                   help='array name of the means in .npz inputs (default "means")')

    v = sub.add_parser("verify", parents=[common], formatter_class=_Formatter,
                       help="check every backend against the reference",
                       description="Check backends against the scipy.sparse reference "
                                   "(forward and adjoint).", epilog=VERIFY_EPILOG)
    v.add_argument("--backend", default="all",
                   help="'all' (default: every available backend) or a backend name")
    v.add_argument("--seed", type=_seed, default=0, help="seed of the random cases (default 0)")

    b = sub.add_parser("bench", parents=[common], formatter_class=_Formatter,
                       help="time forward and adjoint against T",
                       description="Benchmark MLPG backends over a range of T.",
                       epilog=BENCH_EPILOG)
    b.add_argument("--quick", action="store_true", help="T in {100, 1000, 10000} only")
    b.add_argument("--plot", type=_png_path, metavar="FILE.png",
                   help="write a log-log plot of time vs T")
    b.add_argument("--dim", type=_positive_int, default=60, metavar="D",
                   help="static dimensions (default 60)")
    b.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of the inputs (default float32)")

    d = sub.add_parser("demo", parents=[common], formatter_class=_Formatter,
                       help="smooth noisy means of a real utterance",
                       description="MLPG on noisy means of the embedded example.",
                       epilog=DEMO_EPILOG)
    d.add_argument("--plot", type=_png_path, metavar="FILE.png",
                   help="plot means vs trajectory vs truth for a few mgc dimensions")
    d.add_argument("--noise", type=_nonneg_float, default=0.3,
                   help="noise std as a fraction of each column's std (default 0.3)")
    d.add_argument("--seed", type=_seed, default=0, help="noise seed (default 0)")
    d.add_argument("--dims", type=int, nargs="+", default=[1, 2, 10], metavar="d",
                   help="mgc dimensions to plot (default 1 2 10)")
    return p


# --------------------------------------------------------------------------
# optional dependencies
# --------------------------------------------------------------------------

def _pyplot():
    """matplotlib.pyplot with the Agg backend, or a one-line error."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CLIError("--plot needs matplotlib: pip install 'mlpgx[plot]'") from None
    return plt


def _progress(total: int, desc: str):
    """A tqdm bar on stderr (hidden when stderr is not a terminal), or None."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    try:
        return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, disable=None,
                    leave=False)
    except Exception:
        return None


# --------------------------------------------------------------------------
# no command: the example table (what `python -m mlpgx` has always printed)
# --------------------------------------------------------------------------

def _noisy_example(noise=0.3, seed=0):
    from mlpgx.data import MGC, load_arctic_a0001

    means = np.ascontiguousarray(load_arctic_a0001()[:, MGC])
    rng = np.random.default_rng(seed)
    variances = np.broadcast_to(means.var(axis=0) + 1e-6, means.shape).astype(np.float32)
    noisy = (means + rng.normal(scale=noise, size=means.shape) * np.sqrt(variances))
    return means, noisy.astype(np.float32), variances


def _roughness(x) -> float:
    return float(np.mean(np.diff(np.asarray(x, dtype=np.float64), axis=0) ** 2))


def _rmse(x, y) -> float:
    return float(np.sqrt(np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)))


def example_table() -> int:
    """MLPG on the embedded example with every available backend, each
    verified against the reference; 0 when all pass."""
    import mlpgx

    means, noisy, variances = _noisy_example()
    T, LD = means.shape
    D = LD // 3
    print(f"mlpgx {mlpgx.__version__}: MLPG on CMU ARCTIC slt arctic_a0001 "
          f"(T={T}, D={D} mgc, windows static/delta/accel)")
    print("fwd (ms): the best of a few calls; a first, untimed call pays the "
          "one-time set-up")
    print(f"{'backend':<12}{'dtype':<9}{'fwd (ms)':>10}{'fwd rel err':>13}"
          f"{'adj rel err':>13}  verdict")
    ok_all = True
    for name in mlpgx.backends.available():
        for dtype in (np.float32, np.float64):
            m, v = noisy.astype(dtype), variances.astype(dtype)
            # a cold call's time is mostly one-time set-up (thread pool,
            # page faults: 17.7 ms against 0.44 ms warm for float32 cython
            # here, 2-core Zen 3), not what a user running many utterances
            # pays.  The budget of 0.05 s keeps the slow reference (about
            # 0.25 s a call) to one timed call after the warm-up
            ms = _best_time(lambda: mlpgx.mlpg(m, v, backend=name), 0.05) * 1e3
            rep = mlpgx.verify(m, v, backend=name)
            adj = max(x.max_rel for k, x in rep.results.items() if k != "forward")
            ok_all &= rep.passed
            print(f"{name:<12}{np.dtype(dtype).name:<9}{ms:>10.2f}"
                  f"{rep.results['forward'].max_rel:>13.1e}{adj:>13.1e}  "
                  f"{'PASS' if rep.passed else 'FAIL'}")
    c = mlpgx.mlpg(noisy.astype(np.float64), variances.astype(np.float64))
    truth = means[:, :D].astype(np.float64)
    print(f"\nnoisy static stream: frame-difference energy {_roughness(noisy[:, :D]):.4f}, "
          f"RMSE to clean {_rmse(noisy[:, :D], truth):.4f}")
    print(f"MLPG trajectory:     frame-difference energy {_roughness(c):.4f}, "
          f"RMSE to clean {_rmse(c, truth):.4f}")
    return 0 if ok_all else 1


# --------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------

_EXTS = (".npy", ".npz")


def _expand_inputs(specs) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Files named by ``specs`` (files, directories, globs), in order without
    duplicates, and ``(spec, reason)`` for specs that name nothing."""
    files, bad, seen = [], [], set()

    def add(path):
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(os.path.join(spec, n) for n in os.listdir(spec)
                           if n.lower().endswith(_EXTS)
                           and os.path.isfile(os.path.join(spec, n)))
            if not found:
                bad.append((spec, "directory holds no .npy/.npz files"))
            for f in found:
                add(f)
        elif os.path.exists(spec):
            add(spec)
        elif _GLOB_CHARS & set(spec):
            found = sorted(f for f in glob.glob(spec) if os.path.isfile(f))
            if not found:
                bad.append((spec, "no file matches this pattern"))
            for f in found:
                add(f)
        else:
            bad.append((spec, "no such file or directory"))
    return files, bad


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _load_array(path: str, key: Optional[str], what: str, *, fallback_single=True,
                kinds="iuf"):
    """A float array from a .npy, or from a .npz under ``key``."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
            if not (magic == b"\x93NUMPY" or magic[:2] == b"PK"):
                raise CLIError(f"cannot read {what}: not a .npy/.npz file "
                               f"(no NumPy or zip header)")
            fh.seek(0)
            obj = np.load(fh, allow_pickle=False)
            if isinstance(obj, np.lib.npyio.NpzFile):
                with obj:
                    names = list(obj.files)
                    if key in names:
                        arr = obj[key]
                    elif fallback_single and len(names) == 1:
                        arr = obj[names[0]]
                    else:
                        raise CLIError(f"no array {key!r} for the {what} in this .npz "
                                       f"(it has: {', '.join(names) or 'nothing'})")
            else:
                arr = obj
    except CLIError:
        raise
    except OSError as exc:
        raise CLIError(f"cannot read {what}: {_one_line(exc)}") from None
    except Exception as exc:   # corrupt file, pickled object, bad zip...
        raise CLIError(f"cannot read {what}: not a valid .npy/.npz file "
                       f"({_one_line(exc)})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in kinds:
        raise CLIError(f"{what} must be a real-valued numeric array, got dtype "
                       f"{getattr(arr, 'dtype', type(arr).__name__)}")
    return arr


class _Job:
    """Everything shared by the files of one ``generate`` run."""

    def __init__(self, args, windows, global_variances):
        self.args = args
        self.windows = windows
        self.global_variances = global_variances
        self.num_threads = 1 if args.jobs > 1 else None

    def variances_for(self, path):
        if self.global_variances is not None:
            return self.global_variances
        return self._companion(path, self.args.variances, "variances")

    def voiced_for(self, path):
        return self._companion(path, self.args.voiced, "voiced", kinds="iufb")

    def _companion(self, path, option, name, kinds="iuf"):
        """The ``name`` array that goes with input ``path``: from ``option``
        (a file, or a directory of ``<stem>.npy/.npz``), else from a ``name``
        entry of an .npz input, else None."""
        a = self.args
        if option is None:
            if path.lower().endswith(".npz"):
                with np.load(path, allow_pickle=False) as z:
                    if name in z.files and a.key != name:
                        return _load_array(path, name, name, fallback_single=False,
                                           kinds=kinds)
            return None
        if not os.path.isdir(option):
            return _load_array(option, name, name, kinds=kinds)
        stem = _stem(path)
        for ext in _EXTS:
            cand = os.path.join(option, stem + ext)
            if os.path.isfile(cand):
                return _load_array(cand, name, name, kinds=kinds)
        raise CLIError(f"no {name} file {stem}.npy or {stem}.npz in {option}")

    def run_one(self, path, out_path):
        import mlpgx

        a = self.args
        if os.path.exists(out_path):
            if os.path.realpath(out_path) == os.path.realpath(path):
                raise CLIError(f"the output {out_path} is this input file; choose another -o")
            if not a.overwrite:
                raise CLIError(f"output {out_path} exists (use --overwrite to replace it)")
        means = _load_array(path, a.key, "means")
        if means.ndim != 2:
            raise CLIError(f"means must be 2-D (T, L*D), got shape {means.shape}")
        variances = self.variances_for(path)
        if a.dtype:
            means = means.astype(a.dtype)
            if variances is not None:
                variances = variances.astype(a.dtype)
        voiced = self.voiced_for(path)
        msd = {} if voiced is None else dict(voiced=voiced, msd_rule=a.msd_rule,
                                             unvoiced_value=a.unvoiced_value)
        c = mlpgx.mlpg(means, variances, self.windows, boundary=a.boundary,
                       backend=a.backend, num_threads=self.num_threads, **msd)
        tmp = f"{out_path}.tmp-{os.getpid()}-{threading.get_ident()}.npy"
        try:
            np.save(tmp, c)
            os.replace(tmp, out_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _parse_windows(spec):
    import mlpgx

    presets = mlpgx.windows.PRESETS
    if len(spec) == 1 and spec[0].strip().lower() in presets:
        return presets[spec[0].strip().lower()]
    missing = [p for p in spec if not os.path.isfile(p)]
    if missing:
        if len(spec) == 1:
            raise UsageError(f"--windows: {spec[0]!r} is neither a preset "
                             f"({', '.join(presets)}) nor a window file")
        raise UsageError(f"--windows: no such window file: {missing[0]}")
    try:
        return mlpgx.windows.from_hts_files(spec)
    except (ValueError, TypeError, OSError) as exc:
        raise UsageError(f"--windows: {_one_line(exc)}") from None


def cmd_generate(args) -> int:
    import mlpgx

    windows = _parse_windows(args.windows)
    if args.backend != "auto":
        try:
            mlpgx.backends.resolve(args.backend, operation="forward")
        except ValueError as exc:
            raise UsageError(f"--backend: {_one_line(exc)}") from None
        except (RuntimeError, TypeError) as exc:
            raise CLIError(f"--backend: {_one_line(exc)}") from None
    gv = None
    if args.global_variances is not None:
        try:
            gv = _load_array(args.global_variances, "variances", "global variances")
        except CLIError as exc:
            raise CLIError(f"--global-variances {args.global_variances}: {exc}") from None
        if gv.ndim != 1 or gv.size % len(windows):
            raise CLIError(f"--global-variances {args.global_variances}: expected shape "
                           f"(L*D,) with L={len(windows)} windows, got {gv.shape}")
    for opt, value in (("--variances", args.variances), ("--voiced", args.voiced)):
        if value is not None and not os.path.exists(value):
            raise UsageError(f"{opt}: no such file or directory: {value}")

    files, failures = _expand_inputs(args.inputs)
    for opt, value in (("--variances", args.variances), ("--voiced", args.voiced)):
        if value is not None and not os.path.isdir(value) and len(files) + len(failures) > 1:
            raise UsageError(f"{opt} FILE needs exactly one input; for several inputs "
                             f"give a directory of <stem>.npy files")
    outdir = args.output_dir
    if not outdir:
        raise UsageError("-o: the output directory must not be empty")
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise CLIError(f"-o {outdir}: exists and is not a directory")
    os.makedirs(outdir, exist_ok=True)

    # one output per stem: a second input with the same stem is a failure
    tasks, by_stem = [], {}
    for f in files:
        s = _stem(f)
        if s in by_stem:
            failures.append((f, f"same stem as {by_stem[s]}: both would write {s}.npy"))
            continue
        by_stem[s] = f
        tasks.append((f, os.path.join(outdir, s + ".npy")))

    job = _Job(args, windows, gv)
    results = {}
    bar = _progress(len(tasks), "mlpg")

    def work(task):
        path, out = task
        try:
            job.run_one(path, out)
            return path, None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # one bad file must not stop the rest
            if args.debug:
                traceback.print_exc()
            return path, _one_line(exc)

    try:
        if args.jobs > 1 and len(tasks) > 1:
            with ThreadPoolExecutor(max_workers=min(args.jobs, len(tasks))) as ex:
                for path, err in ex.map(work, tasks):
                    results[path] = err
                    if bar is not None:
                        bar.update(1)
        else:
            for task in tasks:
                path, err = work(task)
                results[path] = err
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    failures = [(p, e) for p, e in results.items() if e is not None] + failures
    written = sum(e is None for e in results.values())
    print(f"{written} written, {len(failures)} failed")
    for path, reason in failures:
        print(f"{path}: {reason}", file=sys.stderr)
    return 1 if failures else 0


# --------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------

def _verify_cases(seed):
    """``(name, kwargs)`` of the verification cases (float64 arrays)."""
    from mlpgx.windows import DELTA

    means, noisy, variances = _noisy_example(seed=seed)
    cases = [("arctic_a0001 T=578 D=60", dict(means=noisy.astype(np.float64),
                                             variances=variances.astype(np.float64),
                                             windows=DELTA))]
    rng = np.random.default_rng(seed)

    def rand(T, D, L, B=None):
        shape = (T, L * D) if B is None else (B, T, L * D)
        return rng.standard_normal(shape), rng.uniform(0.2, 3.0, shape)

    m, v = rand(1, 2, 3)
    cases.append(("random T=1 D=2 per-window", dict(means=m, variances=v, windows=DELTA)))
    m, v = rand(257, 5, 2)
    cases.append(("random T=257 D=5 delta1 nnmnkwii",
                  dict(means=m, variances=v, windows="delta1", boundary="nnmnkwii")))
    m, v = rand(100, 3, 3)
    cases.append(("random T=100 D=3 none", dict(means=m, variances=v, windows=DELTA,
                                                boundary="none")))
    m, v = rand(150, 4, 3)
    cases.append(("random T=150 D=4 widths [1,2] nnmnkwii",
                  dict(means=m, variances=v, windows=[1, 2], boundary="nnmnkwii")))
    m, v = rand(64, 3, 2)
    cases.append(("random T=64 D=3 even window [1,-1]",
                  dict(means=m, variances=v, windows=[[1], [1, -1]])))
    m, v = rand(80, 4, 3, B=3)
    cases.append(("batch B=3 T=80 lengths 80,41,1",
                  dict(means=m, variances=v, windows=DELTA, lengths=[80, 41, 1])))
    m, _ = rand(120, 6, 3)
    cases.append(("random T=120 D=6 global variances",
                  dict(means=m, variances=rng.uniform(0.2, 3.0, 18), windows=DELTA)))
    from mlpgx.data import LF0, VUV, load_arctic_a0001
    feats = load_arctic_a0001().astype(np.float64)
    lf0 = feats[:, LF0] + rng.normal(0.0, 0.05, (feats.shape[0], 3))
    for rule in ("hts", "sptk"):
        cases.append((f"arctic_a0001 lf0, voiced mask, {rule} rule",
                      dict(means=lf0, variances=np.full(3, 0.01), windows=DELTA,
                           voiced=feats[:, VUV], msd_rule=rule)))
    return cases


def cmd_verify(args) -> int:
    import mlpgx

    if args.backend == "all":
        names = mlpgx.backends.available()
        for n, info in mlpgx.backends.describe().items():
            if not info["available"]:
                print(f"({n}: unavailable: {info['reason']})")
    else:
        try:
            b = mlpgx.backends.get(args.backend)
        except ValueError as exc:
            raise UsageError(f"--backend: {_one_line(exc)}") from None
        ok, why = b.availability()
        if not ok:
            raise CLIError(f"backend {args.backend!r} is unavailable: {why}")
        names = [args.backend]

    cases = _verify_cases(args.seed)
    width = max(len(c[0]) for c in cases) + 2
    print(f"{'backend':<12}{'case':<{width}}{'dtype':<9}{'fwd rel err':>12}"
          f"{'adj rel err':>13}  verdict")
    n_pass = n_fail = n_skip = 0
    for name in names:
        b = mlpgx.backends.get(name)
        for case, kw in cases:
            for dtype in ("float32", "float64"):
                boundary = kw.get("boundary", "per-window")
                head = f"{name:<12}{case:<{width}}{dtype:<9}"
                if dtype not in b.dtypes or boundary not in b.boundaries:
                    print(f"{head}{'-':>12}{'-':>13}  SKIP (unsupported)")
                    n_skip += 1
                    continue
                kw2 = dict(kw)
                kw2["means"] = kw["means"].astype(dtype)
                kw2["variances"] = kw["variances"].astype(dtype)
                try:
                    rep = mlpgx.verify(backend=name, seed=args.seed, **kw2)
                except Exception as exc:
                    if args.debug:
                        traceback.print_exc()
                    print(f"{head}{'-':>12}{'-':>13}  FAIL ({_one_line(exc)})")
                    n_fail += 1
                    continue
                adj = max((x.max_rel for k, x in rep.results.items() if k != "forward"),
                          default=0.0)
                print(f"{head}{rep.results['forward'].max_rel:>12.1e}{adj:>13.1e}  "
                      f"{'PASS' if rep.passed else 'FAIL'}")
                n_pass += rep.passed
                n_fail += not rep.passed
    print(f"\n{n_pass} passed, {n_fail} failed" + (f", {n_skip} skipped" if n_skip else ""))
    return 0 if n_fail == 0 and n_pass > 0 else 1


# --------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------

def _best_time(fn, budget):
    from mlpgx._timing import best_time
    return best_time(fn, budget, min_runs=2, max_runs=20)


def _peers(D):
    """``(name, forward, adjoint-or-None, max_T)`` of installed third-party MLPGs."""
    peers, notes = [], []
    win = [(0, 0, np.array([1.0])), (1, 1, np.array([-0.5, 0.0, 0.5])),
           (1, 1, np.array([1.0, -2.0, 1.0]))]
    try:
        from nnmnkwii import paramgen as G
    except Exception:
        notes.append("nnmnkwii not installed")
    else:
        peers.append(("nnmnkwii",
                      lambda m, v, g: G.mlpg(m.astype(np.float64), v.astype(np.float64), win),
                      lambda m, v, g: G.mlpg_grad(m.astype(np.float64), v.astype(np.float64),
                                                  win, g.astype(np.float64)),
                      10_000))
    try:
        import diffsptk
        import torch
    except Exception:
        notes.append("diffsptk not installed")
    else:
        cache = {}

        def dsp(m, v, g):
            # diffsptk.MLPG(size=T, seed=...) takes the means only (unit
            # variances) in (..., T, L*D), with the delta windows by default
            T = m.shape[0]
            if T not in cache:
                cache[T] = diffsptk.MLPG(T)
            with torch.no_grad():
                return cache[T](torch.from_numpy(m)[None])

        peers.append(("diffsptk (unit var)", dsp, None, 100_000))
    return peers, notes


def cmd_bench(args) -> int:
    import mlpgx

    plt = _pyplot() if args.plot else None
    D, dtype = args.dim, np.dtype(args.dtype)
    Ts = [100, 1000, 10_000] if args.quick else [100, 300, 1000, 3000, 10_000, 30_000, 100_000]
    budget = 0.05 if args.quick else 0.3
    methods = [(n, n == "reference", getattr(mlpgx.backends.get(n), "reuses_output", False))
               for n in mlpgx.backends.available()]
    peers, notes = _peers(D)
    print(f"mlpgx {mlpgx.__version__} bench: D={D}, windows delta, {dtype.name}, "
          f"times in ms (best of a few runs)")
    for n in notes:
        print(f"({n})")
    head = (f"{'method':<12}{'T':>8}{'forward':>11}{'adjoint':>11}{'adj(out)':>11}"
            f"{'fwd/floor':>11}{'ns/frame/dim':>14}")
    print(head)
    print("-" * len(head))
    series = {}
    rng = np.random.default_rng(0)
    for T in Ts:
        means = rng.standard_normal((T, 3 * D)).astype(dtype)
        variances = rng.uniform(0.5, 2.0, (T, 3 * D)).astype(dtype)
        g = rng.standard_normal((T, D)).astype(dtype)
        floor = _best_time(lambda: (np.copy(means), np.copy(variances)), budget)
        series.setdefault("memory floor", []).append((T, floor, None))
        print(f"{'floor':<12}{T:>8}{floor * 1e3:>11.3f}{'-':>11}{'-':>11}{1.0:>11.2f}"
              f"{floor / (T * D) * 1e9:>14.2f}")
        # adj(out): the adjoint given the forward's output (what a training
        # step's backward runs), for backends that read it instead of
        # solving for the trajectory again (Backend.reuses_output)
        rows = [(n, (lambda n=n: mlpgx.mlpg(means, variances, backend=n)),
                 (lambda n=n: mlpgx.mlpg_adjoint(g, means, variances, backend=n)),
                 (lambda c, n=n: mlpgx.mlpg_adjoint(g, means, variances, backend=n, output=c))
                 if reuses else None,
                 1000 if small else None) for n, small, reuses in methods]
        rows += [(n, (lambda f=f: f(means, variances, g)),
                  None if a is None else (lambda a=a: a(means, variances, g)), None, tmax)
                 for n, f, a, tmax in peers]
        for name, fwd, adj, adj_given_output, tmax in rows:
            if tmax is not None and T > tmax:
                continue
            try:
                tf = _best_time(fwd, budget)
                ta = _best_time(adj, budget) if adj is not None else None
                tao = None
                if adj_given_output is not None:
                    c = fwd()       # computed once, outside the timed call
                    tao = _best_time(lambda: adj_given_output(c), budget)
            except Exception as exc:
                if args.debug:
                    traceback.print_exc()
                print(f"{name:<12}{T:>8}  error: {_one_line(exc)}")
                continue
            series.setdefault(name, []).append((T, tf, ta))
            ta_s, tao_s = (f"{x * 1e3:>11.3f}" if x is not None else f"{'-':>11}"
                           for x in (ta, tao))
            print(f"{name:<12}{T:>8}{tf * 1e3:>11.3f}{ta_s}{tao_s}{tf / floor:>11.2f}"
                  f"{tf / (T * D) * 1e9:>14.2f}", flush=True)
    if plt is not None:
        fig, ax = plt.subplots(figsize=(7, 5))
        for i, (name, pts) in enumerate(series.items()):
            Tx = [p[0] for p in pts]
            style = dict(color="0.5", linestyle=":") if name == "memory floor" else \
                dict(color=f"C{i}")
            ax.loglog(Tx, [p[1] for p in pts], marker="o", label=f"{name}"
                      + ("" if name == "memory floor" else " forward"), **style)
            if name != "memory floor" and any(p[2] is not None for p in pts):
                ax.loglog([p[0] for p in pts if p[2] is not None],
                          [p[2] for p in pts if p[2] is not None], marker="x",
                          linestyle="--", color=style["color"], label=f"{name} adjoint")
        ax.set_xlabel("T (frames)")
        ax.set_ylabel("time (s)")
        ax.set_title(f"mlpgx {mlpgx.__version__}: D={D}, delta windows, {dtype.name}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        plt.close(fig)
        print(f"\nwrote {args.plot}")
    return 0


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------

def cmd_demo(args) -> int:
    import mlpgx

    plt = _pyplot() if args.plot else None
    means, noisy, variances = _noisy_example(args.noise, args.seed)
    T, LD = means.shape
    D = LD // 3
    bad = [d for d in args.dims if not 0 <= d < D]
    if bad:
        raise UsageError(f"--dims: mgc dimensions are 0..{D - 1}, got {bad[0]}")
    noisy, variances = noisy.astype(np.float64), variances.astype(np.float64)
    c = mlpgx.mlpg(noisy, variances)
    ms = _best_time(lambda: mlpgx.mlpg(noisy, variances), 0.05) * 1e3   # warm, as example_table
    truth = means[:, :D].astype(np.float64)
    r_noisy, r_traj, r_truth = _roughness(noisy[:, :D]), _roughness(c), _roughness(truth)
    e_noisy, e_traj = _rmse(noisy[:, :D], truth), _rmse(c, truth)
    print(f"CMU ARCTIC slt arctic_a0001: T={T} frames, D={D} mgc, noise {args.noise:g} x "
          f"column std (seed {args.seed}); MLPG in {ms:.2f} ms (best of a few calls)")
    print(f"{'':<22}{'frame-diff energy':>18}{'RMSE to clean':>15}")
    print(f"{'clean static stream':<22}{r_truth:>18.4f}{0.0:>15.4f}")
    print(f"{'noisy static means':<22}{r_noisy:>18.4f}{e_noisy:>15.4f}")
    print(f"{'MLPG trajectory':<22}{r_traj:>18.4f}{e_traj:>15.4f}")
    smooth = r_noisy / r_traj if r_traj > 0 else float("inf")
    closer = (1 - e_traj / e_noisy) * 100 if e_noisy > 0 else 0.0
    print(f"smoothness: the trajectory is {smooth:.2f}x smoother than the noisy means")
    print(f"RMSE: the trajectory is {closer:.1f}% closer to the clean stream "
          f"({e_traj:.4f} vs {e_noisy:.4f})")
    if plt is not None:
        dims = args.dims
        fig, axes = plt.subplots(len(dims), 1, figsize=(9, 2.4 * len(dims)), sharex=True,
                                 squeeze=False)
        t = np.arange(T) * 5e-3
        for ax, d in zip(axes[:, 0], dims):
            ax.plot(t, noisy[:, d], color="0.7", lw=0.8, label="noisy means")
            ax.plot(t, truth[:, d], color="k", lw=1.0, label="clean (truth)")
            ax.plot(t, c[:, d], color="C3", lw=1.2, label="MLPG trajectory")
            ax.set_ylabel(f"mgc[{d}]")
        axes[0, 0].legend(loc="upper right", fontsize="small", ncol=3)
        axes[-1, 0].set_xlabel("time (s)")
        fig.suptitle(f"MLPG on arctic_a0001, noise {args.noise:g} x std")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        plt.close(fig)
        print(f"wrote {args.plot}")
    return 0


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------

COMMANDS = {"generate": cmd_generate, "verify": cmd_verify, "bench": cmd_bench,
            "demo": cmd_demo}


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns
    the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        debug = bool(getattr(args, "debug", False))
        if args.command is None:
            return example_table()
        return COMMANDS[args.command](args)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except CLIError as exc:
        if debug:
            traceback.print_exc()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    except Exception as exc:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(exc)} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
