/*
 * trainer.c - a whole fine-tuning run in reviewgen._core: the Trainer type over
 * rg_trainer (rg_trainer.h), plus the config / data / event conversions that
 * sweep.c shares (binding.h).
 *
 * The run itself goes without the GIL; the progress callback is the only way
 * back into Python and takes the GIL just for the call. A callback that raises
 * stops the run at that update boundary and its exception is re-raised once
 * rg_trainer_run has returned. Ctrl-C asks the core to stop (interruptible_begin)
 * and surfaces as KeyboardInterrupt.
 *
 * Data parallelism: Trainer(..., comm=obj) with obj.rank, obj.size and
 * obj.allreduce(array), which sums a float32 / float64 numpy array in place
 * over every rank (reviewgen.core.distributed wraps mpi4py so). The array is
 * a view of the core's buffer, valid only during the call; the call takes
 * the GIL just for itself, like the progress callback. Its exception stops
 * the run and is raised as CommError (chained) once rg_trainer_run is back.
 */
#include "binding.h"

#include <string.h>

#include "rg_trainer.h"

/* ------------------------------------------------------------------ config */

static int dict_get(PyObject *dict, const char *key, PyObject **out)
{
    *out = NULL;
    if (dict == NULL || dict == Py_None)
        return 0;
    PyObject *name = PyUnicode_FromString(key);
    if (name == NULL)
        return -1;
    PyObject *item = PyDict_GetItemWithError(dict, name); /* borrowed */
    Py_DECREF(name);
    if (item == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (item == Py_None)
        return 0;
    Py_INCREF(item);
    *out = item;
    return 1;
}

static int dict_double(PyObject *dict, const char *key, double *value)
{
    PyObject *item;
    int found = dict_get(dict, key, &item);
    if (found <= 0)
        return found;
    *value = PyFloat_AsDouble(item);
    Py_DECREF(item);
    return (*value == -1.0 && PyErr_Occurred()) ? -1 : 1;
}

static int dict_int64(PyObject *dict, const char *key, int64_t *value)
{
    PyObject *item;
    int found = dict_get(dict, key, &item);
    if (found <= 0)
        return found;
    long long v = PyLong_AsLongLong(item);
    Py_DECREF(item);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *value = v;
    return 1;
}

static int dict_int(PyObject *dict, const char *key, int *value)
{
    int64_t wide = *value;
    int found = dict_int64(dict, key, &wide);
    if (found > 0) {
        if (wide < INT32_MIN || wide > INT32_MAX) {
            PyErr_Format(PyExc_OverflowError, "trainer config: %s does not fit in int32", key);
            return -1;
        }
        *value = (int)wide;
    }
    return found;
}

static int dict_choice(PyObject *dict, const char *key, const char *const *names, int count, int *value)
{
    PyObject *item;
    int found = dict_get(dict, key, &item);
    if (found <= 0)
        return found;
    const char *name = PyUnicode_Check(item) ? PyUnicode_AsUTF8(item) : NULL;
    for (int i = 0; name && i < count; i++)
        if (strcmp(name, names[i]) == 0) {
            *value = i;
            Py_DECREF(item);
            return 1;
        }
    PyErr_Format(PyExc_ValueError, "trainer config: %s must be one of the names of rg_trainer.h, got %R", key, item);
    Py_DECREF(item);
    return -1;
}

void trainer_buffers_release(trainer_buffers *keep)
{
    for (size_t i = 0; i < sizeof(keep->arrays) / sizeof(keep->arrays[0]); i++)
        Py_CLEAR(keep->arrays[i]);
    Py_CLEAR(keep->checkpoint_path);
}

static PyArrayObject *keep_array(trainer_buffers *keep, PyArrayObject *array)
{
    for (size_t i = 0; i < sizeof(keep->arrays) / sizeof(keep->arrays[0]); i++)
        if (keep->arrays[i] == NULL) {
            keep->arrays[i] = array;
            return array;
        }
    Py_DECREF(array);
    PyErr_SetString(PyExc_RuntimeError, "trainer binding: too many arrays to keep");
    return NULL;
}

int binding_trainer_config(PyObject *dict, rg_trainer_config *c, trainer_buffers *keep)
{
    static const char *const schedules[] = {"linear", "constant", "constant_with_warmup"};
    static const char *const head_policies[] = {"frozen", "train", "untie"};
    *c = rg_trainer_config_default();
    c->keep_last_good = 1;
    if (dict != NULL && !PyDict_Check(dict)) {
        PyErr_SetString(PyExc_TypeError, "trainer config: expected a dict");
        return -1;
    }
    int schedule = (int)c->adamw.schedule;
    int64_t seed = (int64_t)c->seed;
    if (dict_double(dict, "lr", &c->adamw.lr) < 0 || dict_double(dict, "beta1", &c->adamw.beta1) < 0 ||
        dict_double(dict, "beta2", &c->adamw.beta2) < 0 || dict_double(dict, "eps", &c->adamw.eps) < 0 ||
        dict_double(dict, "weight_decay", &c->adamw.weight_decay) < 0 ||
        dict_double(dict, "max_grad_norm", &c->adamw.max_grad_norm) < 0 ||
        dict_double(dict, "warmup_ratio", &c->adamw.warmup_ratio) < 0 ||
        dict_choice(dict, "schedule", schedules, 3, &schedule) < 0 ||
        dict_int(dict, "epochs", &c->epochs) < 0 || dict_int(dict, "train_batch_size", &c->train_batch_size) < 0 ||
        dict_int(dict, "eval_batch_size", &c->eval_batch_size) < 0 || dict_int(dict, "grad_accum", &c->grad_accum) < 0 ||
        dict_int(dict, "trim_padding", &c->trim_padding) < 0 || dict_int(dict, "shuffle", &c->shuffle) < 0 ||
        dict_int64(dict, "seed", &seed) < 0 || dict_int(dict, "load_best_at_end", &c->load_best_at_end) < 0 ||
        dict_int(dict, "apply_freezing", &c->apply_freezing) < 0 ||
        dict_int(dict, "trainable_blocks", &c->trainable_blocks) < 0 ||
        dict_choice(dict, "head_policy", head_policies, 3, &c->head_policy) < 0 ||
        dict_int64(dict, "save_steps", &c->save_steps) < 0 || dict_int(dict, "keep_last_good", &c->keep_last_good) < 0 ||
        dict_int(dict, "progress_every", &c->progress_every) < 0 ||
        dict_int(dict, "cache_frozen", &c->cache_frozen) < 0 ||
        dict_int64(dict, "cache_frozen_max_mib", &c->cache_frozen_max_mib) < 0 ||
        dict_int(dict, "frozen_dropout", &c->frozen_dropout) < 0)
        return -1;
    c->adamw.schedule = (rg_schedule_kind)schedule;
    c->seed = (uint64_t)seed;
    PyObject *item;
    int found;
    if ((found = dict_get(dict, "orders", &item)) < 0)
        return -1;
    if (found) {
        PyArrayObject *orders = rg_array_in(item, NPY_INT32, 2, "orders");
        Py_DECREF(item);
        if (orders == NULL || keep_array(keep, orders) == NULL)
            return -1;
        if (PyArray_DIM(orders, 0) != c->epochs) {
            PyErr_Format(PyExc_ValueError, "orders: %ld rows for %d epochs", (long)PyArray_DIM(orders, 0), c->epochs);
            return -1;
        }
        c->orders = PyArray_DATA(orders);
        keep->orders_width = PyArray_DIM(orders, 1);
    }
    if ((found = dict_get(dict, "label_values", &item)) < 0)
        return -1;
    if (found) {
        PyArrayObject *values = rg_array_in(item, NPY_INT32, 1, "label_values");
        Py_DECREF(item);
        if (values == NULL || keep_array(keep, values) == NULL)
            return -1;
        c->label_values = PyArray_DATA(values);
        keep->n_label_values = PyArray_DIM(values, 0);
    }
    if ((found = dict_get(dict, "checkpoint_path", &item)) < 0)
        return -1;
    if (found) {
        if (!PyUnicode_FSConverter(item, &keep->checkpoint_path)) {
            Py_DECREF(item);
            return -1;
        }
        Py_DECREF(item);
        c->checkpoint_path = PyBytes_AS_STRING(keep->checkpoint_path);
    }
    return 0;
}

int binding_train_data(PyObject *dict, rg_train_data *data, trainer_buffers *keep, int classifier, const char *what)
{
    memset(data, 0, sizeof(*data));
    if (!PyDict_Check(dict)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a dict of arrays (tokens, attention_mask, token_types, targets)", what);
        return -1;
    }
    static const char *const keys[] = {"tokens", "attention_mask", "token_types", "targets"};
    const int32_t **slots[] = {&data->tokens, &data->attention_mask, &data->token_types, &data->targets};
    for (int k = 0; k < 4; k++) {
        PyObject *item;
        int found = dict_get(dict, keys[k], &item);
        if (found < 0)
            return -1;
        if (!found) {
            if (k == 0) {
                PyErr_Format(PyExc_ValueError, "%s: tokens are required", what);
                return -1;
            }
            continue;
        }
        char name[64];
        PyOS_snprintf(name, sizeof(name), "%s %s", what, keys[k]);
        int ndim = (k == 3 && classifier) ? 1 : 2;
        PyArrayObject *array = rg_array_in(item, NPY_INT32, ndim, name);
        Py_DECREF(item);
        if (array == NULL || keep_array(keep, array) == NULL)
            return -1;
        if (k == 0) {
            data->N = PyArray_DIM(array, 0);
            if (PyArray_DIM(array, 1) > INT32_MAX) {
                PyErr_Format(PyExc_ValueError, "%s: too many columns", what);
                return -1;
            }
            data->T = (int)PyArray_DIM(array, 1);
        } else if (PyArray_DIM(array, 0) != data->N || (ndim == 2 && PyArray_DIM(array, 1) != data->T)) {
            PyErr_Format(PyExc_ValueError, "%s: %s must have the shape of tokens (%ld, %d)%s", what, keys[k],
                         (long)data->N, data->T, ndim == 1 ? " (its rows)" : "");
            return -1;
        }
        *slots[k] = PyArray_DATA(array);
    }
    return 0;
}

/* ------------------------------------------------------------------ events */

PyObject *binding_eval_dict(const rg_train_eval *e, int lm)
{
    PyObject *d = Py_BuildValue("{s:i,s:L,s:d}", "epoch", e->epoch, "step", (long long)e->step, "train_loss",
                                e->train_loss);
    if (d == NULL || !e->has_eval)
        return d;
    PyObject *value = PyFloat_FromDouble(e->eval_loss);
    if (value == NULL || PyDict_SetItemString(d, "eval_loss", value) < 0)
        goto error;
    Py_DECREF(value);
    value = NULL;
    struct { const char *key; double value; int on; } extra[] = {
        {"eval_perplexity", e->eval_perplexity, lm},
        {"eval_accuracy", e->accuracy, e->has_metrics},
        {"eval_macro_f1", e->macro_f1, e->has_metrics},
        {"eval_near_accuracy", e->near_accuracy, e->has_metrics},
        {"eval_near_macro_f1", e->near_macro_f1, e->has_metrics},
    };
    for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
        if (!extra[i].on)
            continue;
        value = PyFloat_FromDouble(extra[i].value);
        if (value == NULL || PyDict_SetItemString(d, extra[i].key, value) < 0)
            goto error;
        Py_CLEAR(value);
    }
    return d;
error:
    Py_XDECREF(value);
    Py_DECREF(d);
    return NULL;
}

