"""Builds the compiled kernels: every cgru/_native/*.pyx is one extension module.

Environment switches (off by default; the default build runs on any x86-64 machine):
  CGRU_DEBUG=1   bounds, None and initialisation checks on, -O0 -g (for debugging crashes)
  CGRU_NATIVE=1  -march=native (faster elementwise code on the build machine only)
A switch changes compiler flags, not sources: rebuild with `build_ext --inplace --force`.
The benchmark's GEMM floor is not part of the package: benchmarks/build_floor.py builds it.
"""
import glob
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("CGRU_DEBUG", "0") == "1"
NATIVE = os.environ.get("CGRU_NATIVE", "0") == "1"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "nonecheck": DEBUG,
    "cdivision": True,
}
# The cell loops must vectorize (measured: inference 1.5-2x faster on the benchmark shapes).
# -fno-trapping-math: assume no floating-point traps are enabled (Python and NumPy never enable
#   them), so gcc may if-convert the float32 exp's clamps; unlike -ffast-math it keeps IEEE
#   results, NaN and infinities included.
# vect-max-version-for-alias-checks: a cell loop reads and writes more arrays than gcc's
#   default limit of 10 runtime overlap checks covers, and then stays scalar.
# -g0: no debug information in the release build (Python's own flags add -g; it tripled the
#   extension's size).
compile_args = ["-O0", "-g"] if DEBUG else [
    "-O3", "-g0", "-fno-trapping-math", "--param=vect-max-version-for-alias-checks=64"]
if NATIVE:
    compile_args.append("-march=native")
# Per module: the optimizer rules must round each operation as NumPy does (the same bits as
# the NumPy rule), so no multiply-add contraction; errno is never read, so sqrt may vectorize.
module_args = {"_optim": ["-ffp-contract=off", "-fno-math-errno"]}
# Threads: OpenMP, as scikit-learn ships it (libgomp with gcc; the wheel links it).
openmp_args = ["/openmp"] if sys.platform == "win32" else ["-fopenmp"]
openmp_link = [] if sys.platform == "win32" else ["-fopenmp"]

extensions = [
    Extension(
        path[:-4].replace(os.sep, "."),
        [path],
        include_dirs=[numpy.get_include(), os.path.dirname(path)],
        extra_compile_args=compile_args + openmp_args
        + module_args.get(os.path.basename(path)[:-4], []),
        extra_link_args=openmp_link,
        define_macros=[("CGRU_DEBUG_CHECKS", "1" if DEBUG else "0"),
                       ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for path in sorted(glob.glob(os.path.join("cgru", "_native", "*.pyx")))
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
