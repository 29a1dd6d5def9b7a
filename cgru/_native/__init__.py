"""Tier 1: the compiled kernels. Nothing here validates or allocates; cgru.functional does.

    _blas.pxd       row-major GEMM/GEMV over scipy.linalg.cython_blas (fused float/double)
    _gemm.pxd, .h   the small GEMM behind one interface (`product`), the level an argument
    _cell.pxd, .h   one step's elementwise work, forward beside backward (C templates)
    _parts.pxd      the batch cut over OpenMP threads
    _weights.pxd    the weights in either layout: the rows a product reads, their gradients
    _loops.pyx      the time loops: `forward` beside `backward`
    _step.pyx       `StepKernel`, one step with the weights held
    _twins.pyx      `def` wrappers of the cdef routines, for the tests
"""