static PyObject *event_dict(const rg_train_event *ev, int lm)
{
    PyObject *d = NULL;
    if (ev->kind == RG_TRAIN_EVENT_STEP) {
        double tokens_per_s = ev->elapsed_s > 0 ? (double)ev->tokens / ev->elapsed_s : Py_HUGE_VAL;
        return Py_BuildValue("{s:s,s:i,s:d,s:L,s:L,s:d,s:d,s:d,s:L,s:d,s:d}", "event", "step", "epoch", ev->epoch,
                             "epoch_progress", ev->epoch_progress, "step", (long long)ev->step, "total_steps",
                             (long long)ev->total_steps, "loss", ev->loss, "lr", ev->lr, "grad_norm", ev->grad_norm,
                             "tokens", (long long)ev->tokens, "tokens_per_s", tokens_per_s, "elapsed_s", ev->elapsed_s);
    }
    if (ev->kind == RG_TRAIN_EVENT_CHECKPOINT)
        return Py_BuildValue("{s:s,s:i,s:L,s:d,s:s}", "event", "checkpoint", "epoch", ev->epoch, "step",
                             (long long)ev->step, "epoch_progress", ev->epoch_progress, "path",
                             ev->path ? ev->path : "");
    d = binding_eval_dict(ev->eval, lm);
    if (d == NULL)
        return NULL;
    PyObject *name = PyUnicode_FromString("eval");
    if (name == NULL || PyDict_SetItemString(d, "event", name) < 0) {
        Py_XDECREF(name);
        Py_DECREF(d);
        return NULL;
    }
    Py_DECREF(name);
    if (ev->eval_logits != NULL && ev->n_eval > 0 && ev->num_labels > 0) {
        /* copies: what the event points to is gone after the callback */
        npy_intp dims[2] = {(npy_intp)ev->n_eval, ev->num_labels};
        PyObject *logits = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
        PyObject *predictions = PyArray_SimpleNew(1, dims, NPY_INT32);
        if (logits == NULL || predictions == NULL) {
            Py_XDECREF(logits);
            Py_XDECREF(predictions);
            Py_DECREF(d);
            return NULL;
        }
        memcpy(PyArray_DATA((PyArrayObject *)logits), ev->eval_logits, sizeof(float) * (size_t)(dims[0] * dims[1]));
        memcpy(PyArray_DATA((PyArrayObject *)predictions), ev->predictions, sizeof(int32_t) * (size_t)dims[0]);
        int failed = PyDict_SetItemString(d, "logits", logits) < 0 ||
                     PyDict_SetItemString(d, "predictions", predictions) < 0;
        Py_DECREF(logits);
        Py_DECREF(predictions);
        if (failed) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

/* Runs on the core's thread without the GIL; takes it only for the call. */
int binding_progress_bridge(void *user, const rg_train_event *ev)
{
    progress_bridge *bridge = user;
    bridge->calls++;
    if (bridge->callback == NULL)
        return 0;
    if (bridge->error_type != NULL)
        return 1; /* the callback raised: the run is stopping, Python hears no more */
    PyGILState_STATE gil = PyGILState_Ensure();
    int stop = 0;
    if (bridge->model != NULL)
        model_leave(bridge->model); /* between updates the callback may use the model */
    PyObject *event = event_dict(ev, bridge->lm);
    PyObject *result = event ? PyObject_CallOneArg(bridge->callback, event) : NULL;
    Py_XDECREF(event);
    if (bridge->model != NULL && rg_model_try_acquire(bridge->model->model) != RG_OK) {
        bridge->model_lost = 1;
        /* a call the callback started (another thread?) still holds the model:
         * the run cannot go on; it stops without touching the model again */
        Py_XDECREF(result);
        result = NULL;
        if (bridge->error_type == NULL)
            PyErr_SetString(PyExc_RuntimeError,
                            "a call on the model was still running when the progress callback returned");
    }
    if (result == NULL) {
        if (bridge->error_type == NULL)
            PyErr_Fetch(&bridge->error_type, &bridge->error, &bridge->error_traceback);
        else
            PyErr_Clear();
        stop = 1;
    } else {
        stop = result != Py_None && PyObject_IsTrue(result) == 1;
        Py_DECREF(result);
    }
    PyGILState_Release(gil);
    return stop;
}

/* After the core call: the callback's exception first, else the status. */
PyObject *binding_finish_status(core_state *state, progress_bridge *bridge, rg_status status, const char *message)
{
    if (bridge->error_type != NULL) {
        PyErr_Restore(bridge->error_type, bridge->error, bridge->error_traceback);
        bridge->error_type = bridge->error = bridge->error_traceback = NULL;
        return NULL;
    }
    if (status == RG_OK)
        Py_RETURN_NONE;
    return binding_raise(state, status, "%s", message && message[0] ? message : rg_status_string(status));
}

/* ------------------------------------------------------------------ communicator */

typedef struct {
    PyObject *comm; /* rank, size, allreduce(array) */
    PyObject *error_type, *error, *error_traceback;
    rg_comm core;
} comm_bridge;

/* Runs on the core's thread without the GIL; takes it only for the call. */
static int comm_bridge_allreduce(void *ctx, void *buf, size_t n, rg_comm_dtype dtype)
{
    comm_bridge *bridge = ctx;
    PyGILState_STATE gil = PyGILState_Ensure();
    npy_intp dims = (npy_intp)n;
    PyObject *array = PyArray_SimpleNewFromData(1, &dims, dtype == RG_COMM_F64 ? NPY_FLOAT64 : NPY_FLOAT32, buf);
    PyObject *result = array ? PyObject_CallMethod(bridge->comm, "allreduce", "O", array) : NULL;
    Py_XDECREF(array);
    int failed = result == NULL;
    if (failed) {
        if (bridge->error_type == NULL)
            PyErr_Fetch(&bridge->error_type, &bridge->error, &bridge->error_traceback);
        else
            PyErr_Clear();
    }
    Py_XDECREF(result);
    PyGILState_Release(gil);
    return failed;
}

static int comm_attr_int(PyObject *comm, const char *name, int *value)
{
    PyObject *item = PyObject_GetAttrString(comm, name);
    if (item == NULL)
        return -1;
    long v = PyLong_AsLong(item);
    Py_DECREF(item);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "Trainer comm: %s = %ld out of range", name, v);
        return -1;
    }
    *value = (int)v;
    return 0;
}

