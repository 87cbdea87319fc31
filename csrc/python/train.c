/*
 * train.c - the AdamW type of reviewgen._core: torch.optim.AdamW with gradient
 * clipping and the Hugging Face learning-rate schedules, over a flat parameter
 * block and its gradient block (rg_optim.h).
 */
#include "binding.h"

#include <limits.h>
#include <math.h>

#include "rg_optim.h"

/* _core.AdamW: the optimizer over a model's flat parameter and gradient
 * blocks. It holds references to both arrays, so their owner stays alive
 * as long as the optimizer. */
typedef struct {
    PyObject_HEAD
    rg_adamw opt;
    int initialized;
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
 * [0, total). An entry's optional 'grad_offset' (a LoRA model's param_table:
 * None for a tensor without gradient memory) makes the gradient block compact,
 * grads_total elements. On success table->tensors is PyMem_Malloc'ed (caller frees). */
static int param_table_from_python(PyObject *table_obj, size_t total, size_t grads_total, rg_param_table *table)
{
    int compact = 0;
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
        t->grad_offset = t->offset;
        PyObject *grad_offset;
        found = table_entry_field(entry, "grad_offset", &grad_offset);
        if (found < 0)
            goto error;
        if (found) {
            if (grad_offset == Py_None) {
                t->grad_offset = SIZE_MAX;
                compact = 1;
                if (t->trainable) {
                    Py_DECREF(grad_offset);
                    PyErr_Format(PyExc_ValueError, "table[%zd]: trainable without a gradient (grad_offset None)", i);
                    goto error;
                }
            } else {
                long long at = PyLong_AsLongLong(grad_offset);
                if (at < 0 || (unsigned long long)at > grads_total ||
                    (unsigned long long)numel > grads_total - (size_t)at) {
                    Py_DECREF(grad_offset);
                    if (!PyErr_Occurred())
                        PyErr_Format(PyExc_ValueError, "table[%zd]: grad_offset outside the gradient block", i);
                    goto error;
                }
                t->grad_offset = (size_t)at;
                compact |= t->grad_offset != t->offset;
            }
            Py_DECREF(grad_offset);
        }
        t->ndim = 1;
        t->shape[0] = numel;
        t->layer = 0;
    }
    Py_DECREF(entries);
    table->tensors = tensors;
    table->count = (int)count;
    table->total = total;
    table->compact_grads = compact;
    table->grads_total = grads_total;
    if (!compact && grads_total != total) {
        PyMem_Free(tensors);
        table->tensors = NULL;
        PyErr_Format(PyExc_ValueError, "parameters and gradients must be 1-D arrays of the same length "
                     "(%zu and %zu elements)", total, grads_total);
        return -1;
    }
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
    PyObject *params_obj, *grads_obj = NULL, *table_obj = NULL;
    rg_adamw_config config = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                              .weight_decay = 0.01, .max_grad_norm = 0.0, .warmup_ratio = 0.0,
                              .total_steps = 0, .schedule = RG_SCHEDULE_CONSTANT};
    long long total_steps = 0;
    const char *schedule = "constant";
    if (self->initialized) {
        PyErr_SetString(PyExc_RuntimeError, "AdamW: already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOd(dd)ddddLs:AdamW", keywords, &params_obj,
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

    /* A _core.Model brings its own blocks and table: nothing to marshal. */
    const rg_model *model = NULL;
    if (grads_obj == NULL && table_obj == NULL) {
        if ((model = model_unwrap(params_obj, "AdamW(model)")) == NULL) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "AdamW: give a _core.Model, or parameters, gradients and table");
            return -1;
        }
    } else if (grads_obj == NULL || table_obj == NULL) {
        PyErr_SetString(PyExc_TypeError, "AdamW: parameters need their gradients and table");
        return -1;
    }
    PyObject *params_view = model ? PyObject_GetAttrString(params_obj, "parameters") : Py_NewRef(params_obj);
    PyObject *grads_view = model ? PyObject_GetAttrString(params_obj, "gradients") : Py_NewRef(grads_obj);
    PyArrayObject *params = params_view ? rg_array_out(params_view, NPY_FLOAT32, "parameters") : NULL;
    PyArrayObject *grads = grads_view && params ? rg_array_out(grads_view, NPY_FLOAT32, "gradients") : NULL;
    Py_XDECREF(params_view);
    Py_XDECREF(grads_view);
    if (grads == NULL) {
        Py_XDECREF(params);
        return -1;
    }
    /* a model's gradient block may be compact (LoRA): its own table says where */
    if (PyArray_NDIM(params) != 1 || PyArray_NDIM(grads) != 1 ||
        (model != NULL && (size_t)PyArray_DIM(grads, 0) !=
                              (model->table.compact_grads ? model->grads_total : model->table.total))) {
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
    if (model == NULL && param_table_from_python(table_obj, (size_t)PyArray_DIM(params, 0),
                                                 (size_t)PyArray_DIM(grads, 0), &table) < 0)
        goto error;
    rg_status status = rg_adamw_init(&self->opt, &config, model ? &model->table : &table);
    PyMem_Free(table.tensors);
    if (status != RG_OK) {
        if (status == RG_ERR_SHAPE)
            PyErr_SetString(PyExc_ValueError, "table: two trainable tensors overlap");
        else
            binding_raise_status(binding_state_of_type(Py_TYPE(self)), status, "AdamW");
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

/* Takes the optimizer's busy flag (every method, getters included): 0 with
 * StateError while a call from another thread holds it. */
static int adamw_enter(AdamWObject *self)
{
    if (!self->initialized) {
        PyErr_SetString(PyExc_RuntimeError, "AdamW: not initialised");
        return 0;
    }
    if (rg_adamw_try_acquire(&self->opt) != RG_OK) {
        binding_raise_for(self, RG_ERR_STATE, "AdamW: another call on this optimizer is running (from another thread?)");
        return 0;
    }
    return 1;
}

/* A method whose body runs with the flag held. */
#define ADAMW_METHOD(name, argtype)                                          \
    static PyObject *name##_locked(AdamWObject *self, argtype);              \
    static PyObject *name(AdamWObject *self, argtype arg)                    \
    {                                                                        \
        if (!adamw_enter(self))                                              \
            return NULL;                                                     \
        PyObject *result = name##_locked(self, arg);                         \
        rg_adamw_release(&self->opt);                                        \
        return result;                                                       \
    }

ADAMW_METHOD(adamw_step, PyObject *)

static PyObject *adamw_step_locked(AdamWObject *self, PyObject *unused)
{
    double lr = 0.0, grad_norm = 0.0;
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_adamw_step(&self->opt, PyArray_DATA(self->parameters), PyArray_DATA(self->gradients),
                           &lr, &grad_norm);
    Py_END_ALLOW_THREADS
    if (status != RG_OK)
        return binding_raise_status(binding_state_of_type(Py_TYPE(self)), status,
                        "AdamW.step (gradients; parameters left unchanged)");
    return Py_BuildValue("{s:d,s:d,s:L}", "lr", lr, "grad_norm", grad_norm, "step",
                         (long long)self->opt.step);
}

ADAMW_METHOD(adamw_grad_norm, PyObject *)

static PyObject *adamw_grad_norm_locked(AdamWObject *self, PyObject *unused)
{
    double norm = 0.0;
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_adamw_grad_norm(&self->opt, PyArray_DATA(self->gradients), &norm);
    Py_END_ALLOW_THREADS
    if (status != RG_OK)
        return binding_raise_status(binding_state_of_type(Py_TYPE(self)), status, "AdamW.grad_norm");
    return PyFloat_FromDouble(norm);
}

ADAMW_METHOD(adamw_lr_at, PyObject *)

static PyObject *adamw_lr_at_locked(AdamWObject *self, PyObject *arg)
{
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

ADAMW_METHOD(adamw_state, PyObject *)

static PyObject *adamw_state_locked(AdamWObject *self, PyObject *unused)
{
    PyObject *m = moment_copy(self->opt.m, self->opt.state_numel);
    PyObject *v = m ? moment_copy(self->opt.v, self->opt.state_numel) : NULL;
    PyObject *result = v ? Py_BuildValue("{s:L,s:O,s:O}", "step", (long long)self->opt.step, "m", m,
                                         "v", v)
                         : NULL;
    Py_XDECREF(m);
    Py_XDECREF(v);
    return result;
}

ADAMW_METHOD(adamw_load_state, PyObject *)

static PyObject *adamw_load_state_locked(AdamWObject *self, PyObject *state_obj)
{
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
        binding_raise_status(binding_state_of_type(Py_TYPE(self)), status, "load_state (m and v must be finite, v >= 0)");
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

ADAMW_METHOD(adamw_get_step, void *)

static PyObject *adamw_get_step_locked(AdamWObject *self, void *closure)
{
    return PyLong_FromLongLong(self->opt.step);
}

ADAMW_METHOD(adamw_get_warmup_steps, void *)

static PyObject *adamw_get_warmup_steps_locked(AdamWObject *self, void *closure)
{
    return PyLong_FromLongLong(self->opt.warmup_steps);
}

ADAMW_METHOD(adamw_get_total_steps, void *)

static PyObject *adamw_get_total_steps_locked(AdamWObject *self, void *closure)
{
    return PyLong_FromLongLong(self->opt.config.total_steps);
}

ADAMW_METHOD(adamw_get_state_numel, void *)

static PyObject *adamw_get_state_numel_locked(AdamWObject *self, void *closure)
{
    return PyLong_FromSize_t(self->opt.state_numel);
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
    {Py_tp_doc, "AdamW(model | parameters, gradients, table, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, "
                "weight_decay=0.01, max_grad_norm=0.0, warmup_ratio=0.0, total_steps=0, "
                "schedule='constant')\n\n"
                "torch.optim.AdamW with clip_grad_norm_ and the Hugging Face schedules over a "
                "flat parameter block: a _core.Model's own (its table as the core holds it), or "
                "arrays with a table: list of dicts with 'offset', 'numel' or 'shape', "
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

int binding_add_train(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &adamw_spec, NULL);
    if (type == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(module, "AdamW", type);
    Py_DECREF(type);
    return rc;
}
