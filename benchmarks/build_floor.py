"""Builds the benchmark's GEMM floor (benchmarks/_floor.pyx) and imports it.

The floor is part of the benchmark, not of the cgru package: it is compiled on demand,
into this folder by default (`python benchmarks/build_floor.py`), or into any folder
(`load(folder)`; the tests build it into a temporary one).
"""
import importlib.util
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "_floor.pyx")


def build(folder=HERE):
    """Compiles _floor.pyx into `folder` (work files in a temporary folder); returns the path
    of the extension module."""
    import numpy
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    with tempfile.TemporaryDirectory() as work:
        extension = Extension("_floor", [SOURCE], include_dirs=[numpy.get_include()],
                              extra_compile_args=["-O3", "-g0"])
        modules = cythonize([extension], build_dir=work, quiet=True,
                            compiler_directives={"language_level": 3})
        distribution = Distribution({"ext_modules": modules})
        command = distribution.get_command_obj("build_ext")
        command.build_lib, command.build_temp = folder, work
        command.ensure_finalized()
        command.run()
        return command.get_ext_fullpath("_floor")


def load(folder=HERE):
    """The floor module, built into `folder` first when it is not there yet."""
    from importlib.machinery import EXTENSION_SUFFIXES
    paths = [os.path.join(folder, "_floor" + suffix) for suffix in EXTENSION_SUFFIXES]
    path = next((p for p in paths if os.path.exists(p)), None) or build(folder)
    spec = importlib.util.spec_from_file_location("_floor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else HERE))