static int comm_bridge_set(comm_bridge *bridge, PyObject *comm)
{
    if (comm == Py_None)
        return 0;
    if (!PyObject_HasAttrString(comm, "rank") || !PyObject_HasAttrString(comm, "size") ||
        !PyObject_HasAttrString(comm, "allreduce")) {
        PyErr_SetString(PyExc_TypeError, "Trainer comm: needs rank, size and allreduce(array) (an in-place sum)");
        return -1;
    }
    if (comm_attr_int(comm, "rank", &bridge->core.rank) < 0 || comm_attr_int(comm, "size", &bridge->core.size) < 0)
        return -1;
    PyObject *method = PyObject_GetAttrString(comm, "allreduce");
    int callable = method != NULL && PyCallable_Check(method);
    Py_XDECREF(method);
    if (!callable) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "Trainer comm: needs rank, size and allreduce(array) (an in-place sum)");
        return -1;
    }
    if (bridge->core.size < 1 || bridge->core.rank >= bridge->core.size) {
        PyErr_Format(PyExc_ValueError, "Trainer comm: rank %d of size %d", bridge->core.rank, bridge->core.size);
        return -1;
    }
    Py_INCREF(comm);
    bridge->comm = comm;
    bridge->core.ctx = bridge;
    bridge->core.allreduce_sum = comm_bridge_allreduce;
    return 0;
}

