/*
 * metrics.c - classification metrics (exact and "near") and perplexity of
 * reviewgen._core, over int32 label arrays and float32 losses.
 */
#include "binding.h"

#include "rg_metrics.h"

/* A clear exception for a failed classification call: which argument, which element. */
static void metrics_raise_classification(core_state *state, rg_status status, const char *function,
                                         PyArrayObject *y_true, PyArrayObject *y_pred,
                                         PyArrayObject *labels)
{
    npy_intp n_true = PyArray_DIM(y_true, 0), n_pred = PyArray_DIM(y_pred, 0);
    npy_intp K = PyArray_DIM(labels, 0);
    switch (status) {
    case RG_ERR_SHAPE:
        binding_raise(state, status, "%s: y_true and y_pred have different lengths (%zd and %zd)", function,
                     (Py_ssize_t)n_true, (Py_ssize_t)n_pred);
        return;
    case RG_ERR_EMPTY:
        binding_raise(state, status, "%s: %s is empty", function, K == 0 ? "labels" : "y_true (and y_pred)");
        return;
    case RG_ERR_INVALID_ARG:
        binding_raise(state, status, "%s: labels must be strictly increasing (sorted, without duplicates)",
                     function);
        return;
    case RG_ERR_LABEL_RANGE: {
        const int32_t *set = PyArray_DATA(labels);
        const int32_t *arrays[2] = {PyArray_DATA(y_true), PyArray_DATA(y_pred)};
        const char *names[2] = {"y_true", "y_pred"};
        for (int a = 0; a < 2; a++) {
            for (npy_intp i = 0; i < n_true; i++) {
                if (rg_metrics_label_index(set, K, arrays[a][i]) < 0) {
                    binding_raise(state, status, "%s: %s[%zd] = %d is not one of the %zd declared labels "
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
    binding_raise_status(state, status, function);
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
        metrics_raise_classification(binding_state_of_module(module), status, "confusion_matrix", y_true,
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
        metrics_raise_classification(binding_state_of_module(module), status, "classification_report",
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
    core_state *state = binding_state_of_module(module);
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
                binding_raise(state, RG_ERR_SHAPE, "perplexity: mask has shape %R but nll has shape %R", mask_shape,
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
        binding_raise(state, status, "perplexity: nll%s holds NaN or infinity where it counts, or the mean nll "
                     "is too large for exp()", weights ? " or mask" : "");
        goto error;
    case RG_ERR_EMPTY:
        binding_raise(state, status, "perplexity: %s",
                     PyArray_SIZE(nll) == 0 ? "nll is empty" : "mask selects no token");
        goto error;
    case RG_ERR_INVALID_ARG:
        binding_raise(state, status, "perplexity: mask has a negative weight");
        goto error;
    default:
        binding_raise_status(state, status, "perplexity");
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
    core_state *state = binding_state_of_module(module);
    switch (status) {
    case RG_OK:
        return PyFloat_FromDouble(perplexity);
    case RG_ERR_NONFINITE:
        return binding_raise(state, status, "perplexity_from_sum: sum_nll=%R and n_tokens=%R must be finite, "
                            "and their ratio at most ~709 (exp overflows)",
                            PyTuple_GET_ITEM(args, 0), PyTuple_GET_ITEM(args, 1));
    case RG_ERR_EMPTY:
        return binding_raise(state, status, "perplexity_from_sum: n_tokens is 0");
    case RG_ERR_INVALID_ARG:
        return binding_raise(state, status, "perplexity_from_sum: n_tokens must not be negative (got %R)",
                            PyTuple_GET_ITEM(args, 1));
    default:
        return binding_raise_status(state, status, "perplexity_from_sum");
    }
}

static PyMethodDef metrics_methods[] = {
    {"metrics_confusion", (PyCFunction)(void (*)(void))core_metrics_confusion, METH_VARARGS | METH_KEYWORDS,
     "metrics_confusion(y_true, y_pred, labels, near=False) -> (K, K) int64 counts, rows true."},
    {"metrics_classification", (PyCFunction)(void (*)(void))core_metrics_classification, METH_VARARGS | METH_KEYWORDS,
     "metrics_classification(y_true, y_pred, labels, near=False) -> dict of accuracy, per-class and averaged figures."},
    {"metrics_perplexity", (PyCFunction)(void (*)(void))core_metrics_perplexity, METH_VARARGS | METH_KEYWORDS,
     "metrics_perplexity(nll, weights=None) -> exp(weighted mean of float32 per-token nll)."},
    {"metrics_perplexity_from_sum", core_metrics_perplexity_from_sum, METH_VARARGS,
     "metrics_perplexity_from_sum(sum_nll, n_tokens) -> exp(sum_nll / n_tokens)."},
    {NULL, NULL, 0, NULL}
};

int binding_add_metrics(PyObject *module)
{
    return PyModule_AddFunctions(module, metrics_methods);
}
