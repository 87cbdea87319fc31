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
#include <signal.h>
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
    if (status == RG_ERR_INTERRUPTED) {
        if (PyErr_CheckSignals() < 0) /* runs Python's handler: KeyboardInterrupt */
            return NULL;
        PyErr_SetNone(PyExc_KeyboardInterrupt);
        return NULL;
    }
    if (status == RG_ERR_NOMEM) {
        return PyErr_Format(PyExc_MemoryError, "%s: %s", what, rg_status_string(status));
    }
    PyObject *cls = (state && status > RG_OK && status < RG_STATUS_COUNT)
                        ? state->status_error[status] : NULL;
    if (cls == NULL)
        cls = state ? state->core_error : PyExc_RuntimeError;
    return PyErr_Format(cls, "%s: %s", what, rg_status_string(status));
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

static void interruptible_begin(void)
{
    if (sigint_depth++ == 0) {
        rg_interrupt_clear();
        sigint_previous = PyOS_setsig(SIGINT, sigint_to_core);
    }
}

static void interruptible_end(void)
{
    if (--sigint_depth == 0) {
        PyOS_setsig(SIGINT, sigint_previous);
        sigint_previous = NULL;
        rg_interrupt_clear();
    }
}

/* Convert `obj` (an array or a nested sequence) to an aligned, C-contiguous
 * array of `typenum`, copying only where needed. int32 takes integers of any
 * width whose values fit (floats, bools and strings are refused); float32 takes
 * any real number. A TypeError names the argument. `ndim` < 0 accepts any. */
static PyArrayObject *rg_array_in(PyObject *obj, int typenum, int ndim, const char *name)
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

#include "rg_metrics.h"

/* A clear exception for a failed classification call: which argument, which element. */
static void metrics_raise_classification(core_state *state, rg_status status, const char *function,
                                         PyArrayObject *y_true, PyArrayObject *y_pred,
                                         PyArrayObject *labels)
{
    PyObject *cls = (status > RG_OK && status < RG_STATUS_COUNT) ? state->status_error[status] : NULL;
    npy_intp n_true = PyArray_DIM(y_true, 0), n_pred = PyArray_DIM(y_pred, 0);
    npy_intp K = PyArray_DIM(labels, 0);
    switch (status) {
    case RG_ERR_SHAPE:
        PyErr_Format(cls, "%s: y_true and y_pred have different lengths (%zd and %zd)", function,
                     (Py_ssize_t)n_true, (Py_ssize_t)n_pred);
        return;
    case RG_ERR_EMPTY:
        PyErr_Format(cls, "%s: %s is empty", function, K == 0 ? "labels" : "y_true (and y_pred)");
        return;
    case RG_ERR_INVALID_ARG:
        PyErr_Format(cls, "%s: labels must be strictly increasing (sorted, without duplicates)",
                     function);
        return;
    case RG_ERR_LABEL_RANGE: {
        const int32_t *set = PyArray_DATA(labels);
        const int32_t *arrays[2] = {PyArray_DATA(y_true), PyArray_DATA(y_pred)};
        const char *names[2] = {"y_true", "y_pred"};
        for (int a = 0; a < 2; a++) {
            for (npy_intp i = 0; i < n_true; i++) {
                if (rg_metrics_label_index(set, K, arrays[a][i]) < 0) {
                    PyErr_Format(cls, "%s: %s[%zd] = %d is not one of the %zd declared labels "
                                 "(from %d to %d)", function, names[a], (Py_ssize_t)i,
                                 (int)arrays[a][i], (Py_ssize_t)K, (int)set[0], (int)set[K - 1]);
                    return;
                }
            }
        }
        break;
    }
    default:
        break;
    }
    rg_raise(state, status, function);
}

/* y_true, y_pred and labels as 1-D int32 arrays (a copy only where needed). */
static int metrics_label_arrays_in(PyObject *y_true_obj, PyObject *y_pred_obj, PyObject *labels_obj,
                                   PyArrayObject **y_true, PyArrayObject **y_pred,
                                   PyArrayObject **labels)
{
    *y_true = rg_array_in(y_true_obj, NPY_INT32, 1, "y_true");
    *y_pred = *y_true ? rg_array_in(y_pred_obj, NPY_INT32, 1, "y_pred") : NULL;
    *labels = *y_pred ? rg_array_in(labels_obj, NPY_INT32, 1, "labels") : NULL;
    return *labels != NULL;
}

static PyObject *core_metrics_confusion(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"y_true", "y_pred", "labels", "near", NULL};
    PyObject *y_true_obj, *y_pred_obj, *labels_obj;
    int near = 0;
    PyArrayObject *y_true = NULL, *y_pred = NULL, *labels = NULL, *confusion = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|p:metrics_confusion", keywords,
                                     &y_true_obj, &y_pred_obj, &labels_obj, &near))
        return NULL;
    if (!metrics_label_arrays_in(y_true_obj, y_pred_obj, labels_obj, &y_true, &y_pred, &labels))
        goto error;
    npy_intp K = PyArray_DIM(labels, 0);
    npy_intp dims[2] = {K, K};
    if (!(confusion = (PyArrayObject *)PyArray_ZEROS(2, dims, NPY_INT64, 0)))
        goto error;
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_metrics_confusion(PyArray_DATA(y_true), PyArray_DIM(y_true, 0),
                                  PyArray_DATA(y_pred), PyArray_DIM(y_pred, 0),
                                  PyArray_DATA(labels), K, near, PyArray_DATA(confusion));
    Py_END_ALLOW_THREADS
    if (status != RG_OK) {
        metrics_raise_classification(state_of_module(module), status, "confusion_matrix", y_true,
                                     y_pred, labels);
        goto error;
    }
    Py_DECREF(y_true);
    Py_DECREF(y_pred);
    Py_DECREF(labels);
    return (PyObject *)confusion;
error:
    Py_XDECREF(y_true);
    Py_XDECREF(y_pred);
    Py_XDECREF(labels);
    Py_XDECREF(confusion);
    return NULL;
}

/* Adds `value` (a new reference, may be NULL after a failure) to `dict` under `key`. */
static int metrics_dict_put(PyObject *dict, const char *key, PyObject *value)
{
    if (value == NULL)
        return -1;
    int result = PyDict_SetItemString(dict, key, value);
    Py_DECREF(value);
    return result;
}

static PyObject *core_metrics_classification(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"y_true", "y_pred", "labels", "near", NULL};
    PyObject *y_true_obj, *y_pred_obj, *labels_obj;
    int near = 0;
    PyArrayObject *y_true = NULL, *y_pred = NULL, *labels = NULL, *confusion = NULL;
    PyArrayObject *precision = NULL, *recall = NULL, *f1 = NULL, *support = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|p:metrics_classification", keywords,
                                     &y_true_obj, &y_pred_obj, &labels_obj, &near))
        return NULL;
    if (!metrics_label_arrays_in(y_true_obj, y_pred_obj, labels_obj, &y_true, &y_pred, &labels))
        goto error;
    npy_intp K = PyArray_DIM(labels, 0);
    npy_intp dims[2] = {K, K};
    if (!(confusion = (PyArrayObject *)PyArray_ZEROS(2, dims, NPY_INT64, 0)) ||
        !(precision = (PyArrayObject *)PyArray_ZEROS(1, &K, NPY_FLOAT64, 0)) ||
        !(recall = (PyArrayObject *)PyArray_ZEROS(1, &K, NPY_FLOAT64, 0)) ||
        !(f1 = (PyArrayObject *)PyArray_ZEROS(1, &K, NPY_FLOAT64, 0)) ||
        !(support = (PyArrayObject *)PyArray_ZEROS(1, &K, NPY_INT64, 0)))
        goto error;
    rg_metrics_summary summary;
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_metrics_classification(PyArray_DATA(y_true), PyArray_DIM(y_true, 0),
                                       PyArray_DATA(y_pred), PyArray_DIM(y_pred, 0),
                                       PyArray_DATA(labels), K, near, PyArray_DATA(confusion),
                                       PyArray_DATA(precision), PyArray_DATA(recall),
                                       PyArray_DATA(f1), PyArray_DATA(support), &summary);
    Py_END_ALLOW_THREADS
    if (status != RG_OK) {
        metrics_raise_classification(state_of_module(module), status, "classification_report",
                                     y_true, y_pred, labels);
        goto error;
    }
    if (!(result = PyDict_New()))
        goto error;
    /* the dict takes the arrays over: clear our pointers as each is handed on */
    int failed = metrics_dict_put(result, "labels", (PyObject *)labels) ||
                 metrics_dict_put(result, "confusion", (PyObject *)confusion) ||
                 metrics_dict_put(result, "precision", (PyObject *)precision) ||
                 metrics_dict_put(result, "recall", (PyObject *)recall) ||
                 metrics_dict_put(result, "f1", (PyObject *)f1) ||
                 metrics_dict_put(result, "support", (PyObject *)support);
    labels = confusion = precision = recall = f1 = support = NULL;
    if (failed ||
        metrics_dict_put(result, "n_samples", PyLong_FromLongLong(summary.n_samples)) ||
        metrics_dict_put(result, "accuracy", PyFloat_FromDouble(summary.accuracy)) ||
        metrics_dict_put(result, "macro_precision", PyFloat_FromDouble(summary.macro.precision)) ||
        metrics_dict_put(result, "macro_recall", PyFloat_FromDouble(summary.macro.recall)) ||
        metrics_dict_put(result, "macro_f1", PyFloat_FromDouble(summary.macro.f1)) ||
        metrics_dict_put(result, "weighted_precision",
                         PyFloat_FromDouble(summary.weighted.precision)) ||
        metrics_dict_put(result, "weighted_recall", PyFloat_FromDouble(summary.weighted.recall)) ||
        metrics_dict_put(result, "weighted_f1", PyFloat_FromDouble(summary.weighted.f1)) ||
        metrics_dict_put(result, "near", PyBool_FromLong(near)))
        goto error;
    Py_DECREF(y_true);
    Py_DECREF(y_pred);
    return result;