/* A failed collective: CommError(core message: the Python error), from that error. */
static PyObject *comm_bridge_raise(core_state *state, comm_bridge *bridge, const char *message)
{
    PyErr_NormalizeException(&bridge->error_type, &bridge->error, &bridge->error_traceback);
    PyObject *cause = bridge->error;
    if (cause != NULL && bridge->error_traceback != NULL)
        PyException_SetTraceback(cause, bridge->error_traceback);
    Py_XDECREF(bridge->error_type);
    Py_XDECREF(bridge->error_traceback);
    bridge->error_type = bridge->error = bridge->error_traceback = NULL;
    binding_raise(state, RG_ERR_COMM, "%s: %R", message, cause ? cause : Py_None);
    if (cause != NULL) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        PyException_SetCause(value, cause); /* steals cause */
        PyErr_Restore(type, value, traceback);
    }
    return NULL;
}

/* ------------------------------------------------------------------ Trainer type */

typedef struct {
    PyObject_HEAD
    rg_trainer *trainer;
    PyObject *model; /* the _core.Model, kept alive: the trainer borrows it */
    progress_bridge bridge;
    comm_bridge comm;
    int running;
} TrainerObject;

static int trainer_init(TrainerObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"model", "config", "train", "eval", "progress", "comm", NULL};
    PyObject *model_obj, *config_obj, *train_obj, *eval_obj = Py_None, *progress = Py_None, *comm = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|OO$O:Trainer", keywords, &model_obj, &config_obj,
                                     &train_obj, &eval_obj, &progress, &comm))
        return -1;
    if (self->trainer != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Trainer: already initialized");
        return -1;
    }
    rg_model *model = model_unwrap(model_obj, "Trainer model");
    if (model == NULL)
        return -1;
    if (progress != Py_None && !PyCallable_Check(progress)) {
        PyErr_SetString(PyExc_TypeError, "Trainer: progress must be callable or None");
        return -1;
    }
    if (comm_bridge_set(&self->comm, comm) < 0)
        return -1;
    trainer_buffers keep = {0};
    rg_trainer_config config;
    rg_train_data train, eval;
    int classifier = model->config.head != RG_HEAD_LM;
    int status_ok = binding_trainer_config(config_obj, &config, &keep) == 0 &&
                    binding_train_data(train_obj, &train, &keep, classifier, "train") == 0 &&
                    (eval_obj == Py_None || binding_train_data(eval_obj, &eval, &keep, classifier, "eval") == 0);
    if (!status_ok) {
        trainer_buffers_release(&keep);
        return -1;
    }
    if (config.orders != NULL && keep.orders_width != train.N) {
        PyErr_Format(PyExc_ValueError, "orders: %ld columns for %ld training rows", (long)keep.orders_width,
                     (long)train.N);
        trainer_buffers_release(&keep);
        return -1;
    }
    ModelObject *model_object = (ModelObject *)model_obj;
    if (model_enter(model_object) < 0) {
        trainer_buffers_release(&keep);
        return -1;
    }
    self->bridge.lm = !classifier;
    self->bridge.model = model_object;
    config.progress = binding_progress_bridge;
    config.progress_user = &self->bridge;
    config.comm = self->comm.comm != NULL ? &self->comm.core : NULL;
    char error[256] = "";
    rg_trainer *trainer = NULL;
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_trainer_init(&trainer, model, &config, &train, eval_obj == Py_None ? NULL : &eval, error,
                             sizeof(error));
    Py_END_ALLOW_THREADS
    model_leave(model_object);
    trainer_buffers_release(&keep);
    if (status != RG_OK) {
        binding_raise(binding_state_of_type(Py_TYPE(self)), status, "Trainer: %s",
                      error[0] ? error : rg_status_string(status));
        return -1;
    }
    self->trainer = trainer;
    Py_INCREF(model_obj);
    self->model = model_obj;
    if (progress != Py_None) {
        Py_INCREF(progress);
        self->bridge.callback = progress;
    }
    return 0;
}

