/*
 * sweep.c - the hyperparameter sweep in reviewgen._core: the Sweep type over
 * rg_sweep (rg_sweep.h). One call runs every (value, sample) run not yet in
 * the journal, without the GIL; Python hears of it only through the optional
 * per-run callback and the trainer's progress callback (progress_every bounds
 * how often), each taking the GIL just for the call.
 */
#include "binding.h"

#include <string.h>

#include "rg_sweep.h"

static const char *const sweep_parameter_names[RG_SWEEP_PARAM_COUNT] = {
    "epochs", "learning_rate", "beta1", "beta2", "batch_size", "weight_decay", "warmup_ratio",
    "trainable_blocks", "grad_accum", "max_grad_norm",
};

typedef struct {
    PyObject_HEAD
    rg_sweep *sweep;
    PyObject *model;
    progress_bridge bridge;  /* the trainer's events of every run */
    PyObject *on_run;        /* or NULL */
    int64_t run_calls;
    int running;
} SweepObject;

static PyObject *run_dict(const rg_sweep_result *run, int lm)
{
    PyObject *history = PyList_New(run->n_epochs);
    for (int i = 0; history && i < run->n_epochs; i++) {
        PyObject *entry = binding_eval_dict(&run->history[i], lm);
        if (entry == NULL) {
            Py_CLEAR(history);
            break;
        }
        PyList_SET_ITEM(history, i, entry);
    }
    if (history == NULL)
        return NULL;
    return Py_BuildValue("{s:i,s:i,s:d,s:O,s:O,s:s,s:N,s:i,s:d,s:L}", "value_index", run->value_index,
                         "sample_index", run->sample_index, "value", run->value, "done", run->done ? Py_True : Py_False,
                         "from_journal", run->from_journal ? Py_True : Py_False, "status",
                         run->status == RG_OK ? "ok" : run->status == RG_ERR_NONFINITE ? "nonfinite"
                                                                                       : rg_status_string(run->status),
                         "history", history, "best_epoch", run->best_epoch, "best_metric", run->best_metric,
                         "global_step", (long long)run->global_step);
}

