/*
 * generate.c - decoding in reviewgen._core: the Model's key/value-cache
 * methods (listed in model.c's method table) and the sampler over a batch of
 * logits (Hugging Face temperature / top-k / top-p semantics).
 */
#include "binding.h"

#include "rg_sample.h"

PyObject *model_reset_cache(ModelObject *self, PyObject *args, PyObject *kwargs)
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
    model_leave(self);
    if (status == RG_ERR_SHAPE) {
        char message[128];
        PyOS_snprintf(message, sizeof(message), "reset_cache: max_length %d exceeds the model's %d positions",
                      max_T, self->model->config.n_positions);
        return binding_raise_for(self, status, message);
    }
    if (status == RG_ERR_UNSUPPORTED)
        return binding_raise_for(self, status, "reset_cache: only causal language models generate");
    if (status != RG_OK)
        return binding_raise_status(binding_state_of_type(Py_TYPE(self)), status, "reset_cache");
    Py_RETURN_NONE;
}

static PyObject *model_cached_step_locked(ModelObject *self, PyArrayObject *tokens, PyArrayObject *mask,
                                         const char *what);

/* Appends (B, T) tokens to the cache and returns the last column's logits (B, V).
 * The busy flag covers the cache checks too: another thread's reset_cache
 * must not resize the cache between the check and the forward. */
static PyObject *model_cached_step(ModelObject *self, PyArrayObject *tokens, PyArrayObject *mask, const char *what)
{
    if (model_enter(self) < 0)
        return NULL;
    PyObject *result = model_cached_step_locked(self, tokens, mask, what);
    model_leave(self);
    return result;
}

static PyObject *model_cached_step_locked(ModelObject *self, PyArrayObject *tokens, PyArrayObject *mask,
                                         const char *what)
{
    int B, max_T, filled;
    rg_model_cache_info(self->model, &B, &max_T, &filled);
    if (B == 0)
        return binding_raise_for(self, RG_ERR_STATE, "generation: call reset_cache(batch_size, max_length) first");
    const npy_intp T = PyArray_NDIM(tokens) == 2 ? PyArray_DIM(tokens, 1) : 1;
    if (PyArray_DIM(tokens, 0) != B || (mask && (PyArray_DIM(mask, 0) != B || PyArray_DIM(mask, 1) != T))) {
        char message[160];
        PyOS_snprintf(message, sizeof(message), "%s: the cache holds %d rows; tokens (and attention_mask) must have %d rows",
                      what, B, B);
        return binding_raise_for(self, RG_ERR_SHAPE, message);
    }
    if (filled + T > max_T) {
        char message[160];
        PyOS_snprintf(message, sizeof(message), "%s: the cache is full (%d of %d columns used, %ld more asked)",
                      what, filled, max_T, (long)T);
        return binding_raise_for(self, RG_ERR_SHAPE, message);
    }
    npy_intp dims[2] = {B, self->model->config.vocab_size};
    PyObject *logits = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (logits == NULL)
        return NULL;
    rg_status status;
    interruptible_begin(); /* a long prompt's prefill stops at a layer boundary on Ctrl-C */
    Py_BEGIN_ALLOW_THREADS
    status = rg_model_cache_forward(self->model, PyArray_DATA(tokens), mask ? PyArray_DATA(mask) : NULL, (int)T,
                                    PyArray_DATA((PyArrayObject *)logits));
    Py_END_ALLOW_THREADS
    interruptible_end();
    if (status == RG_ERR_INTERRUPTED) {
        Py_DECREF(logits);
        return binding_raise_status(binding_state_of_type(Py_TYPE(self)), status, what);
    }
    if (status != RG_OK) {
        Py_DECREF(logits);
        char message[160];
        PyOS_snprintf(message, sizeof(message), "%s: %s", what,
                      status == RG_ERR_LABEL_RANGE ? "a token id is outside the vocabulary"
                      : status == RG_ERR_SHAPE ? "a position beyond the model's n_positions"
                                               : rg_status_string(status));
        if (status == RG_ERR_NOMEM)
            return PyErr_NoMemory();
        return binding_raise_for(self, status, message);
    }
    return logits;
}

PyObject *model_forward_logits(ModelObject *self, PyObject *args, PyObject *kwargs)
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

PyObject *model_decode_step(ModelObject *self, PyObject *args, PyObject *kwargs)
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

PyObject *model_cache_info(ModelObject *self, PyObject *unused)
{
    int B, max_T, filled;
    if (model_enter(self) < 0)
        return NULL;
    rg_model_cache_info(self->model, &B, &max_T, &filled);
    model_leave(self);
    return Py_BuildValue("{s:i,s:i,s:i}", "batch_size", B, "max_length", max_T, "length", filled);
}


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
        return binding_raise_status(binding_state_of_module(module), status,
                        "sample (logits: NaN, +inf or a row of only -inf)");
    }
    return (PyObject *)out;
}

static PyMethodDef generate_methods[] = {
    {"sample", (PyCFunction)(void (*)(void))core_sample, METH_VARARGS | METH_KEYWORDS,
     "sample(logits, temperature=1.0, top_k=0, top_p=1.0, seed=0, step=0, do_sample=True, "
     "row_offset=0) -> int32 (B,): one token per row of logits (B, V), Hugging Face "
     "temperature/top-k/top-p semantics; greedy when do_sample is False, temperature == 0 or "
     "top_k == 1; row b's draw is keyed by (seed, step, row_offset + b)."},
    {NULL, NULL, 0, NULL}
};

int binding_add_generate(PyObject *module)
{
    return PyModule_AddFunctions(module, generate_methods);
}
