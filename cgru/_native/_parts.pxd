# The batch cut over threads. Rows of a GRU never meet in the time loop, so with several threads
# the batch is cut into parts, each running the whole loop on its rows with the small GEMM: no
# thread waits on another until the loop is done. (Measured against OpenBLAS threading each
# per-step product: its threads synchronise twice a step, and the elementwise cell ran on one
# core.) The parts run as the iterations of an OpenMP `prange` (_loops.pyx), one part a thread:
# OpenMP's threads are started once per process and reused by every call, as scikit-learn ships
# them (built with -fopenmp). Measured (shared 2-core AVX2 EPYC, an inference call at
# (T, B, I, H) = (2, 16, 8, 64) cut in 2 parts, minimum of 100 batches of 100 calls): 35-73 us
# against 103-126 us when each call started a thread per part (one part: 33-51 us either
# way). Under a load of 3-4 on the 2 cores the medians were worse, 120-800 against 160-260
# us: a thread waiting at OpenMP's barrier spins while the other waits for a core. Calls
# that are cut are large (functional._PARTS_MIN_FLOPS), so this is a few percent of them.
# A process forked after a parallel region must not enter another (libgomp hangs there):
# cgru.functional runs the loops on one thread in such a child.


cdef inline Py_ssize_t part_start(Py_ssize_t rows, int parts, int i) noexcept nogil:
    """First row of part i of `parts`: the rows cut in near-equal parts, multiples of 8 rows
    (the small GEMM's register tile) where `rows` allows."""
    if i >= parts:
        return rows
    cdef Py_ssize_t start = rows * i // parts
    return min(rows, (start + 4) // 8 * 8) if rows >= 8 * parts else start