error:
    Py_XDECREF(y_true);
    Py_XDECREF(y_pred);
    Py_XDECREF(labels);
    Py_XDECREF(confusion);
    Py_XDECREF(precision);
    Py_XDECREF(recall);
    Py_XDECREF(f1);
    Py_XDECREF(support);
    Py_XDECREF(result);
    return NULL;
}

static PyObject *core_metrics_perplexity(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"nll", "weights", NULL};
    PyObject *nll_obj, *weights_obj = Py_None;
    PyArrayObject *nll = NULL, *weights = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:metrics_perplexity", keywords, &nll_obj,
                                     &weights_obj))
        return NULL;
    core_state *state = state_of_module(module);
    if (!(nll = rg_array_in(nll_obj, NPY_FLOAT32, -1, "nll")))
        goto error;
    if (weights_obj != Py_None) {
        if (!(weights = rg_array_in(weights_obj, NPY_FLOAT32, -1, "mask")))
            goto error;
        if (PyArray_NDIM(weights) != PyArray_NDIM(nll) ||
            !PyArray_CompareLists(PyArray_DIMS(weights), PyArray_DIMS(nll), PyArray_NDIM(nll))) {
            PyObject *nll_shape = PyObject_GetAttrString((PyObject *)nll, "shape");
            PyObject *mask_shape = PyObject_GetAttrString((PyObject *)weights, "shape");
            if (nll_shape && mask_shape)
                PyErr_Format(state->status_error[RG_ERR_SHAPE],
                             "perplexity: mask has shape %R but nll has shape %R", mask_shape,
                             nll_shape);
            Py_XDECREF(nll_shape);
            Py_XDECREF(mask_shape);
            goto error;
        }
    }
    double perplexity = 0.0;
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_metrics_perplexity(PyArray_DATA(nll), PyArray_SIZE(nll),
                                   weights ? PyArray_DATA(weights) : NULL,
                                   weights ? PyArray_SIZE(weights) : 0, &perplexity, NULL);
    Py_END_ALLOW_THREADS
    switch (status) {
    case RG_OK:
        break;
    case RG_ERR_NONFINITE:
        PyErr_Format(state->status_error[status],
                     "perplexity: nll%s holds NaN or infinity where it counts, or the mean nll "
                     "is too large for exp()", weights ? " or mask" : "");
        goto error;
    case RG_ERR_EMPTY:
        PyErr_Format(state->status_error[status], "perplexity: %s",
                     PyArray_SIZE(nll) == 0 ? "nll is empty" : "mask selects no token");
        goto error;
    case RG_ERR_INVALID_ARG:
        PyErr_Format(state->status_error[status], "perplexity: mask has a negative weight");
        goto error;
    default:
        rg_raise(state, status, "perplexity");
        goto error;
    }
    Py_DECREF(nll);
    Py_XDECREF(weights);
    return PyFloat_FromDouble(perplexity);
error:
    Py_XDECREF(nll);
    Py_XDECREF(weights);
    return NULL;
}

static PyObject *core_metrics_perplexity_from_sum(PyObject *module, PyObject *args)
{
    double sum_nll, n_tokens, perplexity = 0.0;
    if (!PyArg_ParseTuple(args, "dd:metrics_perplexity_from_sum", &sum_nll, &n_tokens))
        return NULL;
    rg_status status = rg_metrics_perplexity_from_sum(sum_nll, n_tokens, &perplexity);
    core_state *state = state_of_module(module);
    switch (status) {
    case RG_OK:
        return PyFloat_FromDouble(perplexity);
    case RG_ERR_NONFINITE:
        return PyErr_Format(state->status_error[status],
                            "perplexity_from_sum: sum_nll=%R and n_tokens=%R must be finite, "
                            "and their ratio at most ~709 (exp overflows)",
                            PyTuple_GET_ITEM(args, 0), PyTuple_GET_ITEM(args, 1));
    case RG_ERR_EMPTY:
        return PyErr_Format(state->status_error[status], "perplexity_from_sum: n_tokens is 0");
    case RG_ERR_INVALID_ARG:
        return PyErr_Format(state->status_error[status],
                            "perplexity_from_sum: n_tokens must not be negative (got %R)",
                            PyTuple_GET_ITEM(args, 1));
    default:
        return rg_raise(state, status, "perplexity_from_sum");
    }
}

/* ===================================================================== */
/* 4. model                                                               */
/* ===================================================================== */

#include "rg_model.h"

/* _core.Model(config: dict): the generic transformer. Arrays handed out by
 * .parameters / .gradients are views whose base is the Model, so the model
 * outlives them; untying the head never moves the blocks (rg_model.h). */
typedef struct {
    PyObject_HEAD
    rg_model *model;
    int busy; /* a core call runs without the GIL: a second call must not start */
} ModelObject;

static const char *const model_norm_names[] = {"layernorm", "rmsnorm", NULL};
static const char *const model_position_names[] = {"learned", "rope", NULL};
static const char *const model_activation_names[] = {"gelu_tanh", "gelu_erf", "swiglu", NULL};
static const char *const model_head_names[] = {"lm", "cls_distilbert", "cls_bert", NULL};
static const char *const model_policy_names[] = {"frozen", "train", "untie", NULL};

typedef enum { FIELD_INT, FIELD_FLOAT, FIELD_CHOICE } model_field_kind;
static const struct {
    const char *name;
    model_field_kind kind;
    size_t offset;
    const char *const *choices;
} model_config_fields[] = {
    {"vocab_size", FIELD_INT, offsetof(rg_model_config, vocab_size), NULL},
    {"n_positions", FIELD_INT, offsetof(rg_model_config, n_positions), NULL},
    {"n_layer", FIELD_INT, offsetof(rg_model_config, n_layer), NULL},
    {"n_head", FIELD_INT, offsetof(rg_model_config, n_head), NULL},
    {"n_kv_head", FIELD_INT, offsetof(rg_model_config, n_kv_head), NULL},
    {"head_dim", FIELD_INT, offsetof(rg_model_config, head_dim), NULL},
    {"n_embd", FIELD_INT, offsetof(rg_model_config, n_embd), NULL},
    {"n_inner", FIELD_INT, offsetof(rg_model_config, n_inner), NULL},
    {"type_vocab_size", FIELD_INT, offsetof(rg_model_config, type_vocab_size), NULL},
    {"norm", FIELD_CHOICE, offsetof(rg_model_config, norm), model_norm_names},
    {"norm_eps", FIELD_FLOAT, offsetof(rg_model_config, norm_eps), NULL},
    {"pre_norm", FIELD_INT, offsetof(rg_model_config, pre_norm), NULL},
    {"embed_norm", FIELD_INT, offsetof(rg_model_config, embed_norm), NULL},
    {"final_norm", FIELD_INT, offsetof(rg_model_config, final_norm), NULL},
    {"position", FIELD_CHOICE, offsetof(rg_model_config, position), model_position_names},
    {"rope_theta", FIELD_FLOAT, offsetof(rg_model_config, rope_theta), NULL},
    {"activation", FIELD_CHOICE, offsetof(rg_model_config, activation), model_activation_names},
    {"causal", FIELD_INT, offsetof(rg_model_config, causal), NULL},
    {"bias", FIELD_INT, offsetof(rg_model_config, bias), NULL},
    {"head", FIELD_CHOICE, offsetof(rg_model_config, head), model_head_names},
    {"tie_word_embeddings", FIELD_INT, offsetof(rg_model_config, tie_word_embeddings), NULL},
    {"num_labels", FIELD_INT, offsetof(rg_model_config, num_labels), NULL},
    {"embd_pdrop", FIELD_FLOAT, offsetof(rg_model_config, embd_pdrop), NULL},
    {"resid_pdrop", FIELD_FLOAT, offsetof(rg_model_config, resid_pdrop), NULL},
    {"attn_pdrop", FIELD_FLOAT, offsetof(rg_model_config, attn_pdrop), NULL},
    {"cls_pdrop", FIELD_FLOAT, offsetof(rg_model_config, cls_pdrop), NULL},
};
#define MODEL_CONFIG_FIELD_COUNT (sizeof(model_config_fields) / sizeof(model_config_fields[0]))

