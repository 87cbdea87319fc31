/*
 * module.c - the module reviewgen._core: its state, the one mapping from core
 * statuses to exceptions, the array helpers every area uses, and the module
 * definition that lets each area (binding.h) add its functions and types.
 */
#define BINDING_IMPORTS_NUMPY
#include "binding.h"

#include <signal.h>

#include "cuda/rg_cuda.h"

core_state *binding_state_of_module(PyObject *module)
{
    return (core_state *)PyModule_GetState(module);
}

core_state *binding_state_of_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModuleByDef(type, &binding_module_def);
    return module ? binding_state_of_module(module) : NULL;
}

PyObject *binding_raise(core_state *state, rg_status status, const char *format, ...)
{
    if (status == RG_ERR_INTERRUPTED) {
        if (PyErr_CheckSignals() < 0) /* runs Python's handler: KeyboardInterrupt */
            return NULL;
        PyErr_SetNone(PyExc_KeyboardInterrupt);
        return NULL;
    }
    PyObject *cls = NULL;
    if (status == RG_ERR_NOMEM)
        cls = PyExc_MemoryError;
    else if (state && status > RG_OK && status < RG_STATUS_COUNT)
        cls = state->status_error[status];
    if (cls == NULL)
        cls = state ? state->core_error : PyExc_RuntimeError;
    va_list args;
    va_start(args, format);
    PyObject *message = PyUnicode_FromFormatV(format, args);
    va_end(args);
    if (message != NULL) {
        PyErr_SetObject(cls, message);
        Py_DECREF(message);
    }
    return NULL;
}

/* Integer values that do not fit int32 are refused rather than wrapped. */
static int rg_fits_int32(PyArrayObject *natural, const char *name)
{
    int is_unsigned = PyArray_ISUNSIGNED(natural);
    PyArrayObject *wide = (PyArrayObject *)PyArray_FROM_OTF(
        (PyObject *)natural, is_unsigned ? NPY_UINT64 : NPY_INT64, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (wide == NULL)
        return 0;
    npy_intp n = PyArray_SIZE(wide);
    int fits = 1;
    if (is_unsigned) {
        const uint64_t *values = PyArray_DATA(wide);
        for (npy_intp i = 0; i < n && fits; i++)
            fits = values[i] <= (uint64_t)INT32_MAX;
    } else {
        const int64_t *values = PyArray_DATA(wide);
        for (npy_intp i = 0; i < n && fits; i++)
            fits = values[i] >= INT32_MIN && values[i] <= INT32_MAX;
    }
    Py_DECREF(wide);
    if (!fits)
        PyErr_Format(PyExc_OverflowError, "%s: a value does not fit in int32", name);
    return fits;
}

/* Ctrl-C during a long core call. The GIL is released there, so Python's own
 * SIGINT handler only notes the signal; for the duration of the call a handler
 * of ours also asks the core to stop at its next layer boundary, then passes
 * the signal on, and KeyboardInterrupt is raised once the call returns.
 * Installed and removed with the GIL held; nested calls share one install. */
static PyOS_sighandler_t sigint_previous = NULL;
static int sigint_depth = 0;

static void sigint_to_core(int signum)
{
    rg_interrupt_request();
    if (sigint_previous != NULL && sigint_previous != SIG_IGN && sigint_previous != SIG_DFL)
        sigint_previous(signum);
}

void interruptible_begin(void)
{
    if (sigint_depth++ == 0) {
        rg_interrupt_clear();
        sigint_previous = PyOS_setsig(SIGINT, sigint_to_core);
    }
}

void interruptible_end(void)
{
    if (--sigint_depth == 0) {
        PyOS_setsig(SIGINT, sigint_previous);
        sigint_previous = NULL;
        rg_interrupt_clear();
    }
}

PyArrayObject *rg_array_in(PyObject *obj, int typenum, int ndim, const char *name)
{
    PyArrayObject *natural = (PyArrayObject *)PyArray_FROM_O(obj);
    PyArrayObject *array = NULL;
    if (natural == NULL)
        goto convert_error;
    int kind_ok = typenum == NPY_INT32
        ? PyArray_ISINTEGER(natural)
        : typenum == NPY_FLOAT32 ? (PyArray_ISINTEGER(natural) || PyArray_ISFLOAT(natural))
                                 : PyArray_CanCastSafely(PyArray_TYPE(natural), typenum);
    if (!kind_ok) {
        PyErr_Format(PyExc_TypeError, "%s: expected %s values, got dtype %S", name,
                     typenum == NPY_INT32 ? "integer" : "real", (PyObject *)PyArray_DESCR(natural));
        Py_DECREF(natural);
        return NULL;
    }
    if (typenum == NPY_INT32 && PyArray_TYPE(natural) != NPY_INT32 && !rg_fits_int32(natural, name)) {
        Py_DECREF(natural);
        return NULL;
    }
    array = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)natural, typenum,
                                              NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    Py_DECREF(natural);
    if (array == NULL)
        goto convert_error;
    if (ndim >= 0 && PyArray_NDIM(array) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: expected %d dimension(s), got %d", name, ndim,
                     PyArray_NDIM(array));
        Py_DECREF(array);
        return NULL;
    }
    return array;