/* mutating: run, resume, save, restore_best refuse to start inside a run's
 * callback; the read-only accessors are fine there (an update boundary). */
static int trainer_ready(TrainerObject *self, int mutating)
{
    if (self->trainer == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Trainer: not initialized");
        return -1;
    }
    if (mutating && self->running) {
        binding_raise_for(self, RG_ERR_STATE, "Trainer: a run is in progress (called from its own callback?)");
        return -1;
    }
    return 0;
}

/* Long core call on the trainer: GIL released, Ctrl-C goes to the core. */
static rg_status trainer_call(TrainerObject *self, rg_status (*call)(rg_trainer *, const char *), const char *path,
                              int *entered)
{
    ModelObject *model = (ModelObject *)self->model;
    *entered = model_enter(model) == 0;
    if (!*entered)
        return RG_OK;
    self->running = 1;
    rg_status status;
    interruptible_begin();
    Py_BEGIN_ALLOW_THREADS
    status = call(self->trainer, path);
    Py_END_ALLOW_THREADS
    interruptible_end();
    self->running = 0;
    if (!self->bridge.model_lost)
        model_leave(model);
    self->bridge.model_lost = 0;
    return status;
}

static rg_status call_run(rg_trainer *t, const char *unused) { return rg_trainer_run(t); }
static rg_status call_resume(rg_trainer *t, const char *path) { return rg_trainer_resume(t, path); }
static rg_status call_save(rg_trainer *t, const char *path) { return rg_trainer_save(t, path); }