static int model_choice_index(const char *const *choices, const char *value)
{
    for (int i = 0; choices[i] != NULL; i++)
        if (strcmp(choices[i], value) == 0)
            return i;
    return -1;
}

/* Fills `config` from a dict holding exactly the fields of rg_model_config. */
static int model_config_from_dict(PyObject *dict, rg_model_config *config)
{
    if (!PyDict_Check(dict)) {
        PyErr_SetString(PyExc_TypeError, "Model(config): config must be a dict (ModelConfig.to_dict())");
        return -1;
    }
    memset(config, 0, sizeof(*config));
    for (size_t i = 0; i < MODEL_CONFIG_FIELD_COUNT; i++) {
        PyObject *value = PyDict_GetItemString(dict, model_config_fields[i].name); /* borrowed */
        if (value == NULL) {
            PyErr_Format(PyExc_ValueError, "Model(config): config is missing '%s'", model_config_fields[i].name);
            return -1;
        }
        char *slot = (char *)config + model_config_fields[i].offset;
        if (model_config_fields[i].kind == FIELD_INT) {
            long v = PyLong_AsLong(value);
            if (v == -1 && PyErr_Occurred()) {
                PyErr_Format(PyExc_TypeError, "Model(config): '%s' must be an int", model_config_fields[i].name);
                return -1;
            }
            if (v < INT32_MIN || v > INT32_MAX) {
                PyErr_Format(PyExc_ValueError, "Model(config): '%s' out of range", model_config_fields[i].name);
                return -1;
            }
            *(int *)slot = (int)v;
        } else if (model_config_fields[i].kind == FIELD_FLOAT) {
            double v = PyFloat_AsDouble(value);
            if (v == -1.0 && PyErr_Occurred()) {
                PyErr_Format(PyExc_TypeError, "Model(config): '%s' must be a number", model_config_fields[i].name);
                return -1;
            }
            *(float *)slot = (float)v;
        } else {
            const char *text = PyUnicode_Check(value) ? PyUnicode_AsUTF8(value) : NULL;
            int index = text ? model_choice_index(model_config_fields[i].choices, text) : -1;
            if (index < 0) {
                PyErr_Format(PyExc_ValueError, "Model(config): '%s' must be one of the names in "
                             "rg_model.h, got %R", model_config_fields[i].name, value);
                return -1;
            }
            *(int *)slot = index;
        }
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        const char *name = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        int known = 0;
        for (size_t i = 0; name != NULL && i < MODEL_CONFIG_FIELD_COUNT; i++)
            known |= strcmp(name, model_config_fields[i].name) == 0;
        if (!known) {
            PyErr_Format(PyExc_ValueError, "Model(config): unknown config field %R", key);
            return -1;
        }
    }
    return 0;
}

static PyObject *model_config_to_dict(const rg_model_config *config)
{
    PyObject *dict = PyDict_New();
    if (dict == NULL)
        return NULL;
    for (size_t i = 0; i < MODEL_CONFIG_FIELD_COUNT; i++) {
        const char *slot = (const char *)config + model_config_fields[i].offset;
        PyObject *value;
        if (model_config_fields[i].kind == FIELD_INT)
            value = PyLong_FromLong(*(const int *)slot);
        else if (model_config_fields[i].kind == FIELD_FLOAT)
            value = PyFloat_FromDouble(*(const float *)slot);
        else
            value = PyUnicode_FromString(model_config_fields[i].choices[*(const int *)slot]);
        if (value == NULL || PyDict_SetItemString(dict, model_config_fields[i].name, value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(dict);
            return NULL;
        }
        Py_DECREF(value);
    }
    return dict;
}

static core_state *model_state(PyObject *self) { return state_of_type(Py_TYPE(self)); }

static void model_dealloc(ModelObject *self);

/* The rg_model inside a _core.Model, for the other sections of this file (the
 * trainer hands it to the optimizer); NULL with a TypeError naming `what`
 * for any other object. Only a _core.Model has model_dealloc as destructor. */
static inline rg_model *model_unwrap(PyObject *obj, const char *what)
{
    if (obj == NULL || Py_TYPE(obj)->tp_dealloc != (destructor)model_dealloc) {
        PyErr_Format(PyExc_TypeError, "%s: expected a reviewgen._core.Model", what);
        return NULL;
    }
    return ((ModelObject *)obj)->model;
}

/* Raises the core's exception class for `status` with our own message. */
static PyObject *model_raise_message(PyObject *self, rg_status status, const char *message)
{
    core_state *state = model_state(self);
    PyObject *cls = (state && status > RG_OK && status < RG_STATUS_COUNT) ? state->status_error[status] : NULL;
    PyErr_SetString(cls ? cls : PyExc_ValueError, message);
    return NULL;
}

static int model_enter(ModelObject *self)
{
    if (self->busy) {
        model_raise_message((PyObject *)self, RG_ERR_STATE, "Model: another call on this model is running");
        return -1;
    }
    self->busy = 1;
    return 0;
}

static PyObject *model_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"config", NULL};
    PyObject *dict;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:Model", keywords, &dict))
        return NULL;
    rg_model_config config;
    if (model_config_from_dict(dict, &config) < 0)
        return NULL;
    ModelObject *self = (ModelObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_model_init(&self->model, &config);
    Py_END_ALLOW_THREADS
    if (status != RG_OK) {
        Py_DECREF(self);
        return rg_raise(state_of_type(type), status, "Model(config): the configuration was refused");
    }
    return (PyObject *)self;
}

static void model_dealloc(ModelObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    rg_model_free(self->model);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

/* A flat float32 view of a model block; its base keeps the model alive. */
static PyObject *model_block_view(ModelObject *self, float *data, int writable)
{
    npy_intp n = (npy_intp)self->model->table.total;
    PyObject *array = PyArray_New(&PyArray_Type, 1, &n, NPY_FLOAT32, NULL, data, 0,
                                  NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | (writable ? NPY_ARRAY_WRITEABLE : 0), NULL);
    if (array == NULL)
        return NULL;
    Py_INCREF(self);
    if (PyArray_SetBaseObject((PyArrayObject *)array, (PyObject *)self) < 0) {
        Py_DECREF(array);
        return NULL;
    }
    return array;
}

static PyObject *model_get_parameters(ModelObject *self, void *closure)
{
    return model_block_view(self, self->model->params, 1);
}

static PyObject *model_get_gradients(ModelObject *self, void *closure)
{
    return model_block_view(self, self->model->grads, 1);
}

static PyObject *model_get_config(ModelObject *self, void *closure)
{
    return model_config_to_dict(&self->model->config);
}

static PyObject *model_get_trainable(ModelObject *self, void *closure)
{
    return Py_BuildValue("(is)", self->model->n_trainable_blocks,
                         model_policy_names[self->model->head_policy]);
}

static PyObject *model_get_activation_floats(ModelObject *self, void *closure)
{
    return PyLong_FromSize_t(self->model->acts_capacity);
}

static PyObject *model_param_table(ModelObject *self, PyObject *unused)
{
    const rg_param_table *table = &self->model->table;
    PyObject *list = PyList_New(table->count);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < table->count; i++) {
        const rg_param_info *info = &table->tensors[i];
        PyObject *shape = info->ndim == 2 ? Py_BuildValue("(LL)", (long long)info->shape[0], (long long)info->shape[1])
                                          : Py_BuildValue("(L)", (long long)info->shape[0]);
        PyObject *entry = shape ? Py_BuildValue("{s:s,s:n,s:n,s:N,s:i,s:O,s:O}", "name", info->name,
                                                "offset", (Py_ssize_t)info->offset, "numel", (Py_ssize_t)info->numel,
                                                "shape", shape, "layer", info->layer,
                                                "decay", info->decay ? Py_True : Py_False,
                                                "trainable", info->trainable ? Py_True : Py_False)
                                : NULL;
        if (entry == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, entry);
    }
    return list;
}

