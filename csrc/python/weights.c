/*
 * weights.c - llama.cpp's block formats as the loaders hand them over: raw
 * bytes, one row of blocks per tensor row (Model.set_param(quantized=...)
 * writes them into a parameter; dequantize() reads them as float32).
 */
#include "binding.h"

#include "rg_params.h"

static const struct {
    const char *name;
    rg_dtype dtype;
} block_types[] = {{"Q4_0", RG_DTYPE_Q4_0}, {"Q4_1", RG_DTYPE_Q4_1}, {"Q8_0", RG_DTYPE_Q8_0}};

int binding_block_source(PyArrayObject *raw, const char *qtype, const char *what, rg_tensor_source *out)
{
    int dtype = -1;
    for (size_t i = 0; i < sizeof(block_types) / sizeof(block_types[0]); i++)
        if (strcmp(qtype, block_types[i].name) == 0)
            dtype = (int)block_types[i].dtype;
    if (dtype < 0) {
        PyErr_Format(PyExc_ValueError, "%s: unknown block format '%s' (Q4_0, Q4_1 and Q8_0 are read here)",
                     what, qtype);
        return -1;
    }
    const npy_intp size = (npy_intp)rg_dtype_size((rg_dtype)dtype);
    if (PyArray_TYPE(raw) != NPY_UINT8 || PyArray_NDIM(raw) != 2) {
        PyErr_Format(PyExc_TypeError, "%s: %s values must be a 2-D uint8 array of raw blocks (rows, bytes)",
                     what, qtype);
        return -1;
    }
    const npy_intp rows = PyArray_DIM(raw, 0), row_bytes = PyArray_DIM(raw, 1);
    if (row_bytes % size != 0 || PyArray_STRIDE(raw, 1) != 1 ||
        (rows > 1 && (PyArray_STRIDE(raw, 0) < row_bytes || PyArray_STRIDE(raw, 0) % size != 0))) {
        PyErr_Format(PyExc_ValueError, "%s: %s rows must be whole %zd-byte blocks laid out one row after "
                     "another (got %zd bytes per row, strides %zd, %zd)", what, qtype, (Py_ssize_t)size,
                     (Py_ssize_t)row_bytes, (Py_ssize_t)PyArray_STRIDE(raw, 0), (Py_ssize_t)PyArray_STRIDE(raw, 1));
        return -1;
    }
    *out = (rg_tensor_source){.data = PyArray_DATA(raw), .dtype = (rg_dtype)dtype, .rows = rows,
                              .cols = row_bytes / size * RG_QUANT_BLOCK,
                              .row_stride = rows > 1 ? PyArray_STRIDE(raw, 0) / size : row_bytes / size,
                              .col_stride = 1};
    return 0;
}

static PyObject *core_dequantize(PyObject *module, PyObject *args)
{
    PyObject *raw_obj;
    const char *qtype;
    if (!PyArg_ParseTuple(args, "Os:dequantize", &raw_obj, &qtype))
        return NULL;
    PyArrayObject *raw = (PyArrayObject *)PyArray_FROM_OF(raw_obj, NPY_ARRAY_ALIGNED);
    if (raw == NULL)
        return NULL;
    PyObject *out = NULL;
    rg_tensor_source source;
    if (binding_block_source(raw, qtype, "dequantize", &source) < 0)
        goto done;
    npy_intp dims[2] = {(npy_intp)source.rows, (npy_intp)source.cols};
    out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (out == NULL)
        goto done;
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_tensor_convert((float *)PyArray_DATA((PyArrayObject *)out), &source);
    Py_END_ALLOW_THREADS
    if (status != RG_OK) {
        Py_CLEAR(out);
        binding_raise_status(binding_state_of_module(module), status, "dequantize");
    }
done:
    Py_DECREF(raw);
    return out;
}

static PyMethodDef weights_methods[] = {
    {"dequantize", core_dequantize, METH_VARARGS,
     "dequantize(raw, qtype) -> float32 (rows, cols): raw is a (rows, bytes) uint8 array of\n"
     "llama.cpp blocks of type qtype ('Q4_0', 'Q4_1', 'Q8_0'); cols = bytes / block size * 32."},
    {NULL, NULL, 0, NULL}
};

int binding_add_weights(PyObject *module)
{
    return PyModule_AddFunctions(module, weights_methods);
}
