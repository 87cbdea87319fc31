/*
 * generate.c - decoding in reviewgen._core: the Model's key/value-cache
 * methods (listed in model.c's method table) and the sampler over a batch of
 * logits (Hugging Face temperature / top-k / top-p semantics), and the whole
 * decode loop in one call (rg_generate).
 */
#include "binding.h"

#include "rg_generate.h"
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

/* Called after each batch, on the core's thread: the GIL for the call only. */
typedef struct {
    PyObject *callback;
    PyObject *error_type, *error, *error_traceback;
    int64_t calls;
} generate_bridge;

static int generate_progress(void *user, int64_t rows_done)
{
    generate_bridge *bridge = user;
    bridge->calls++;
    if (bridge->callback == NULL)
        return 0;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *result = PyObject_CallFunction(bridge->callback, "L", (long long)rows_done);
    int stop = result == NULL;
    if (result == NULL && bridge->error_type == NULL)
        PyErr_Fetch(&bridge->error_type, &bridge->error, &bridge->error_traceback);
    PyErr_Clear();
    Py_XDECREF(result);
    PyGILState_Release(gil);
    return stop;
}

static PyObject *core_generate(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"model", "prompt_tokens", "prompt_offsets", "max_new_tokens", "min_new_tokens",
                               "temperature", "top_k", "top_p", "seed", "do_sample", "repetition_penalty",
                               "no_repeat_ngram_size", "eos_ids", "pad_id", "include_eos", "batch_size",
                               "progress", NULL};
    PyObject *model_obj, *tokens_obj, *offsets_obj, *eos_obj = Py_None, *progress = Py_None;
    int max_new = 0, min_new = 0, top_k = 0, do_sample = 1, ngram = 0, pad_id = 0, include_eos = 1, batch_size = 0;
    float temperature = 1.0f, top_p = 1.0f, penalty = 1.0f;
    unsigned long long seed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOi|ififKpfiOipiO:generate", keywords, &model_obj, &tokens_obj,
                                     &offsets_obj, &max_new, &min_new, &temperature, &top_k, &top_p, &seed,
                                     &do_sample, &penalty, &ngram, &eos_obj, &pad_id, &include_eos, &batch_size,
                                     &progress))
        return NULL;
    core_state *state = binding_state_of_module(module);
    rg_model *model = model_unwrap(model_obj, "generate model");
    if (model == NULL)
        return NULL;
    if (progress != Py_None && !PyCallable_Check(progress)) {
        PyErr_SetString(PyExc_TypeError, "generate: progress must be callable or None");
        return NULL;
    }
    PyArrayObject *tokens = rg_array_in(tokens_obj, NPY_INT32, 1, "prompt_tokens");
    PyObject *offsets_natural = tokens ? PyArray_FROM_OTF(offsets_obj, NPY_INT64, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST) : NULL;
    PyArrayObject *offsets = (PyArrayObject *)offsets_natural;
    PyArrayObject *eos = NULL, *out = NULL, *lengths = NULL;
    PyObject *result = NULL;
    if (offsets == NULL)
        goto done;
    if (PyArray_NDIM(offsets) != 1 || PyArray_DIM(offsets, 0) < 1) {
        PyErr_SetString(PyExc_ValueError, "prompt_offsets: expected (n_prompts + 1,) offsets");
        goto done;
    }
    npy_intp n = PyArray_DIM(offsets, 0) - 1;
    const int64_t *off = PyArray_DATA(offsets);
    if (off[0] != 0 || off[n] != PyArray_DIM(tokens, 0)) {
        PyErr_SetString(PyExc_ValueError, "prompt_offsets: must start at 0 and end at len(prompt_tokens)");
        goto done;
    }
    for (npy_intp i = 0; i < n; i++)
        if (off[i + 1] < off[i]) {
            PyErr_SetString(PyExc_ValueError, "prompt_offsets: must not decrease");
            goto done;
        }
    if (eos_obj != Py_None && (eos = rg_array_in(eos_obj, NPY_INT32, 1, "eos_ids")) == NULL)
        goto done;
    if (max_new < 0 || min_new < 0 || batch_size < 0) {
        PyErr_SetString(PyExc_ValueError, "generate: max_new_tokens, min_new_tokens and batch_size must be >= 0");
        goto done;
    }
    npy_intp dims[2] = {n, max_new};
    out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_INT32);
    lengths = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT32);
    if (out == NULL || lengths == NULL)
        goto done;
    generate_bridge bridge = {.callback = progress == Py_None ? NULL : progress};
    rg_generate_config config = rg_generate_config_default();
    config.max_new_tokens = max_new;
    config.min_new_tokens = min_new;
    config.sample = (rg_sample_config){.do_sample = do_sample, .temperature = temperature, .top_k = top_k,
                                       .top_p = top_p, .seed = seed};
    config.repetition_penalty = penalty;
    config.no_repeat_ngram_size = ngram;
    config.eos_ids = eos ? PyArray_DATA(eos) : NULL;
    config.n_eos = eos ? (int)PyArray_DIM(eos, 0) : 0;
    config.pad_id = pad_id;
    config.include_eos = include_eos;
    config.batch_size = batch_size;
    config.progress = generate_progress;
    config.progress_user = &bridge;
    ModelObject *model_object = (ModelObject *)model_obj;
    if (model_enter(model_object) < 0)
        goto done;
    rg_status status;
    interruptible_begin();
    Py_BEGIN_ALLOW_THREADS
    status = rg_generate(model, PyArray_DATA(tokens), off, (int64_t)n, &config, PyArray_DATA(out),
                         PyArray_DATA(lengths));
    Py_END_ALLOW_THREADS
    interruptible_end();
    model_leave(model_object);
    if (bridge.error_type != NULL) {
        PyErr_Restore(bridge.error_type, bridge.error, bridge.error_traceback);
        goto done;
    }
    if (status != RG_OK) {
        const char *why = status == RG_ERR_SHAPE ? "the longest prompt plus max_new_tokens exceeds the model's positions"
                        : status == RG_ERR_LABEL_RANGE ? "a prompt, eos or pad id outside the vocabulary"
                        : status == RG_ERR_UNSUPPORTED ? "only causal language models generate"
                        : status == RG_ERR_NONFINITE ? "a row was left with no allowed token (NaN logits?)"
                        : status == RG_ERR_EMPTY ? "an empty prompt"
                        : rg_status_string(status);
        binding_raise(state, status, "generate: %s", why);
        goto done;
    }
    result = Py_BuildValue("(OOL)", out, lengths, (long long)bridge.calls);
done:
    Py_XDECREF(tokens);
    Py_XDECREF(offsets);
    Py_XDECREF(eos);
    Py_XDECREF(out);
    Py_XDECREF(lengths);
    return result;
}

static PyMethodDef generate_methods[] = {
    {"generate", (PyCFunction)(void (*)(void))core_generate, METH_VARARGS | METH_KEYWORDS,
     "generate(model, prompt_tokens, prompt_offsets, max_new_tokens, min_new_tokens=0, temperature=1.0, "
     "top_k=0, top_p=1.0, seed=0, do_sample=True, repetition_penalty=1.0, no_repeat_ngram_size=0, "
     "eos_ids=None, pad_id=0, include_eos=True, batch_size=0, progress=None) -> (tokens (n, max_new_tokens), "
     "lengths (n,), callbacks): the whole decode loop of rg_generate.h in one call."},
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