/* After each finished run, on the core's thread: the GIL for the call only. */
static int sweep_on_run(void *user, const rg_sweep_result *run)
{
    SweepObject *self = user;
    self->run_calls++;
    if (self->on_run == NULL)
        return 0;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *d = run_dict(run, self->bridge.lm);
    PyObject *result = d ? PyObject_CallOneArg(self->on_run, d) : NULL;
    Py_XDECREF(d);
    int stop = 0;
    if (result == NULL) {
        if (self->bridge.error_type == NULL)
            PyErr_Fetch(&self->bridge.error_type, &self->bridge.error, &self->bridge.error_traceback);
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

static int sweep_init(SweepObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"model", "config", "parameter", "values", "samples", "journal_path", "progress",
                               "on_run", NULL};
    PyObject *model_obj, *config_obj, *values_obj, *samples_obj, *journal_obj = Py_None, *progress = Py_None,
             *on_run = Py_None;
    const char *parameter;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOsOO|OOO:Sweep", keywords, &model_obj, &config_obj, &parameter,
                                     &values_obj, &samples_obj, &journal_obj, &progress, &on_run))
        return -1;
    if (self->sweep != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Sweep: already initialized");
        return -1;
    }
    rg_model *model = model_unwrap(model_obj, "Sweep model");
    if (model == NULL)
        return -1;
    if ((progress != Py_None && !PyCallable_Check(progress)) || (on_run != Py_None && !PyCallable_Check(on_run))) {
        PyErr_SetString(PyExc_TypeError, "Sweep: progress and on_run must be callables or None");
        return -1;
    }
    int param_index = -1;
    for (int i = 0; i < RG_SWEEP_PARAM_COUNT; i++)
        if (strcmp(parameter, sweep_parameter_names[i]) == 0)
            param_index = i;
    if (param_index < 0) {
        PyErr_Format(PyExc_ValueError, "Sweep: unknown parameter '%s' (epochs, learning_rate, beta1, beta2, "
                     "batch_size, weight_decay, warmup_ratio, trainable_blocks, grad_accum, max_grad_norm)", parameter);
        return -1;
    }
    PyObject *values_seq = PySequence_Fast(values_obj, "Sweep: values must be a sequence of numbers");
    PyObject *samples_seq = values_seq ? PySequence_Fast(samples_obj, "Sweep: samples must be a sequence") : NULL;
    PyObject *journal = NULL;
    double *values = NULL;
    rg_sweep_sample *samples = NULL;
    trainer_buffers *keeps = NULL;
    int result = -1;
    if (samples_seq == NULL)
        goto done;
    Py_ssize_t n_values = PySequence_Fast_GET_SIZE(values_seq), n_samples = PySequence_Fast_GET_SIZE(samples_seq);
    values = PyMem_Calloc((size_t)n_values + 1, sizeof(double));
    samples = PyMem_Calloc((size_t)n_samples + 1, sizeof(rg_sweep_sample));
    /* one buffer set for the config, and one per sample */
    keeps = PyMem_Calloc((size_t)n_samples + 1, sizeof(trainer_buffers));
    if (values == NULL || samples == NULL || keeps == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n_values; i++) {
        values[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(values_seq, i));
        if (values[i] == -1.0 && PyErr_Occurred())
            goto done;
    }
    int classifier = model->config.head != RG_HEAD_LM;
    rg_sweep_config config = {0};
    if (binding_trainer_config(config_obj, &config.base, &keeps[n_samples]) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < n_samples; i++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(samples_seq, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "Sweep: each sample is a (train, eval) pair of data dicts (eval may be None)");
            goto done;
        }
        if (binding_train_data(PyTuple_GET_ITEM(pair, 0), &samples[i].train, &keeps[i], classifier, "sample train") < 0)
            goto done;
        if (PyTuple_GET_ITEM(pair, 1) != Py_None &&
            binding_train_data(PyTuple_GET_ITEM(pair, 1), &samples[i].eval, &keeps[i], classifier, "sample eval") < 0)
            goto done;
    }
    if (journal_obj != Py_None && !PyUnicode_FSConverter(journal_obj, &journal))
        goto done;
    config.parameter = param_index;
    config.values = values;
    config.n_values = (int)n_values;
    config.journal_path = journal ? PyBytes_AS_STRING(journal) : NULL;
    config.on_run = sweep_on_run;
    config.on_run_user = self;
    self->bridge.lm = !classifier;
    self->bridge.model = (ModelObject *)model_obj;
    config.base.progress = binding_progress_bridge;
    config.base.progress_user = &self->bridge;
    if (progress != Py_None) {
        Py_INCREF(progress);
        self->bridge.callback = progress;
    }
    if (on_run != Py_None) {
        Py_INCREF(on_run);
        self->on_run = on_run;
    }
    if (model_enter((ModelObject *)model_obj) < 0)
        goto done;
    char error[256] = "";
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_sweep_init(&self->sweep, model, &config, samples, (int)n_samples, error, sizeof(error));
    Py_END_ALLOW_THREADS
    model_leave((ModelObject *)model_obj);
    if (status != RG_OK) {
        self->sweep = NULL;
        binding_raise(binding_state_of_type(Py_TYPE(self)), status, "Sweep: %s",
                      error[0] ? error : rg_status_string(status));
        goto done;
    }
    Py_INCREF(model_obj);
    self->model = model_obj;
    result = 0;
done:
    for (Py_ssize_t i = 0; keeps && i <= (samples_seq ? PySequence_Fast_GET_SIZE(samples_seq) : -1); i++)
        trainer_buffers_release(&keeps[i]);
    PyMem_Free(keeps);
    PyMem_Free(values);
    PyMem_Free(samples);
    Py_XDECREF(journal);
    Py_XDECREF(values_seq);
    Py_XDECREF(samples_seq);
    return result;
}

static int sweep_ready(SweepObject *self)
{
    if (self->sweep == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Sweep: not initialized");
        return -1;
    }
    if (self->running) {
        binding_raise_for(self, RG_ERR_STATE, "Sweep: a run is in progress (called from its own callback?)");
        return -1;
    }
    return 0;
}

static PyObject *sweep_run(SweepObject *self, PyObject *unused)
{
    if (sweep_ready(self) < 0)
        return NULL;
    ModelObject *model = (ModelObject *)self->model;
    if (model_enter(model) < 0)
        return NULL;
    self->running = 1;
    rg_status status;
    interruptible_begin();
    Py_BEGIN_ALLOW_THREADS
    status = rg_sweep_run(self->sweep);
    Py_END_ALLOW_THREADS
    interruptible_end();
    self->running = 0;
    if (!self->bridge.model_lost)
        model_leave(model);
    self->bridge.model_lost = 0;
    return binding_finish_status(binding_state_of_type(Py_TYPE(self)), &self->bridge, status,
                                 rg_sweep_message(self->sweep));
}

