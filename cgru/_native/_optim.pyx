"""Optimizer rules as one pass over each weight: the latency path of a training step.

`adam_step` is Keras 3's Adam rule (keras/src/optimizers/adam.py) in the order and the
dtype cgru.optimizers.Adam applies it with NumPy, one element at a time instead of eleven
whole-array passes:

    m += (g - m) * (1 - beta_1)
    v += (g * g - v) * (1 - beta_2)
    w -= (m * alpha) / (sqrt(v) + epsilon)

Every operation is IEEE-rounded in the weights' dtype, as NumPy's ufuncs round them, so
the results are the same bits (tests/test_optimizers.py checks them over many steps); this
file is compiled with -ffp-contract=off (setup.py) so that no multiply and add fuse into one
rounding. The caller (cgru.optimizers.Adam) checks the arrays: C-contiguous, of one float
dtype, gradients and slots shaped as their weights.
"""
from libc.math cimport sqrt, sqrtf
from libc.stddef cimport size_t
from cython cimport floating
cimport numpy as cnp

cnp.import_array()


cdef void adam_typed(floating* w, const floating* g, floating* m, floating* v, size_t n,
                     floating alpha, floating one_minus_beta_1, floating one_minus_beta_2,
                     floating epsilon) noexcept nogil:
    cdef size_t i
    cdef floating gi, mi, vi, root
    for i in range(n):
        gi = g[i]
        mi = m[i] + (gi - m[i]) * one_minus_beta_1
        vi = v[i] + (gi * gi - v[i]) * one_minus_beta_2
        m[i] = mi
        v[i] = vi
        if floating is float:
            root = sqrtf(vi)
        else:
            root = sqrt(vi)
        w[i] = w[i] - (mi * alpha) / (root + epsilon)


def adam_step(list weights, list grads, list momenta, list velocities, double alpha,
              double one_minus_beta_1, double one_minus_beta_2, double epsilon):
    """One Adam step in place for each (weight, gradient, momentum, velocity) of the four
    lists; the scalars are rounded to the weights' dtype first, as the NumPy rule has them."""
    cdef Py_ssize_t k
    cdef cnp.ndarray w, g, m, v
    for k in range(len(weights)):
        w, g, m, v = weights[k], grads[k], momenta[k], velocities[k]
        if cnp.PyArray_TYPE(w) == cnp.NPY_FLOAT64:
            adam_typed(<double*> cnp.PyArray_DATA(w), <const double*> cnp.PyArray_DATA(g),
                       <double*> cnp.PyArray_DATA(m), <double*> cnp.PyArray_DATA(v),
                       <size_t> cnp.PyArray_SIZE(w), alpha, one_minus_beta_1,
                       one_minus_beta_2, epsilon)
        else:
            adam_typed(<float*> cnp.PyArray_DATA(w), <const float*> cnp.PyArray_DATA(g),
                       <float*> cnp.PyArray_DATA(m), <float*> cnp.PyArray_DATA(v),
                       <size_t> cnp.PyArray_SIZE(w), <float> alpha, <float> one_minus_beta_1,
                       <float> one_minus_beta_2, <float> epsilon)