convert_error: {
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
}

PyArrayObject *rg_array_out(PyObject *obj, int typenum, const char *name)
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
    {RG_ERR_TOO_LARGE, "TooLargeError", "A size beyond the core's limits (or whose arithmetic would overflow)."},
    {RG_ERR_IO, "CoreIOError", "A file the core writes or reads could not be created, written, synced or renamed."},
    {RG_ERR_CORRUPT, "CorruptFileError", "A file whose magic, checksum or structure is wrong (truncated or altered)."},
    {RG_ERR_COMM, "CommError", "A collective of a data-parallel run failed (a peer rank died, a timeout)."},
};

static PyObject *builtin_base_for(rg_status status)
{
    switch (status) {
    case RG_ERR_STATE: return PyExc_RuntimeError;
    case RG_ERR_CUDA: return PyExc_RuntimeError;
    case RG_ERR_UNSUPPORTED: return PyExc_NotImplementedError;
    case RG_ERR_IO: return PyExc_OSError;
    case RG_ERR_COMM: return PyExc_RuntimeError;
    default: return PyExc_ValueError;
    }
}

static int core_add_areas(PyObject *module)
{
    int (*const areas[])(PyObject *) = {binding_add_cpu, binding_add_cuda, binding_add_metrics, binding_add_model,
                                        binding_add_generate, binding_add_train,
                                        binding_add_trainer, binding_add_sweep, binding_add_weights};
    for (size_t i = 0; i < sizeof(areas) / sizeof(areas[0]); i++)
        if (areas[i](module) < 0)
            return -1;
    return 0;
}

static int core_exec(PyObject *module)
{
    core_state *state = binding_state_of_module(module);
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
    return core_add_areas(module);
}

static int core_traverse(PyObject *module, visitproc visit, void *arg)
{
    core_state *state = binding_state_of_module(module);
    Py_VISIT(state->core_error);
    for (int i = 0; i < RG_STATUS_COUNT; i++)
        Py_VISIT(state->status_error[i]);
    return 0;
}

static int core_clear(PyObject *module)
{
    core_state *state = binding_state_of_module(module);
    Py_CLEAR(state->core_error);
    for (int i = 0; i < RG_STATUS_COUNT; i++)
        Py_CLEAR(state->status_error[i]);
    return 0;
}

static void core_free(void *module)
{
    core_clear((PyObject *)module);
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
#if PY_VERSION_HEX >= 0x030C0000
    /* NumPy itself supports a single interpreter only. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL}
};

struct PyModuleDef binding_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "reviewgen._core",
    .m_doc = "The C core of reviewgen: metrics, transformer fine-tuning and generation.",
    .m_size = sizeof(core_state),
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
    .m_free = core_free,
};

PyMODINIT_FUNC PyInit__core(void)
{
    import_array();  /* returns NULL on failure */
    return PyModuleDef_Init(&binding_module_def);
}