static PyObject *sweep_runs(SweepObject *self, PyObject *unused)
{
    if (sweep_ready(self) < 0)
        return NULL;
    int count = 0;
    const rg_sweep_result *runs = rg_sweep_runs(self->sweep, &count);
    PyObject *list = PyList_New(count);
    for (int i = 0; list && i < count; i++) {
        PyObject *d = run_dict(&runs[i], self->bridge.lm);
        if (d == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, d);
    }
    return list;
}

static PyObject *sweep_get_callback_calls(SweepObject *self, void *unused)
{
    return PyLong_FromLongLong((long long)(self->bridge.calls + self->run_calls));
}

static int sweep_traverse(SweepObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->model);
    Py_VISIT(self->bridge.callback);
    Py_VISIT(self->on_run);
    return 0;
}

static int sweep_clear(SweepObject *self)
{
    Py_CLEAR(self->bridge.callback);
    Py_CLEAR(self->on_run);
    Py_CLEAR(self->bridge.error_type);
    Py_CLEAR(self->bridge.error);
    Py_CLEAR(self->bridge.error_traceback);
    return 0;
}

static void sweep_dealloc(SweepObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    rg_sweep_free(self->sweep); /* releases the journal's lock; before the model it borrows */
    self->sweep = NULL;
    sweep_clear(self);
    Py_CLEAR(self->model);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *sweep_close(SweepObject *self, PyObject *unused)
{
    if (self->running)
        return binding_raise_for(self, RG_ERR_STATE, "Sweep: cannot close during a run");
    rg_sweep_free(self->sweep);
    self->sweep = NULL;
    Py_RETURN_NONE;
}

/* A history entry of binding_eval_dict back into an rg_train_eval. */
static int eval_from_dict(PyObject *d, rg_train_eval *e)
{
    memset(e, 0, sizeof(*e));
    if (!PyDict_Check(d)) {
        PyErr_SetString(PyExc_TypeError, "record: history entries must be dicts");
        return -1;
    }
    struct { const char *key; double *slot; int *flag; } fields[] = {
        {"train_loss", &e->train_loss, NULL},        {"eval_loss", &e->eval_loss, &e->has_eval},
        {"eval_perplexity", &e->eval_perplexity, NULL}, {"eval_accuracy", &e->accuracy, &e->has_metrics},
        {"eval_macro_f1", &e->macro_f1, NULL},       {"eval_near_accuracy", &e->near_accuracy, NULL},
        {"eval_near_macro_f1", &e->near_macro_f1, NULL},
    };
    PyObject *item = PyDict_GetItemString(d, "epoch"); /* borrowed */
    PyObject *step = PyDict_GetItemString(d, "step");
    if (item == NULL || step == NULL) {
        PyErr_SetString(PyExc_ValueError, "record: a history entry needs epoch and step");
        return -1;
    }
    e->epoch = (int)PyLong_AsLong(item);
    e->step = PyLong_AsLongLong(step);
    if (PyErr_Occurred())
        return -1;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        item = PyDict_GetItemString(d, fields[i].key);
        if (item == NULL)
            continue;
        *fields[i].slot = PyFloat_AsDouble(item);
        if (*fields[i].slot == -1.0 && PyErr_Occurred())
            return -1;
        if (fields[i].flag)
            *fields[i].flag = 1;
    }
    return 0;
}

