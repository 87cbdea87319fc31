/*
 * _coremodule.c - the one file that binds the C core to Python (reviewgen._core).
 *
 * Thin bindings: parse arguments, convert with PyArray_FROM_OTF, check dtype
 * and shape, release the GIL only around the core call, clean up through one
 * `error:` label. Multi-phase module init; every rg_status maps to one
 * specific exception class kept in the module state.
 *
 * Sections (each owned by one part of the core; keep them in this order):
 *   1. module state, exceptions, shared helpers
 *   2. build information and CUDA
 *   3. metrics
 *   4. model        (transformer forward/backward/generation)
 *   5. trainer      (optimizer, schedule, accumulation, clipping)
 *   6. module definition
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define PY_ARRAY_UNIQUE_SYMBOL reviewgen_core_ARRAY_API
#include <numpy/arrayobject.h>

#include "rg_common.h"
#include "cuda/rg_cuda.h"

/* ===================================================================== */
/* 1. module state, exceptions, shared helpers                            */
/* ===================================================================== */

typedef struct {
    PyObject *core_error;          /* base class of every core exception */
    PyObject *status_error[RG_STATUS_COUNT]; /* one class per status (NULL for RG_OK) */
} core_state;

static struct PyModuleDef core_module_def;

static inline core_state *state_of_module(PyObject *module)
{
    return (core_state *)PyModule_GetState(module);
}

/* Module state from a heap type defined by this module (for methods of our objects). */
static inline core_state *state_of_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModuleByDef(type, &core_module_def);
    return module ? state_of_module(module) : NULL;
}

/* Raise the exception that belongs to `status`, with a message naming what failed.
 * Returns NULL so callers can `return rg_raise(...)`. */
static PyObject *rg_raise(core_state *state, rg_status status, const char *what)
{
    if (status == RG_ERR_NOMEM) {
        return PyErr_Format(PyExc_MemoryError, "%s: %s", what, rg_status_string(status));
    }
    PyObject *cls = (state && status > RG_OK && status < RG_STATUS_COUNT)
                        ? state->status_error[status] : NULL;
    if (cls == NULL)
        cls = state ? state->core_error : PyExc_RuntimeError;
    return PyErr_Format(cls, "%s: %s", what, rg_status_string(status));
}

/* Convert `obj` to an aligned, C-contiguous array of `typenum` (a copy only
 * where needed). Casting must be safe: float labels or int64 ids that do not
 * fit are refused with a TypeError naming the argument. `ndim` < 0 accepts any. */
static PyArrayObject *rg_array_in(PyObject *obj, int typenum, int ndim, const char *name)
{
    PyArrayObject *array = (PyArrayObject *)PyArray_FROM_OTF(obj, typenum, NPY_ARRAY_IN_ARRAY);
    if (array == NULL) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_Format(PyExc_TypeError, "%s: expected an array convertible to %s (%S)", name,
                     typenum == NPY_FLOAT32 ? "float32" : typenum == NPY_INT32 ? "int32" : "the core dtype",
                     value ? value : Py_None);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        return NULL;
    }
    if (ndim >= 0 && PyArray_NDIM(array) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d dimension(s), got %d", name, ndim,
                     PyArray_NDIM(array));
        Py_DECREF(array);
        return NULL;
    }
    return array;
}

/* A writable, C-contiguous output array that the caller allocated (no copy allowed). */
static PyArrayObject *rg_array_out(PyObject *obj, int typenum, const char *name)
{
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a numpy array", name);
        return NULL;
    }
    PyArrayObject *array = (PyArrayObject *)obj;
    if (PyArray_TYPE(array) != typenum || !PyArray_IS_C_CONTIGUOUS(array) ||
        !PyArray_ISWRITEABLE(array) || !PyArray_ISALIGNED(array)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a writable C-contiguous %s array", name,
                     typenum == NPY_FLOAT32 ? "float32" : "int32");
        return NULL;
    }
    Py_INCREF(array);
    return array;
}

/* ===================================================================== */
/* 2. build information and CUDA                                          */
/* ===================================================================== */

static PyObject *core_cuda_compiled(PyObject *module, PyObject *unused)
{
    return PyBool_FromLong(rg_cuda_compiled());
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
        rg_raise(state_of_module(module), status, "cuda_axpy");
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
        return rg_raise(state_of_module(module), status, "cublaslt_probe");
    Py_RETURN_NONE;
}

/* ===================================================================== */
/* 3. metrics                                                             */
/* ===================================================================== */

/* ===================================================================== */
/* 4. model                                                               */
/* ===================================================================== */

/* ===================================================================== */
/* 5. trainer                                                             */
/* ===================================================================== */

/* ===================================================================== */
/* 6. module definition                                                   */
/* ===================================================================== */