/* An int32 array of exactly `ndim` dims, or NULL with an exception naming it. */
static PyArrayObject *model_int_array(PyObject *self, PyObject *obj, int ndim, const char *name)
{
    if (PyArray_Check(obj) && PyArray_TYPE((PyArrayObject *)obj) != NPY_INT32) {
        PyErr_Format(PyExc_TypeError, "%s: expected an int32 array, got %S", name,
                     (PyObject *)PyArray_DESCR((PyArrayObject *)obj));
        return NULL;
    }
    return rg_array_in(obj, NPY_INT32, ndim, name);
}

/* After RG_ERR_LABEL_RANGE: says which array held the out-of-range id. */
static void model_name_range_error(PyObject *self, PyArrayObject *tokens, PyArrayObject *types)
{
    const rg_model_config *c = &((ModelObject *)self)->model->config;
    const char *which = "targets";
    long limit = c->head == RG_HEAD_LM ? c->vocab_size : c->num_labels;
    const int32_t *ids = PyArray_DATA(tokens);
    for (npy_intp i = 0; i < PyArray_SIZE(tokens); i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size) {
            which = "tokens";
            limit = c->vocab_size;
            break;
        }
    if (types != NULL && strcmp(which, "targets") == 0) {
        ids = PyArray_DATA(types);
        for (npy_intp i = 0; i < PyArray_SIZE(types); i++)
            if (ids[i] < 0 || ids[i] >= c->type_vocab_size) {
                which = "token_types";
                limit = c->type_vocab_size;
                break;
            }
    }
    char message[160];
    PyOS_snprintf(message, sizeof(message), "forward: %s hold an id outside [0, %ld)%s", which, limit,
                  strcmp(which, "targets") == 0 ? " (negative targets are ignored)" : "");
    model_raise_message(self, RG_ERR_LABEL_RANGE, message);
}

static PyObject *model_forward(ModelObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"tokens", "attention_mask", "targets", "token_types", "train", "seed", NULL};
    PyObject *tokens_obj, *mask_obj = Py_None, *targets_obj = Py_None, *types_obj = Py_None;
    int train = 0;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOOpK:forward", keywords, &tokens_obj, &mask_obj,
                                     &targets_obj, &types_obj, &train, &seed))
        return NULL;
    const rg_model_config *c = &self->model->config;
    PyArrayObject *tokens = NULL, *mask = NULL, *targets = NULL, *types = NULL;
    PyObject *result = NULL;
    if (!(tokens = model_int_array((PyObject *)self, tokens_obj, 2, "tokens")))
        goto done;
    const npy_intp B = PyArray_DIM(tokens, 0), T = PyArray_DIM(tokens, 1);
    if (mask_obj != Py_None && !(mask = model_int_array((PyObject *)self, mask_obj, 2, "attention_mask")))
        goto done;
    if (types_obj != Py_None && !(types = model_int_array((PyObject *)self, types_obj, 2, "token_types")))
        goto done;
    const int classifier = c->head != RG_HEAD_LM;
    if (targets_obj != Py_None && !(targets = model_int_array((PyObject *)self, targets_obj, classifier ? 1 : 2, "targets")))
        goto done;
    if ((mask && (PyArray_DIM(mask, 0) != B || PyArray_DIM(mask, 1) != T)) ||
        (types && (PyArray_DIM(types, 0) != B || PyArray_DIM(types, 1) != T)) ||
        (targets && (PyArray_DIM(targets, 0) != B || (!classifier && PyArray_DIM(targets, 1) != T)))) {
        model_raise_message((PyObject *)self, RG_ERR_SHAPE,
                            classifier ? "forward: attention_mask and token_types must be (B, T) like tokens, targets (B,)"
                                       : "forward: attention_mask, token_types and targets must be (B, T) like tokens");
        goto done;
    }
    if (B > INT32_MAX || T > c->n_positions) {
        char message[128];
        PyOS_snprintf(message, sizeof(message), "forward: %ld tokens per row, the model takes at most %d",
                      (long)T, c->n_positions);
        model_raise_message((PyObject *)self, RG_ERR_SHAPE, message);
        goto done;
    }
    if (model_enter(self) < 0)
        goto done;
    float loss = 0.0f;
    rg_status status;
    interruptible_begin();
    Py_BEGIN_ALLOW_THREADS
    status = rg_model_forward(self->model, PyArray_DATA(tokens), mask ? PyArray_DATA(mask) : NULL,
                              types ? PyArray_DATA(types) : NULL, targets ? PyArray_DATA(targets) : NULL,
                              (int)B, (int)T, train, (uint64_t)seed, &loss);
    Py_END_ALLOW_THREADS
    interruptible_end();
    self->busy = 0;
    if (status == RG_ERR_LABEL_RANGE) {
        model_name_range_error((PyObject *)self, tokens, types);
        goto done;
    }
    if (status != RG_OK) {
        rg_raise(model_state((PyObject *)self), status, "forward");
        goto done;
    }
    if (targets != NULL) {
        result = PyFloat_FromDouble(loss);
    } else {
        int rows, cols;
        const float *logits = rg_model_logits(self->model, &rows, &cols);
        npy_intp dims[3] = {B, T, cols};
        if (classifier)
            dims[1] = cols;
        result = PyArray_SimpleNew(classifier ? 2 : 3, dims, NPY_FLOAT32);
        if (result)
            memcpy(PyArray_DATA((PyArrayObject *)result), logits, (size_t)rows * cols * sizeof(float));
    }
done:
    Py_XDECREF(tokens);
    Py_XDECREF(mask);
    Py_XDECREF(types);
    Py_XDECREF(targets);
    return result;
}

static PyObject *model_logits(ModelObject *self, PyObject *unused)
{
    int rows, cols;
    const float *logits = rg_model_logits(self->model, &rows, &cols);
    if (logits == NULL)
        return model_raise_message((PyObject *)self, RG_ERR_STATE,
                                   "logits: none kept (no forward yet, a backward consumed them, or a language-model "
                                   "forward with targets ran its head only on the counted positions)");
    const rg_model_config *c = &self->model->config;
    npy_intp dims[3] = {self->model->B, self->model->T, cols};
    if (c->head != RG_HEAD_LM)
        dims[1] = cols;
    PyObject *result = PyArray_SimpleNew(c->head != RG_HEAD_LM ? 2 : 3, dims, NPY_FLOAT32);
    if (result)
        memcpy(PyArray_DATA((PyArrayObject *)result), logits, (size_t)rows * cols * sizeof(float));
    return result;
}

static PyObject *model_backward(ModelObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"loss_scale", NULL};
    float loss_scale = 1.0f;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|f:backward", keywords, &loss_scale))
        return NULL;
    if (model_enter(self) < 0)
        return NULL;
    rg_status status;
    interruptible_begin();
    Py_BEGIN_ALLOW_THREADS
    status = rg_model_backward(self->model, loss_scale);
    Py_END_ALLOW_THREADS
    interruptible_end();
    self->busy = 0;
    if (status == RG_ERR_STATE)
        return model_raise_message((PyObject *)self, status,
                                   "backward: needs a forward pass with targets first (one backward per forward, "
                                   "and set_trainable must not be called in between)");
    if (status != RG_OK)
        return rg_raise(model_state((PyObject *)self), status, "backward");
    Py_RETURN_NONE;
}

static PyObject *model_set_trainable(ModelObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"n_trainable_blocks", "head_policy", NULL};
    int k;
    const char *policy_name = "train";
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|s:set_trainable", keywords, &k, &policy_name))
        return NULL;
    int policy = model_choice_index(model_policy_names, policy_name);
    if (policy < 0)
        return model_raise_message((PyObject *)self, RG_ERR_INVALID_ARG,
                                   "set_trainable: head_policy must be 'frozen', 'train' or 'untie'");
    if (model_enter(self) < 0)
        return NULL;
    rg_status status = rg_model_set_trainable(self->model, k, (rg_head_policy)policy);
    self->busy = 0;
    if (status == RG_ERR_UNSUPPORTED)
        return model_raise_message((PyObject *)self, status, "set_trainable: 'untie' needs a language-model head");
    if (status != RG_OK)
        return rg_raise(model_state((PyObject *)self), status, "set_trainable");
    Py_RETURN_NONE;
}