static PyObject *trainer_run(TrainerObject *self, PyObject *unused)
{
    if (trainer_ready(self, 1) < 0)
        return NULL;
    int entered;
    rg_status status = trainer_call(self, call_run, NULL, &entered);
    if (!entered)
        return NULL;
    if (self->comm.error_type != NULL && self->bridge.error_type == NULL)
        return comm_bridge_raise(binding_state_of_type(Py_TYPE(self)), &self->comm,
                                 rg_trainer_message(self->trainer));
    return binding_finish_status(binding_state_of_type(Py_TYPE(self)), &self->bridge, status,
                                 rg_trainer_message(self->trainer));
}

static PyObject *trainer_path_method(TrainerObject *self, PyObject *path_obj,
                                     rg_status (*call)(rg_trainer *, const char *))
{
    if (trainer_ready(self, 1) < 0)
        return NULL;
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(path_obj, &path))
        return NULL;
    int entered;
    rg_status status = trainer_call(self, call, PyBytes_AS_STRING(path), &entered);
    Py_DECREF(path);
    if (!entered)
        return NULL;
    if (status == RG_OK)
        Py_RETURN_NONE;
    const char *message = rg_trainer_message(self->trainer);
    return binding_raise_for(self, status, message[0] ? message : rg_status_string(status));
}

static PyObject *trainer_resume(TrainerObject *self, PyObject *path) { return trainer_path_method(self, path, call_resume); }
static PyObject *trainer_save(TrainerObject *self, PyObject *path) { return trainer_path_method(self, path, call_save); }

static PyObject *trainer_restore_best(TrainerObject *self, PyObject *unused)
{
    if (trainer_ready(self, 1) < 0)
        return NULL;
    rg_status status = rg_trainer_restore_best(self->trainer);
    if (status != RG_OK)
        return binding_raise_for(self, status, "restore_best: no evaluated best epoch");
    Py_RETURN_NONE;
}