static PyMethodDef core_methods[] = {
    {"cuda_compiled", core_cuda_compiled, METH_NOARGS, "True when this build compiled the CUDA sources."},
    {"cuda_device_count", core_cuda_device_count, METH_NOARGS, "Number of usable CUDA devices."},
    {"cuda_axpy", core_cuda_axpy, METH_VARARGS, "cuda_axpy(a, x, y) -> a*x+y computed on the GPU (toolchain check)."},
    {"cublaslt_probe", core_cublaslt_probe, METH_NOARGS, "Create and free a cuBLASLt handle; raises CudaError on failure."},
    /* -- metrics methods -- */
    /* -- model methods -- */
    /* -- trainer methods -- */
    {NULL, NULL, 0, NULL}
};

/* Exception classes: name, extra builtin base, docstring; indexed by rg_status. */
static const struct {
    rg_status status;
    const char *name;
    const char *doc;
} status_exceptions[] = {
    {RG_ERR_INVALID_ARG, "InvalidArgumentError", "An argument the core cannot accept."},
    {RG_ERR_SHAPE, "ShapeError", "Array sizes that do not agree."},
    {RG_ERR_LABEL_RANGE, "LabelRangeError", "A label or token id outside its range."},
    {RG_ERR_NONFINITE, "NonFiniteError", "NaN or infinity in an input or a result."},
    {RG_ERR_EMPTY, "EmptyInputError", "An empty input where data is needed."},
    {RG_ERR_STATE, "StateError", "A call the object's state does not allow."},
    {RG_ERR_CUDA, "CudaError", "A CUDA or cuBLASLt call failed."},
    {RG_ERR_UNSUPPORTED, "UnsupportedError", "Not provided by this build or configuration."},
};

static PyObject *builtin_base_for(rg_status status)
{
    switch (status) {
    case RG_ERR_STATE: return PyExc_RuntimeError;
    case RG_ERR_CUDA: return PyExc_RuntimeError;
    case RG_ERR_UNSUPPORTED: return PyExc_NotImplementedError;
    default: return PyExc_ValueError;
    }
}

/* Types defined by the sections above add themselves here (PyType_FromModuleAndSpec). */
static int core_add_types(PyObject *module);

static int core_exec(PyObject *module)
{
    core_state *state = state_of_module(module);
    state->core_error = PyErr_NewExceptionWithDoc("reviewgen._core.CoreError",
                                                  "Base class of the errors the C core reports.",
                                                  PyExc_Exception, NULL);
    if (state->core_error == NULL || PyModule_AddObjectRef(module, "CoreError", state->core_error) < 0)
        return -1;
    for (size_t i = 0; i < sizeof(status_exceptions) / sizeof(status_exceptions[0]); i++) {
        char qualified[96];
        PyOS_snprintf(qualified, sizeof(qualified), "reviewgen._core.%s", status_exceptions[i].name);
        PyObject *bases = PyTuple_Pack(2, state->core_error, builtin_base_for(status_exceptions[i].status));
        if (bases == NULL)
            return -1;
        PyObject *cls = PyErr_NewExceptionWithDoc(qualified, status_exceptions[i].doc, bases, NULL);
        Py_DECREF(bases);
        if (cls == NULL)
            return -1;
        state->status_error[status_exceptions[i].status] = cls;
        if (PyModule_AddObjectRef(module, status_exceptions[i].name, cls) < 0)
            return -1;
    }
    if (PyModule_AddIntConstant(module, "CUDA_COMPILED", rg_cuda_compiled()) < 0)
        return -1;
    return core_add_types(module);
}

static int core_traverse(PyObject *module, visitproc visit, void *arg)
{
    core_state *state = state_of_module(module);
    Py_VISIT(state->core_error);
    for (int i = 0; i < RG_STATUS_COUNT; i++)
        Py_VISIT(state->status_error[i]);
    return 0;
}

static int core_clear(PyObject *module)
{
    core_state *state = state_of_module(module);
    Py_CLEAR(state->core_error);
    for (int i = 0; i < RG_STATUS_COUNT; i++)
        Py_CLEAR(state->status_error[i]);
    return 0;
}

static void core_free(void *module)
{
    core_clear((PyObject *)module);
}

static int core_add_types(PyObject *module)
{
    /* -- type registrations -- */
    return 0;
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
#if PY_VERSION_HEX >= 0x030C0000
    /* NumPy itself supports a single interpreter only. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL}
};

static struct PyModuleDef core_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "reviewgen._core",
    .m_doc = "The C core of reviewgen: metrics, transformer fine-tuning and generation.",
    .m_size = sizeof(core_state),
    .m_methods = core_methods,
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
    .m_free = core_free,
};

PyMODINIT_FUNC PyInit__core(void)
{
    import_array();  /* returns NULL on failure */
    return PyModuleDef_Init(&core_module_def);
}