static PyObject *model_zero_grad(ModelObject *self, PyObject *unused)
{
    if (model_enter(self) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rg_model_zero_grad(self->model);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    Py_RETURN_NONE;
}

static PyObject *model_reset_cache(ModelObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"batch_size", "max_length", NULL};
    int B, max_T;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ii:reset_cache", keywords, &B, &max_T))
        return NULL;
    if (model_enter(self) < 0)
        return NULL;
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_model_cache_reset(self->model, B, max_T);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (status == RG_ERR_SHAPE) {
        char message[128];
        PyOS_snprintf(message, sizeof(message), "reset_cache: max_length %d exceeds the model's %d positions",
                      max_T, self->model->config.n_positions);
        return model_raise_message((PyObject *)self, status, message);
    }
    if (status == RG_ERR_UNSUPPORTED)
        return model_raise_message((PyObject *)self, status, "reset_cache: only causal language models generate");
    if (status != RG_OK)
        return rg_raise(model_state((PyObject *)self), status, "reset_cache");
    Py_RETURN_NONE;
}

/* Appends (B, T) tokens to the cache and returns the last column's logits (B, V). */
static PyObject *model_cached_step(ModelObject *self, PyArrayObject *tokens, PyArrayObject *mask, const char *what)
{
    int B, max_T, filled;
    rg_model_cache_info(self->model, &B, &max_T, &filled);
    if (B == 0)
        return model_raise_message((PyObject *)self, RG_ERR_STATE, "generation: call reset_cache(batch_size, max_length) first");
    const npy_intp T = PyArray_NDIM(tokens) == 2 ? PyArray_DIM(tokens, 1) : 1;
    if (PyArray_DIM(tokens, 0) != B || (mask && (PyArray_DIM(mask, 0) != B || PyArray_DIM(mask, 1) != T))) {
        char message[160];
        PyOS_snprintf(message, sizeof(message), "%s: the cache holds %d rows; tokens (and attention_mask) must have %d rows",
                      what, B, B);
        return model_raise_message((PyObject *)self, RG_ERR_SHAPE, message);
    }
    if (filled + T > max_T) {
        char message[160];
        PyOS_snprintf(message, sizeof(message), "%s: the cache is full (%d of %d columns used, %ld more asked)",
                      what, filled, max_T, (long)T);
        return model_raise_message((PyObject *)self, RG_ERR_SHAPE, message);
    }
    npy_intp dims[2] = {B, self->model->config.vocab_size};
    PyObject *logits = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (logits == NULL || model_enter(self) < 0) {
        Py_XDECREF(logits);
        return NULL;
    }
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_model_cache_forward(self->model, PyArray_DATA(tokens), mask ? PyArray_DATA(mask) : NULL, (int)T,
                                    PyArray_DATA((PyArrayObject *)logits));
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (status != RG_OK) {
        Py_DECREF(logits);
        char message[160];
        PyOS_snprintf(message, sizeof(message), "%s: %s", what,
                      status == RG_ERR_LABEL_RANGE ? "a token id is outside the vocabulary"
                      : status == RG_ERR_SHAPE ? "a position beyond the model's n_positions"
                                               : rg_status_string(status));
        if (status == RG_ERR_NOMEM)
            return PyErr_NoMemory();
        return model_raise_message((PyObject *)self, status, message);
    }
    return logits;
}

static PyObject *model_forward_logits(ModelObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"tokens", "attention_mask", NULL};
    PyObject *tokens_obj, *mask_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:forward_logits", keywords, &tokens_obj, &mask_obj))
        return NULL;
    PyArrayObject *tokens = NULL, *mask = NULL;
    PyObject *result = NULL;
    if ((tokens = model_int_array((PyObject *)self, tokens_obj, 2, "tokens")) &&
        (mask_obj == Py_None || (mask = model_int_array((PyObject *)self, mask_obj, 2, "attention_mask"))))
        result = model_cached_step(self, tokens, mask, "forward_logits");
    Py_XDECREF(tokens);
    Py_XDECREF(mask);
    return result;
}

static PyObject *model_decode_step(ModelObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"tokens", NULL};
    PyObject *tokens_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:decode_step", keywords, &tokens_obj))
        return NULL;
    PyArrayObject *tokens = model_int_array((PyObject *)self, tokens_obj, 1, "tokens");
    if (tokens == NULL)
        return NULL;
    PyObject *result = model_cached_step(self, tokens, NULL, "decode_step");
    Py_DECREF(tokens);
    return result;
}

static PyObject *model_cache_info(ModelObject *self, PyObject *unused)
{
    int B, max_T, filled;
    rg_model_cache_info(self->model, &B, &max_T, &filled);
    return Py_BuildValue("{s:i,s:i,s:i}", "batch_size", B, "max_length", max_T, "length", filled);
}

