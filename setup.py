"""Build the Cython extensions of mlpgx.

Cython directives are set once here.  ``MLPGX_DEBUG_BUILD=1`` turns bounds
checking and other safety checks on (used by CI's debug build);
``MLPGX_NO_OPENMP=1`` builds without OpenMP.  OpenMP is used when the
compiler accepts ``-fopenmp``.  The generated C is produced at build time
(under ``build/``) and never committed.

A debug build and a release build keep apart everything they generate (the
C under ``build/debug/cython`` or ``build/cython``, the objects and
libraries under ``build/debug`` or ``build``): setuptools and Cython decide
what to rebuild by timestamps alone, so one tree shared by both would hand
a debug build the release objects (and the reverse) wherever no source
changed.

``pip install .`` also copies the built extensions into the source tree
(``mlpgx/_ext``), as ``build_ext --inplace`` does: the README's
``pip install . && python -m mlpgx`` runs in the checkout, where Python
imports ``./mlpgx`` before the installed copy.
"""
import glob
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools.errors import FileError

DEBUG = os.environ.get("MLPGX_DEBUG_BUILD", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": DEBUG,
    "embedsignature": True,
}


OPENMP_PROBE = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
PLAIN_PROBE = "int main(void){return 0;}\n"
# what mlpgx_band2.h's AVX-512 clones need of the compiler
AVX512_PROBE = ("#pragma GCC push_options\n"
                "#pragma GCC target(\"avx512f,avx512vl,avx512dq,prefer-vector-width=512\")\n"
                "static double f(const double *x, int n) { double s = 0; int i;\n"
                "  for (i = 0; i < n; i++) s += x[i] * x[i]; return s; }\n"
                "#pragma GCC pop_options\n"
                "int main(void) { double x[4] = {0}; __builtin_cpu_init();\n"
                "  return __builtin_cpu_supports(\"avx512f\") ? (int)f(x, 4) : 0; }\n")


def _compiler_accepts(flags, src=OPENMP_PROBE):
    """Whether the C compiler builds and links ``src`` with ``flags``."""
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as fh:
            fh.write(src)
        try:
            res = subprocess.run([cc, *flags, path, "-o", os.path.join(tmp, "t")],
                                 capture_output=True)
        except OSError:
            return False
        return res.returncode == 0


compile_args, link_args = [], []
if sys.platform != "win32":
    # -funroll-loops: the kernels' short loops over a row of columns run
    # 2-7% faster unrolled (benchmarks/bench_core.py, T = 10^3 .. 10^4)
    compile_args += ["-O0", "-g"] if DEBUG else ["-O3", "-funroll-loops"]
    compile_args += ["-fno-math-errno", "-Wno-psabi"]
if os.environ.get("MLPGX_NO_OPENMP", "") in ("", "0"):
    if sys.platform == "win32":
        compile_args.append("/openmp")
    elif _compiler_accepts(["-fopenmp"]):
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")

# The solver is also compiled for AVX2 + FMA on x86-64; mlpgx/_ext/__init__.py
# picks that build at run time when the CPU supports it, so the baseline
# build stays portable.
AVX2_FLAGS = ["-mavx2", "-mfma"]
variants = {"_solver": [], "_window_matrix": [], "_streaming": []}
if (platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32"
        and os.environ.get("MLPGX_NO_AVX2", "") in ("", "0")
        and _compiler_accepts(AVX2_FLAGS, PLAIN_PROBE)):
    # with the k <= 2 kernel's AVX-512 clones where the compiler takes their
    # target pragma (GCC; run where the CPU has AVX-512, see
    # mlpgx/_ext/mlpgx_band2.h)
    clones = ["-DMLPGX_B2_AVX512"] if _compiler_accepts(AVX2_FLAGS + ["-Werror"],
                                                        AVX512_PROBE) else []
    variants["_solver_avx2"] = AVX2_FLAGS + clones

extensions = [
    Extension(
        f"mlpgx._ext.{name}",
        [f"mlpgx/_ext/{name}.pyx"],
        include_dirs=[np.get_include(), "mlpgx/_ext"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")]
        + ([("MLPGX_DEBUG_BUILD", "1")] if DEBUG else []),   # (_build_info.pxi)
        extra_compile_args=compile_args + extra,
        extra_link_args=link_args,
        # headers and includes: a change to them rebuilds the extension
        depends=sorted(glob.glob("mlpgx/_ext/*.h") + glob.glob("mlpgx/_ext/*.pxi")),
    )
    for name, extra in variants.items()
]

BUILD_BASE = os.path.join("build", "debug") if DEBUG else "build"


class build_ext(_build_ext):
    """``build_ext`` that also puts the extensions into the source tree.

    ``python -m mlpgx`` (and any ``import mlpgx``) run in the checkout import
    ``./mlpgx`` ahead of the installed package, so after a plain
    ``pip install .`` they found a package without its compiled extensions.
    A source tree that cannot be written to (an unpacked sdist on read-only
    media, say) only loses that convenience: the build goes on."""

    def run(self):
        super().run()
        if self.inplace:
            return
        try:
            self.copy_extensions_to_source()
        except (OSError, FileError) as exc:
            print(f"mlpgx: the extensions were not copied into the source tree ({exc}); "
                  "run Python outside the checkout to import the installed package",
                  file=sys.stderr)


# Cythonize the modules in parallel: the two solver modules share the large
# kernel include and dominate the build.
setup(ext_modules=cythonize(extensions, compiler_directives=directives,
                            build_dir=os.path.join(BUILD_BASE, "cython"),
                            nthreads=min(os.cpu_count() or 1, len(extensions))),
      cmdclass={"build_ext": build_ext},
      options={"build": {"build_base": BUILD_BASE}})