static PyObject *trainer_result(TrainerObject *self, PyObject *unused)
{
    if (trainer_ready(self, 0) < 0)
        return NULL;
    const rg_train_result *r = rg_trainer_result(self->trainer);
    return Py_BuildValue("{s:O,s:O,s:L,s:L,s:i,s:i,s:i,s:d,s:O,s:i,s:L,s:i,s:O,s:s,s:O,s:d}", "interrupted",
                         r->interrupted ? Py_True : Py_False, "finished", r->finished ? Py_True : Py_False,
                         "global_step", (long long)r->global_step, "total_steps", (long long)r->total_steps,
                         "num_batches", r->num_batches, "epochs_completed", r->epochs_completed, "best_epoch",
                         r->best_epoch, "best_metric", r->best_metric, "best_loaded",
                         r->best_loaded ? Py_True : Py_False, "failed_epoch", r->failed_epoch, "failed_step",
                         (long long)r->failed_step, "failed_batch", r->failed_batch, "failed_in_eval",
                         r->failed_in_eval ? Py_True : Py_False, "message", rg_trainer_message(self->trainer),
                         "frozen_cache", r->frozen_cache ? Py_True : Py_False, "frozen_cache_mib",
                         r->frozen_cache_mib);
}

static PyObject *trainer_history(TrainerObject *self, PyObject *unused)
{
    if (trainer_ready(self, 0) < 0)
        return NULL;
    int count = 0;
    const rg_train_eval *entries = rg_trainer_history(self->trainer, &count);
    PyObject *list = PyList_New(count);
    for (int i = 0; list && i < count; i++) {
        PyObject *entry = binding_eval_dict(&entries[i], self->bridge.lm);
        if (entry == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, entry);
    }
    return list;
}

static PyObject *trainer_predictions(TrainerObject *self, PyObject *unused)
{
    if (trainer_ready(self, 0) < 0)
        return NULL;
    int64_t n = 0;
    int K = 0;
    const int32_t *predictions = rg_trainer_predictions(self->trainer, &n);
    const float *logits = rg_trainer_eval_logits(self->trainer, &n, &K);
    if (predictions == NULL || logits == NULL)
        Py_RETURN_NONE;
    npy_intp dims[2] = {(npy_intp)n, K};
    PyObject *p = PyArray_SimpleNew(1, dims, NPY_INT32), *l = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (p == NULL || l == NULL) {
        Py_XDECREF(p);
        Py_XDECREF(l);
        return NULL;
    }
    memcpy(PyArray_DATA((PyArrayObject *)p), predictions, sizeof(int32_t) * (size_t)n);
    memcpy(PyArray_DATA((PyArrayObject *)l), logits, sizeof(float) * (size_t)(n * K));
    return Py_BuildValue("(NN)", p, l);
}

static PyObject *trainer_optimizer_state(TrainerObject *self, PyObject *unused)
{
    if (trainer_ready(self, 0) < 0)
        return NULL;
    const rg_adamw *opt = rg_trainer_optimizer(self->trainer);
    npy_intp n = (npy_intp)opt->state_numel;
    PyObject *m = PyArray_SimpleNew(1, &n, NPY_FLOAT32), *v = PyArray_SimpleNew(1, &n, NPY_FLOAT32);
    if (m == NULL || v == NULL) {
        Py_XDECREF(m);
        Py_XDECREF(v);
        return NULL;
    }
    memcpy(PyArray_DATA((PyArrayObject *)m), opt->m, sizeof(float) * (size_t)n);
    memcpy(PyArray_DATA((PyArrayObject *)v), opt->v, sizeof(float) * (size_t)n);
    return Py_BuildValue("{s:L,s:N,s:N,s:n}", "step", (long long)opt->step, "m", m, "v", v, "state_numel", n);
}

static PyObject *trainer_get_callback_calls(TrainerObject *self, void *unused)
{
    return PyLong_FromLongLong((long long)self->bridge.calls);
}

static int trainer_traverse(TrainerObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->model);
    Py_VISIT(self->bridge.callback);
    Py_VISIT(self->comm.comm);
    return 0;
}

static int trainer_clear(TrainerObject *self)
{
    Py_CLEAR(self->bridge.callback);
    Py_CLEAR(self->bridge.error_type);
    Py_CLEAR(self->bridge.error);
    Py_CLEAR(self->bridge.error_traceback);
    Py_CLEAR(self->comm.comm);
    Py_CLEAR(self->comm.error_type);
    Py_CLEAR(self->comm.error);
    Py_CLEAR(self->comm.error_traceback);
    return 0;
}

