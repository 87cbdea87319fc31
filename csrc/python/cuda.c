/*
 * cuda.c - where the CUDA library is, whether it was built, and the CUDA
 * toolchain checks of reviewgen._core. The library is opened on the first
 * call that needs a GPU, never at import.
 */
#include "binding.h"

#include "cuda/rg_cuda.h"

static PyObject *core_cuda_set_library(PyObject *module, PyObject *arg)
{
    PyObject *encoded = NULL;
    const char *path = NULL;
    if (arg != Py_None) {
        if (!PyUnicode_FSConverter(arg, &encoded))
            return NULL;
        path = PyBytes_AS_STRING(encoded);
    }
    rg_status status = rg_cuda_set_library(path);
    Py_XDECREF(encoded);
    if (status == RG_ERR_STATE) {
        PyErr_SetString(binding_state_of_module(module)->status_error[RG_ERR_STATE],
                        "cuda_set_library: the CUDA library is already loaded");
        return NULL;
    }
    if (status != RG_OK)
        return binding_raise_status(binding_state_of_module(module), status, "cuda_set_library");
    Py_RETURN_NONE;
}

static PyObject *core_cuda_compiled(PyObject *module, PyObject *unused)
{
    return PyBool_FromLong(rg_cuda_compiled());
}

static PyObject *core_cuda_load_error(PyObject *module, PyObject *unused)
{
    return PyUnicode_DecodeFSDefault(rg_cuda_load_error());
}

static PyObject *core_cuda_device_count(PyObject *module, PyObject *unused)
{
    int count;
    Py_BEGIN_ALLOW_THREADS
    count = rg_cuda_device_count();
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(count);
}

static PyObject *core_cuda_axpy(PyObject *module, PyObject *args)
{
    float a;
    PyObject *x_obj, *y_obj;
    PyArrayObject *x = NULL, *y = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "fOO:cuda_axpy", &a, &x_obj, &y_obj))
        return NULL;
    if (!(x = rg_array_in(x_obj, NPY_FLOAT32, 1, "x")) || !(y = rg_array_in(y_obj, NPY_FLOAT32, 1, "y")))
        goto error;
    if (PyArray_DIM(x, 0) != PyArray_DIM(y, 0)) {
        PyErr_SetString(PyExc_ValueError, "x and y must have the same length");
        goto error;
    }
    npy_intp n = PyArray_DIM(x, 0);
    if (!(out = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_FLOAT32)))
        goto error;
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_cuda_axpy(a, PyArray_DATA(x), PyArray_DATA(y), PyArray_DATA(out), n);
    Py_END_ALLOW_THREADS
    if (status != RG_OK) {
        binding_raise_status(binding_state_of_module(module), status, "cuda_axpy");
        goto error;
    }
    Py_DECREF(x);
    Py_DECREF(y);
    return (PyObject *)out;
error:
    Py_XDECREF(x);
    Py_XDECREF(y);
    Py_XDECREF(out);
    return NULL;
}

static PyObject *core_cublaslt_probe(PyObject *module, PyObject *unused)
{
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_cuda_cublaslt_probe();
    Py_END_ALLOW_THREADS
    if (status != RG_OK)
        return binding_raise_status(binding_state_of_module(module), status, "cublaslt_probe");
    Py_RETURN_NONE;
}

static PyMethodDef cuda_methods[] = {
    {"cuda_set_library", core_cuda_set_library, METH_O,
     "cuda_set_library(path or None): where the CUDA library is; opens nothing."},
    {"cuda_compiled", core_cuda_compiled, METH_NOARGS,
     "True when the CUDA library was built (its file exists); opens nothing."},
    {"cuda_load_error", core_cuda_load_error, METH_NOARGS,
     "Why the CUDA library failed to open ('' when it did or was not tried)."},
    {"cuda_device_count", core_cuda_device_count, METH_NOARGS, "Number of usable CUDA devices."},
    {"cuda_axpy", core_cuda_axpy, METH_VARARGS, "cuda_axpy(a, x, y) -> a*x+y computed on the GPU (toolchain check)."},
    {"cublaslt_probe", core_cublaslt_probe, METH_NOARGS, "Create and free a cuBLASLt handle; raises CudaError on failure."},
    {NULL, NULL, 0, NULL}
};

int binding_add_cuda(PyObject *module)
{
    return PyModule_AddFunctions(module, cuda_methods);
}