static PyMethodDef model_methods[] = {
    {"param_table", (PyCFunction)model_param_table, METH_NOARGS,
     "param_table() -> list of dicts (name, offset, numel, shape, layer, decay, trainable)."},
    {"forward", (PyCFunction)(void (*)(void))model_forward, METH_VARARGS | METH_KEYWORDS,
     "forward(tokens, attention_mask=None, targets=None, token_types=None, train=False, seed=0)\n"
     "-> mean loss (float) when targets are given, else logits: LM (B, T, V), classifier (B, K).\n"
     "int32 arrays; LM targets are HF labels (B, T), shifted inside, -100 ignored."},
    {"logits", (PyCFunction)model_logits, METH_NOARGS,
     "logits() -> a copy of the last forward's logits (invalid after backward)."},
    {"backward", (PyCFunction)(void (*)(void))model_backward, METH_VARARGS | METH_KEYWORDS,
     "backward(loss_scale=1.0): adds loss_scale * dloss/dparam into .gradients."},
    {"set_trainable", (PyCFunction)(void (*)(void))model_set_trainable, METH_VARARGS | METH_KEYWORDS,
     "set_trainable(n_trainable_blocks, head_policy='train'): train the last k blocks, the final norm and\n"
     "the head ('frozen', 'train' or 'untie'); k < 0 trains everything."},
    {"zero_grad", (PyCFunction)model_zero_grad, METH_NOARGS, "zero_grad(): zero the gradient block."},
    {"reset_cache", (PyCFunction)(void (*)(void))model_reset_cache, METH_VARARGS | METH_KEYWORDS,
     "reset_cache(batch_size, max_length): an empty key/value cache for generation."},
    {"forward_logits", (PyCFunction)(void (*)(void))model_forward_logits, METH_VARARGS | METH_KEYWORDS,
     "forward_logits(tokens (B, T), attention_mask=None) -> (B, V) logits of the last column; appends\n"
     "the tokens to the cache. Prompts are LEFT-padded (mask 0 on the left)."},
    {"decode_step", (PyCFunction)(void (*)(void))model_decode_step, METH_VARARGS | METH_KEYWORDS,
     "decode_step(tokens (B,)) -> (B, V): appends one token per row to the cache."},
    {"cache_info", (PyCFunction)model_cache_info, METH_NOARGS, "cache_info() -> dict(batch_size, max_length, length)."},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef model_getset[] = {
    {"parameters", (getter)model_get_parameters, NULL, "Flat float32 view of every parameter (table order).", NULL},
    {"gradients", (getter)model_get_gradients, NULL, "Flat float32 view of the gradient block.", NULL},
    {"config", (getter)model_get_config, NULL, "The configuration as a dict (after untying: tie_word_embeddings 0).", NULL},
    {"trainable", (getter)model_get_trainable, NULL, "(n_trainable_blocks, head_policy) of the last set_trainable.", NULL},
    {"activation_floats", (getter)model_get_activation_floats, NULL,
     "Floats in the activation block (it grows only when a pass needs more).", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot model_type_slots[] = {
    {Py_tp_new, model_new},
    {Py_tp_dealloc, model_dealloc},
    {Py_tp_methods, model_methods},
    {Py_tp_getset, model_getset},
    {Py_tp_doc, "Model(config: dict): the generic transformer of the C core (see reviewgen.models)."},
    {0, NULL}
};

static PyType_Spec model_type_spec = {
    .name = "reviewgen._core.Model",
    .basicsize = sizeof(ModelObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = model_type_slots,
};

static int model_add_type(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &model_type_spec, NULL);
    if (type == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(module, "Model", type);
    Py_DECREF(type);
    return rc;
}

/* ===================================================================== */
/* 5. trainer                                                             */
/* ===================================================================== */

#include "rg_optim.h"
#include "rg_sample.h"

/* _core.AdamW: the optimizer over a model's flat parameter and gradient
 * blocks. It holds references to both arrays, so their owner stays alive
 * as long as the optimizer. */
typedef struct {
    PyObject_HEAD
    rg_adamw opt;
    int initialized;
    int busy;                   /* a step is running with the GIL released */
    PyArrayObject *parameters;  /* (total,) float32, updated in place */
    PyArrayObject *gradients;   /* (total,) float32, zeroed where consumed */
} AdamWObject;

/* Looks `key` up in a table entry: 1 found (new reference in *value), 0 absent, -1 error. */
static int table_entry_field(PyObject *entry, const char *key, PyObject **value)
{
    *value = PyMapping_GetItemString(entry, key);
    if (*value != NULL)
        return 1;
    if (PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* An integer field >= 0 of a table entry; `required` decides whether absence is an error. */
static int table_entry_size(PyObject *entry, Py_ssize_t index, const char *key, int required,
                            long long fallback, long long *out)
{
    PyObject *value;
    int found = table_entry_field(entry, key, &value);
    if (found < 0)
        return -1;
    if (!found) {
        if (required) {
            PyErr_Format(PyExc_ValueError, "table[%zd]: missing '%s'", index, key);
            return -1;
        }
        *out = fallback;
        return 0;
    }
    long long x = PyLong_AsLongLong(value);
    Py_DECREF(value);
    if (x == -1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "table[%zd]: '%s' must be an integer", index, key);
        return -1;
    }
    if (x < 0) {
        PyErr_Format(PyExc_ValueError, "table[%zd]: '%s' must be >= 0, got %lld", index, key, x);
        return -1;
    }
    *out = x;
    return 0;
}

static int table_entry_flag(PyObject *entry, const char *key, int fallback, uint8_t *out)
{
    PyObject *value;
    int found = table_entry_field(entry, key, &value);
    if (found < 0)
        return -1;
    if (!found) {
        *out = (uint8_t)fallback;
        return 0;
    }
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    if (truth < 0)
        return -1;
    *out = (uint8_t)truth;
    return 0;
}

/* Number of elements of a table entry: its 'numel', else the product of its 'shape'. */
static int table_entry_numel(PyObject *entry, Py_ssize_t index, long long *numel)
{
    PyObject *shape;
    int found = table_entry_field(entry, "numel", &shape);
    if (found < 0)
        return -1;
    if (found) {
        Py_DECREF(shape);
        return table_entry_size(entry, index, "numel", 1, 0, numel);
    }
    found = table_entry_field(entry, "shape", &shape);
    if (found <= 0) {
        if (found == 0)
            PyErr_Format(PyExc_ValueError, "table[%zd]: needs 'numel' or 'shape'", index);
        return -1;
    }
    PyObject *dims = PySequence_Fast(shape, "shape must be a sequence of integers");
    Py_DECREF(shape);
    if (dims == NULL)
        return -1;
    long long product = 1;
    for (Py_ssize_t d = 0; d < PySequence_Fast_GET_SIZE(dims); d++) {
        long long dim = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(dims, d));
        if (dim == -1 && PyErr_Occurred()) {
            Py_DECREF(dims);
            PyErr_Format(PyExc_TypeError, "table[%zd]: shape must hold integers", index);
            return -1;
        }
        if (dim < 0 || (dim > 0 && product > LLONG_MAX / dim)) {
            Py_DECREF(dims);
            PyErr_Format(PyExc_ValueError, "table[%zd]: invalid shape dimension %lld", index, dim);
            return -1;
        }
        product *= dim;
    }
    Py_DECREF(dims);
    *numel = product;
    return 0;
}

/* Builds an rg_param_table from a list of dicts, checking every entry lies inside
 * [0, total). On success table->tensors is PyMem_Malloc'ed (caller frees). */
static int param_table_from_python(PyObject *table_obj, size_t total, rg_param_table *table)
{
    PyObject *entries = PySequence_Fast(table_obj, "table must be a sequence of dicts");
    if (entries == NULL)
        return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(entries);
    if (count > INT_MAX) {
        Py_DECREF(entries);
        PyErr_SetString(PyExc_ValueError, "table: too many entries");
        return -1;
    }
    rg_param_info *tensors = PyMem_Calloc(count > 0 ? (size_t)count : 1, sizeof(rg_param_info));
    if (tensors == NULL) {
        Py_DECREF(entries);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *entry = PySequence_Fast_GET_ITEM(entries, i);
        rg_param_info *t = &tensors[i];
        if (!PyMapping_Check(entry)) {
            PyErr_Format(PyExc_TypeError, "table[%zd]: expected a dict, got %s", i,
                         Py_TYPE(entry)->tp_name);
            goto error;
        }
        PyObject *name;
        int found = table_entry_field(entry, "name", &name);
        if (found < 0)
            goto error;
        if (found) {
            const char *utf8 = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
            if (utf8)
                PyOS_snprintf(t->name, sizeof(t->name), "%s", utf8);
            Py_DECREF(name);
            PyErr_Clear();
        }
        long long offset, numel;
        if (table_entry_size(entry, i, "offset", 1, 0, &offset) < 0 ||
            table_entry_numel(entry, i, &numel) < 0 ||
            table_entry_flag(entry, "decay", 1, &t->decay) < 0 ||
            table_entry_flag(entry, "trainable", 1, &t->trainable) < 0)
            goto error;
        if ((unsigned long long)offset > total || (unsigned long long)numel > total - (size_t)offset) {
            PyErr_Format(PyExc_ValueError,
                         "table[%zd] (%s): elements [%lld, %lld) lie past the end of the "
                         "parameter block of %zu elements", i, t->name[0] ? t->name : "unnamed",
                         offset, offset + numel, total);
            goto error;
        }
        t->offset = (size_t)offset;
        t->numel = (size_t)numel;
        t->ndim = 1;
        t->shape[0] = numel;
        t->layer = 0;
    }
    Py_DECREF(entries);
    table->tensors = tensors;
    table->count = (int)count;
    table->total = total;
    return 0;
error:
    Py_DECREF(entries);
    PyMem_Free(tensors);
    return -1;
}

static int parse_schedule(const char *name, rg_schedule_kind *kind)
{
    if (strcmp(name, "linear") == 0)
        *kind = RG_SCHEDULE_LINEAR;
    else if (strcmp(name, "constant") == 0)
        *kind = RG_SCHEDULE_CONSTANT;
    else if (strcmp(name, "constant_with_warmup") == 0)
        *kind = RG_SCHEDULE_CONSTANT_WITH_WARMUP;
    else {
        PyErr_Format(PyExc_ValueError,
                     "schedule: unknown '%s' (expected 'linear', 'constant' or 'constant_with_warmup')",
                     name);
        return -1;
    }
    return 0;
}

static int adamw_init(AdamWObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"parameters", "gradients", "table", "lr", "betas", "eps",
                               "weight_decay", "max_grad_norm", "warmup_ratio", "total_steps",
                               "schedule", NULL};
    PyObject *params_obj, *grads_obj, *table_obj;
    rg_adamw_config config = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                              .weight_decay = 0.01, .max_grad_norm = 0.0, .warmup_ratio = 0.0,
                              .total_steps = 0, .schedule = RG_SCHEDULE_CONSTANT};
    long long total_steps = 0;
    const char *schedule = "constant";
    if (self->initialized) {
        PyErr_SetString(PyExc_RuntimeError, "AdamW: already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|d(dd)ddddLs:AdamW", keywords, &params_obj,
                                     &grads_obj, &table_obj, &config.lr, &config.beta1,
                                     &config.beta2, &config.eps, &config.weight_decay,
                                     &config.max_grad_norm, &config.warmup_ratio, &total_steps,
                                     &schedule))
        return -1;
    config.total_steps = total_steps;
    if (parse_schedule(schedule, &config.schedule) < 0)
        return -1;
    /* Report each hyperparameter by name rather than one generic status. */
    if (!(isfinite(config.lr) && config.lr >= 0.0)) {
        PyErr_SetString(PyExc_ValueError, "lr must be finite and >= 0");
        return -1;
    }
    if (!(config.beta1 >= 0.0 && config.beta1 < 1.0 && config.beta2 >= 0.0 && config.beta2 < 1.0)) {
        PyErr_SetString(PyExc_ValueError, "betas must both lie in [0, 1)");
        return -1;
    }
    if (!(isfinite(config.eps) && config.eps >= 0.0)) {
        PyErr_SetString(PyExc_ValueError, "eps must be finite and >= 0");
        return -1;
    }
    if (!(isfinite(config.weight_decay) && config.weight_decay >= 0.0)) {
        PyErr_SetString(PyExc_ValueError, "weight_decay must be finite and >= 0");
        return -1;
    }
    if (isnan(config.max_grad_norm)) {
        PyErr_SetString(PyExc_ValueError, "max_grad_norm must not be NaN (use 0 to disable clipping)");
        return -1;
    }
    if (!(config.warmup_ratio >= 0.0 && config.warmup_ratio <= 1.0)) {
        PyErr_SetString(PyExc_ValueError, "warmup_ratio must lie in [0, 1]");
        return -1;
    }
    if (total_steps < 0 || (config.schedule == RG_SCHEDULE_LINEAR && total_steps == 0)) {
        PyErr_SetString(PyExc_ValueError,
                        "total_steps must be >= 0, and > 0 for the linear schedule");
        return -1;
    }

    PyArrayObject *params = rg_array_out(params_obj, NPY_FLOAT32, "parameters");
    if (params == NULL)
        return -1;
    PyArrayObject *grads = rg_array_out(grads_obj, NPY_FLOAT32, "gradients");
    if (grads == NULL) {
        Py_DECREF(params);
        return -1;
    }
    if (PyArray_NDIM(params) != 1 || PyArray_NDIM(grads) != 1 ||
        PyArray_DIM(params, 0) != PyArray_DIM(grads, 0)) {
        PyErr_Format(PyExc_ValueError,
                     "parameters and gradients must be 1-D arrays of the same length "
                     "(got %d-D and %d-D)", PyArray_NDIM(params), PyArray_NDIM(grads));
        goto error;
    }
    if (PyArray_DATA(params) == PyArray_DATA(grads) && PyArray_DIM(params, 0) > 0) {
        PyErr_SetString(PyExc_ValueError, "parameters and gradients must be different arrays");
        goto error;
    }
    rg_param_table table = {0};
    if (param_table_from_python(table_obj, (size_t)PyArray_DIM(params, 0), &table) < 0)
        goto error;
    rg_status status = rg_adamw_init(&self->opt, &config, &table);
    PyMem_Free(table.tensors);
    if (status != RG_OK) {
        if (status == RG_ERR_SHAPE)
            PyErr_SetString(PyExc_ValueError, "table: two trainable tensors overlap");
        else
            rg_raise(state_of_type(Py_TYPE(self)), status, "AdamW");
        goto error;
    }
    self->parameters = params;
    self->gradients = grads;
    self->initialized = 1;
    return 0;
error:
    Py_DECREF(params);
    Py_DECREF(grads);
    return -1;
}

static int adamw_ready(AdamWObject *self)
{
    if (!self->initialized) {
        PyErr_SetString(PyExc_RuntimeError, "AdamW: not initialised");
        return 0;
    }
    if (self->busy) {
        core_state *state = state_of_type(Py_TYPE(self));
        PyErr_SetString(state ? state->status_error[RG_ERR_STATE] : PyExc_RuntimeError,
                        "AdamW: another thread is stepping this optimizer");
        return 0;
    }
    return 1;
}

static PyObject *adamw_step(AdamWObject *self, PyObject *unused)
{
    if (!adamw_ready(self))
        return NULL;
    double lr = 0.0, grad_norm = 0.0;
    rg_status status;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    status = rg_adamw_step(&self->opt, PyArray_DATA(self->parameters), PyArray_DATA(self->gradients),
                           &lr, &grad_norm);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (status != RG_OK)
        return rg_raise(state_of_type(Py_TYPE(self)), status,
                        "AdamW.step (gradients; parameters left unchanged)");
    return Py_BuildValue("{s:d,s:d,s:L}", "lr", lr, "grad_norm", grad_norm, "step",
                         (long long)self->opt.step);
}

static PyObject *adamw_grad_norm(AdamWObject *self, PyObject *unused)
{
    if (!adamw_ready(self))
        return NULL;
    double norm = 0.0;
    rg_status status;
    self->busy = 1; /* the norm's scratch belongs to the optimizer */
    Py_BEGIN_ALLOW_THREADS
    status = rg_adamw_grad_norm(&self->opt, PyArray_DATA(self->gradients), &norm);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (status != RG_OK)
        return rg_raise(state_of_type(Py_TYPE(self)), status, "AdamW.grad_norm");
    return PyFloat_FromDouble(norm);
}

static PyObject *adamw_lr_at(AdamWObject *self, PyObject *arg)
{
    if (!adamw_ready(self))
        return NULL;
    long long step = PyLong_AsLongLong(arg);
    if (step == -1 && PyErr_Occurred())
        return NULL;
    if (step < 0) {
        PyErr_SetString(PyExc_ValueError, "lr_at: step must be >= 0");
        return NULL;
    }
    return PyFloat_FromDouble(rg_adamw_lr_at(&self->opt, step));
}

/* A float32 copy of one moment block. */
static PyObject *moment_copy(const float *block, size_t numel)
{
    npy_intp n = (npy_intp)numel;
    PyArrayObject *array = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_FLOAT32);
    if (array != NULL && numel > 0)
        memcpy(PyArray_DATA(array), block, numel * sizeof(float));
    return (PyObject *)array;
}

static PyObject *adamw_state(AdamWObject *self, PyObject *unused)
{
    if (!adamw_ready(self))
        return NULL;
    PyObject *m = moment_copy(self->opt.m, self->opt.state_numel);
    PyObject *v = m ? moment_copy(self->opt.v, self->opt.state_numel) : NULL;
    PyObject *result = v ? Py_BuildValue("{s:L,s:O,s:O}", "step", (long long)self->opt.step, "m", m,
                                         "v", v)
                         : NULL;
    Py_XDECREF(m);
    Py_XDECREF(v);
    return result;
}

static PyObject *adamw_load_state(AdamWObject *self, PyObject *state_obj)
{
    if (!adamw_ready(self))
        return NULL;
    PyObject *step_obj = NULL, *m_obj = NULL, *v_obj = NULL;
    PyArrayObject *m = NULL, *v = NULL;
    PyObject *result = NULL;
    if (!PyMapping_Check(state_obj)) {
        PyErr_SetString(PyExc_TypeError, "load_state: expected a dict with 'step', 'm' and 'v'");
        return NULL;
    }
    if (!(step_obj = PyMapping_GetItemString(state_obj, "step")) ||
        !(m_obj = PyMapping_GetItemString(state_obj, "m")) ||
        !(v_obj = PyMapping_GetItemString(state_obj, "v"))) {
        if (PyErr_ExceptionMatches(PyExc_KeyError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_ValueError, "load_state: the state needs 'step', 'm' and 'v'");
        }
        goto done;
    }
    long long step = PyLong_AsLongLong(step_obj);
    if (step == -1 && PyErr_Occurred())
        goto done;
    if (step < 0) {
        PyErr_SetString(PyExc_ValueError, "load_state: step must be >= 0");
        goto done;
    }
    if (!(m = rg_array_in(m_obj, NPY_FLOAT32, 1, "m")) || !(v = rg_array_in(v_obj, NPY_FLOAT32, 1, "v")))
        goto done;
    if ((size_t)PyArray_DIM(m, 0) != self->opt.state_numel || (size_t)PyArray_DIM(v, 0) != self->opt.state_numel) {
        PyErr_Format(PyExc_ValueError,
                     "load_state: moments of %zd and %zd elements do not fit this optimizer's "
                     "%zu trainable elements (was the table or set_trainable different?)",
                     (Py_ssize_t)PyArray_DIM(m, 0), (Py_ssize_t)PyArray_DIM(v, 0),
                     self->opt.state_numel);
        goto done;
    }
    rg_status status = rg_adamw_load_state(&self->opt, step, PyArray_DATA(m), PyArray_DATA(v),
                                           self->opt.state_numel);
    if (status != RG_OK) {
        rg_raise(state_of_type(Py_TYPE(self)), status, "load_state (m and v must be finite, v >= 0)");
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(step_obj);
    Py_XDECREF(m_obj);
    Py_XDECREF(v_obj);
    Py_XDECREF(m);
    Py_XDECREF(v);
    return result;
}

static PyObject *adamw_get_step(AdamWObject *self, void *closure)
{
    return adamw_ready(self) ? PyLong_FromLongLong(self->opt.step) : NULL;
}

static PyObject *adamw_get_warmup_steps(AdamWObject *self, void *closure)
{
    return adamw_ready(self) ? PyLong_FromLongLong(self->opt.warmup_steps) : NULL;
}

static PyObject *adamw_get_total_steps(AdamWObject *self, void *closure)
{
    return adamw_ready(self) ? PyLong_FromLongLong(self->opt.config.total_steps) : NULL;
}

static PyObject *adamw_get_state_numel(AdamWObject *self, void *closure)
{
    return adamw_ready(self) ? PyLong_FromSize_t(self->opt.state_numel) : NULL;
}

static int adamw_traverse(AdamWObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->parameters);
    Py_VISIT(self->gradients);
    return 0;
}

static int adamw_clear(AdamWObject *self)
{
    Py_CLEAR(self->parameters);
    Py_CLEAR(self->gradients);
    return 0;
}

static void adamw_dealloc(AdamWObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    adamw_clear(self);
    rg_adamw_free(&self->opt);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef adamw_methods[] = {
    {"step", (PyCFunction)adamw_step, METH_NOARGS,
     "step() -> dict(lr, grad_norm, step): clip, update the trainable parameters with the "
     "scheduled lr and zero the gradients used. grad_norm is the norm before clipping. "
     "Raises NonFiniteError (parameters untouched) on a NaN or inf gradient."},
    {"grad_norm", (PyCFunction)adamw_grad_norm, METH_NOARGS,
     "grad_norm() -> global L2 norm of the trainable gradients (no update)."},
    {"lr_at", (PyCFunction)adamw_lr_at, METH_O,
     "lr_at(step) -> the learning rate used by the update with 0-based index step."},
    {"state", (PyCFunction)adamw_state, METH_NOARGS,
     "state() -> dict(step, m, v): copies of the step count and the moment blocks "
     "(trainable elements only, in table order)."},
    {"load_state", (PyCFunction)adamw_load_state, METH_O,
     "load_state(state): restore what state() returned."},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef adamw_getset[] = {
    {"step_count", (getter)adamw_get_step, NULL, "Updates applied so far.", NULL},
    {"warmup_steps", (getter)adamw_get_warmup_steps, NULL, "ceil(warmup_ratio * total_steps).", NULL},
    {"total_steps", (getter)adamw_get_total_steps, NULL, "Updates the schedule spans.", NULL},
    {"state_numel", (getter)adamw_get_state_numel, NULL,
     "Elements in each moment block (the trainable elements).", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot adamw_slots[] = {
    {Py_tp_doc, "AdamW(parameters, gradients, table, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, "
                "weight_decay=0.01, max_grad_norm=0.0, warmup_ratio=0.0, total_steps=0, "
                "schedule='constant')\n\n"
                "torch.optim.AdamW with clip_grad_norm_ and the Hugging Face schedules over a "
                "flat parameter block. table: list of dicts with 'offset', 'numel' or 'shape', "
                "'decay' (default True) and 'trainable' (default True); only trainable tensors "
                "are updated and get moment buffers."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, adamw_init},
    {Py_tp_dealloc, adamw_dealloc},
    {Py_tp_traverse, adamw_traverse},
    {Py_tp_clear, adamw_clear},
    {Py_tp_methods, adamw_methods},
    {Py_tp_getset, adamw_getset},
    {0, NULL}
};

static PyType_Spec adamw_spec = {
    .name = "reviewgen._core.AdamW",
    .basicsize = sizeof(AdamWObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = adamw_slots,
};

static PyObject *core_sample(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"logits", "temperature", "top_k", "top_p", "seed", "step",
                               "do_sample", "row_offset", NULL};
    PyObject *logits_obj, *seed_obj = NULL;
    float temperature = 1.0f, top_p = 1.0f;
    int top_k = 0, do_sample = 1;
    long long step = 0, row_offset = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|fifOLpL:sample", keywords, &logits_obj,
                                     &temperature, &top_k, &top_p, &seed_obj, &step, &do_sample,
                                     &row_offset))
        return NULL;
    if (isnan(temperature) || isinf(temperature) || temperature < 0.0f) {
        PyErr_SetString(PyExc_ValueError, "sample: temperature must be finite and >= 0 (0 is greedy)");
        return NULL;
    }
    if (top_k < 0) {
        PyErr_SetString(PyExc_ValueError, "sample: top_k must be >= 0 (0 disables it)");
        return NULL;
    }
    if (!(top_p > 0.0f && top_p <= 1.0f)) {
        PyErr_SetString(PyExc_ValueError, "sample: top_p must lie in (0, 1] (1 disables it)");
        return NULL;
    }
    if (step < 0 || row_offset < 0) {
        PyErr_SetString(PyExc_ValueError, "sample: step and row_offset must be >= 0");
        return NULL;
    }
    uint64_t seed = 0;
    if (seed_obj != NULL && seed_obj != Py_None) {
        if (!PyLong_Check(seed_obj)) {
            PyErr_SetString(PyExc_TypeError, "sample: seed must be an integer");
            return NULL;
        }
        seed = (uint64_t)PyLong_AsUnsignedLongLongMask(seed_obj); /* any int, taken mod 2^64 */
        if (PyErr_Occurred())
            return NULL;
    }
    PyArrayObject *logits = rg_array_in(logits_obj, NPY_FLOAT32, 2, "logits");
    if (logits == NULL)
        return NULL;
    npy_intp B = PyArray_DIM(logits, 0), V = PyArray_DIM(logits, 1);
    if (V == 0 || V > INT32_MAX || B > INT_MAX) {
        Py_DECREF(logits);
        PyErr_Format(PyExc_ValueError, "logits: expected shape (B, V) with 0 < V < 2^31, got (%zd, %zd)",
                     (Py_ssize_t)B, (Py_ssize_t)V);
        return NULL;
    }
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(1, &B, NPY_INT32);
    if (out == NULL) {
        Py_DECREF(logits);
        return NULL;
    }
    rg_sample_config config = {.do_sample = do_sample, .temperature = temperature, .top_k = top_k,
                               .top_p = top_p, .seed = seed, .step = (uint64_t)step,
                               .row_offset = (uint64_t)row_offset};
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_sample_logits(PyArray_DATA(logits), (int)B, (int)V, &config, PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    Py_DECREF(logits);
    if (status != RG_OK) {
        Py_DECREF(out);
        return rg_raise(state_of_module(module), status,
                        "sample (logits: NaN, +inf or a row of only -inf)");
    }
    return (PyObject *)out;
}

static int trainer_add_types(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &adamw_spec, NULL);
    if (type == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(module, "AdamW", type);
    Py_DECREF(type);
    return rc;
}


/* ===================================================================== */
/* 6. module definition                                                   */
/* ===================================================================== */

static PyMethodDef core_methods[] = {
    {"cuda_compiled", core_cuda_compiled, METH_NOARGS, "True when this build compiled the CUDA sources."},
    {"cuda_device_count", core_cuda_device_count, METH_NOARGS, "Number of usable CUDA devices."},
    {"cuda_axpy", core_cuda_axpy, METH_VARARGS, "cuda_axpy(a, x, y) -> a*x+y computed on the GPU (toolchain check)."},
    {"cublaslt_probe", core_cublaslt_probe, METH_NOARGS, "Create and free a cuBLASLt handle; raises CudaError on failure."},
    /* -- metrics methods -- */
    {"metrics_confusion", (PyCFunction)(void (*)(void))core_metrics_confusion, METH_VARARGS | METH_KEYWORDS,
     "metrics_confusion(y_true, y_pred, labels, near=False) -> (K, K) int64 counts, rows true."},
    {"metrics_classification", (PyCFunction)(void (*)(void))core_metrics_classification, METH_VARARGS | METH_KEYWORDS,
     "metrics_classification(y_true, y_pred, labels, near=False) -> dict of accuracy, per-class and averaged figures."},
    {"metrics_perplexity", (PyCFunction)(void (*)(void))core_metrics_perplexity, METH_VARARGS | METH_KEYWORDS,
     "metrics_perplexity(nll, weights=None) -> exp(weighted mean of float32 per-token nll)."},
    {"metrics_perplexity_from_sum", core_metrics_perplexity_from_sum, METH_VARARGS,
     "metrics_perplexity_from_sum(sum_nll, n_tokens) -> exp(sum_nll / n_tokens)."},
    /* -- model methods -- */
    /* -- trainer methods -- */
    {"sample", (PyCFunction)(void (*)(void))core_sample, METH_VARARGS | METH_KEYWORDS,
     "sample(logits, temperature=1.0, top_k=0, top_p=1.0, seed=0, step=0, do_sample=True, "
     "row_offset=0) -> int32 (B,): one token per row of logits (B, V), Hugging Face "
     "temperature/top-k/top-p semantics; greedy when do_sample is False, temperature == 0 or "
     "top_k == 1; row b's draw is keyed by (seed, step, row_offset + b)."},
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
    if (model_add_type(module) < 0)
        return -1;
    if (trainer_add_types(module) < 0)
        return -1;
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