static void trainer_dealloc(TrainerObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    rg_trainer_free(self->trainer); /* before the model it borrows and the comm it calls */
    self->trainer = NULL;
    trainer_clear(self);
    Py_CLEAR(self->model);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef trainer_methods[] = {
    {"run", (PyCFunction)trainer_run, METH_NOARGS,
     "run(): the remaining micro-batches and epochs. KeyboardInterrupt on Ctrl-C (the trainer stays at "
     "the last completed update and run() continues it); a callback's exception is re-raised."},
    {"resume", (PyCFunction)trainer_resume, METH_O, "resume(path): load a checkpoint this trainer's run wrote."},
    {"save", (PyCFunction)trainer_save, METH_O, "save(path): write a checkpoint of the current state now."},
    {"restore_best", (PyCFunction)trainer_restore_best, METH_NOARGS, "restore_best(): the best epoch's parameters."},
    {"result", (PyCFunction)trainer_result, METH_NOARGS, "result() -> dict of rg_train_result."},
    {"history", (PyCFunction)trainer_history, METH_NOARGS, "history() -> list of the evaluated epochs."},
    {"predictions", (PyCFunction)trainer_predictions, METH_NOARGS,
     "predictions() -> (class ids (n,), logits (n, K)) of the last evaluation, or None."},
    {"optimizer_state", (PyCFunction)trainer_optimizer_state, METH_NOARGS,
     "optimizer_state() -> dict(step, m, v, state_numel), copies."},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef trainer_getset[] = {
    {"callback_calls", (getter)trainer_get_callback_calls, NULL,
     "How many times the core called back (every event, with or without a Python callback).", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot trainer_slots[] = {
    {Py_tp_doc, "Trainer(model, config, train, eval=None, progress=None, *, comm=None): a whole fine-tuning run in the core "
                "(rg_trainer.h). config: dict of rg_trainer_config fields (lr, beta1, beta2, eps, weight_decay, "
                "max_grad_norm, warmup_ratio, schedule, epochs, train_batch_size, eval_batch_size, grad_accum, "
                "trim_padding, shuffle, seed, orders, load_best_at_end, apply_freezing, trainable_blocks, "
                "head_policy, label_values, checkpoint_path, save_steps, keep_last_good, progress_every, "
                "cache_frozen, cache_frozen_max_mib, frozen_dropout); "
                "train / eval: dicts of tokens, attention_mask, token_types, targets; progress(event_dict); comm: "
                "data parallelism, an object with rank, size and allreduce(array) (an in-place sum over the "
                "ranks; rg_trainer.h), e.g. reviewgen.core.distributed.MPICommunicator."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, trainer_init},
    {Py_tp_dealloc, trainer_dealloc},
    {Py_tp_traverse, trainer_traverse},
    {Py_tp_clear, trainer_clear},
    {Py_tp_methods, trainer_methods},
    {Py_tp_getset, trainer_getset},
    {0, NULL}
};

static PyType_Spec trainer_spec = {
    .name = "reviewgen._core.Trainer",
    .basicsize = sizeof(TrainerObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = trainer_slots,
};

static PyObject *core_permutation(PyObject *module, PyObject *args)
{
    unsigned long long seed;
    long long epoch, n;
    if (!PyArg_ParseTuple(args, "KLL:permutation", &seed, &epoch, &n))
        return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "permutation: n must be >= 0");
        return NULL;
    }
    npy_intp dims = (npy_intp)n;
    PyObject *order = PyArray_SimpleNew(1, &dims, NPY_INT32);
    if (order != NULL)
        rg_trainer_permutation(seed, epoch, n, PyArray_DATA((PyArrayObject *)order));
    return order;
}

static PyMethodDef trainer_functions[] = {
    {"permutation", core_permutation, METH_VARARGS,
     "permutation(seed, epoch, n) -> int32 (n,): the core's shuffle of epoch `epoch`."},
    {NULL, NULL, 0, NULL}
};

int binding_add_trainer(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &trainer_spec, NULL);
    if (type == NULL)
        return -1;
    int result = PyModule_AddObjectRef(module, "Trainer", type);
    Py_DECREF(type);
    if (result < 0)
        return -1;
    return PyModule_AddFunctions(module, trainer_functions);
}
