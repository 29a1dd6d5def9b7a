# The batch cut over threads. Rows of a GRU never meet in the time loop, so with several threads
# the batch is cut into parts, each running the whole loop on its rows with the small GEMM: no
# thread waits on another until the loop is done. (Measured against OpenBLAS threading each
# per-step product: its threads synchronise twice a step, and the elementwise cell ran on one
# core.) The parts run as the iterations of an OpenMP `prange` (_loops.pyx), one part a thread:
# OpenMP's threads are started once per process and reused by every call, as scikit-learn ships
# them (built with -fopenmp; see setup.py for the measurement that chose it).


cdef inline Py_ssize_t part_start(Py_ssize_t rows, int parts, int i) noexcept nogil:
    """First row of part i of `parts`: the rows cut in near-equal parts, multiples of 8 rows
    (the small GEMM's register tile) where `rows` allows."""
    if i >= parts:
        return rows
    cdef Py_ssize_t start = rows * i // parts
    return min(rows, (start + 4) // 8 * 8) if rows >= 8 * parts else start