static PyObject *sweep_record(SweepObject *self, PyObject *run_obj)
{
    if (sweep_ready(self) < 0)
        return NULL;
    if (!PyDict_Check(run_obj)) {
        PyErr_SetString(PyExc_TypeError, "record: expected a run dict (as runs() gives)");
        return NULL;
    }
    rg_sweep_result run;
    memset(&run, 0, sizeof(run));
    PyObject *vi = PyDict_GetItemString(run_obj, "value_index"), *si = PyDict_GetItemString(run_obj, "sample_index");
    PyObject *value = PyDict_GetItemString(run_obj, "value"), *status = PyDict_GetItemString(run_obj, "status");
    PyObject *history = PyDict_GetItemString(run_obj, "history");
    PyObject *best = PyDict_GetItemString(run_obj, "best_epoch"), *metric = PyDict_GetItemString(run_obj, "best_metric");
    PyObject *step = PyDict_GetItemString(run_obj, "global_step");
    if (!vi || !si || !value || !status || !history || !best || !metric || !step || !PyList_Check(history) ||
        !PyUnicode_Check(status)) {
        PyErr_SetString(PyExc_ValueError, "record: a run dict needs value_index, sample_index, value, status, "
                                          "history (a list), best_epoch, best_metric and global_step");
        return NULL;
    }
    const char *status_name = PyUnicode_AsUTF8(status);
    run.value_index = (int)PyLong_AsLong(vi);
    run.sample_index = (int)PyLong_AsLong(si);
    run.value = PyFloat_AsDouble(value);
    run.best_epoch = (int)PyLong_AsLong(best);
    run.best_metric = PyFloat_AsDouble(metric);
    run.global_step = PyLong_AsLongLong(step);
    if (status_name == NULL || PyErr_Occurred())
        return NULL;
    if (strcmp(status_name, "ok") == 0)
        run.status = RG_OK;
    else if (strcmp(status_name, "nonfinite") == 0)
        run.status = RG_ERR_NONFINITE;
    else
        return binding_raise_for(self, RG_ERR_INVALID_ARG, "record: status must be 'ok' or 'nonfinite'");
    Py_ssize_t n = PyList_GET_SIZE(history);
    if (n > INT32_MAX / 2)
        return binding_raise_for(self, RG_ERR_INVALID_ARG, "record: too many epochs");
    run.n_epochs = (int)n;
    run.history = PyMem_Calloc((size_t)(n > 0 ? n : 1), sizeof(rg_train_eval));
    if (run.history == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++)
        if (eval_from_dict(PyList_GET_ITEM(history, i), &run.history[i]) < 0) {
            PyMem_Free(run.history);
            return NULL;
        }
    rg_status result = rg_sweep_record(self->sweep, &run);
    PyMem_Free(run.history);
    if (result != RG_OK)
        return binding_raise_for(self, result, rg_sweep_message(self->sweep)[0] ? rg_sweep_message(self->sweep)
                                                                                 : rg_status_string(result));
    Py_RETURN_NONE;
}

static PyMethodDef sweep_methods[] = {
    {"record", (PyCFunction)sweep_record, METH_O,
     "record(run): journal a run dict computed elsewhere (a one-run Sweep of the same value and sample, e.g. "
     "on a Ray worker) as that run of this sweep (rg_sweep_record)."},
    {"run", (PyCFunction)sweep_run, METH_NOARGS,
     "run(): every run not done yet. KeyboardInterrupt on Ctrl-C (the interrupted run is not journaled)."},
    {"runs", (PyCFunction)sweep_runs, METH_NOARGS, "runs() -> list of run dicts, value-major."},
    {"close", (PyCFunction)sweep_close, METH_NOARGS, "close(): free the sweep and release its journal now."},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef sweep_getset[] = {
    {"callback_calls", (getter)sweep_get_callback_calls, NULL,
     "How many times the core called back (trainer events and finished runs).", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot sweep_slots[] = {
    {Py_tp_doc, "Sweep(model, config, parameter, values, samples, journal_path=None, progress=None, on_run=None): "
                "rg_sweep.h. config: the Trainer's config dict (the base of every run); samples: list of "
                "(train, eval) data dicts; parameter: epochs, learning_rate, beta1, beta2, batch_size, "
                "weight_decay, warmup_ratio, trainable_blocks, grad_accum or max_grad_norm."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, sweep_init},
    {Py_tp_dealloc, sweep_dealloc},
    {Py_tp_traverse, sweep_traverse},
    {Py_tp_clear, sweep_clear},
    {Py_tp_methods, sweep_methods},
    {Py_tp_getset, sweep_getset},
    {0, NULL}
};

static PyType_Spec sweep_spec = {
    .name = "reviewgen._core.Sweep",
    .basicsize = sizeof(SweepObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = sweep_slots,
};

int binding_add_sweep(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &sweep_spec, NULL);
    if (type == NULL)
        return -1;
    int result = PyModule_AddObjectRef(module, "Sweep", type);
    Py_DECREF(type);
    return result;
}
