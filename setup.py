"""Builds the Cython extensions under cgru/ (every cgru/*.pyx is one extension module).

Environment switches (off by default; the default build runs on any x86-64 machine):
  CGRU_DEBUG=1   bounds, None and initialisation checks on, -O0 -g (for debugging crashes)
  CGRU_NATIVE=1  -march=native (faster elementwise code on the build machine only)
"""
import glob
import os

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
compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
if NATIVE:
    compile_args.append("-march=native")

extensions = [
    Extension(
        path[:-4].replace(os.sep, "."),
        [path],
        extra_compile_args=compile_args,
        define_macros=[("CGRU_DEBUG_CHECKS", "1" if DEBUG else "0"),
                       ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for path in sorted(glob.glob(os.path.join("cgru", "*.pyx")))
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
