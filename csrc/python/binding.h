/*
 * binding.h - what the files of the Python binding (reviewgen._core) share.
 *
 * One file per area, each adding its functions and types to the module from
 * core_exec (module.c):
 *   module.c    module state, the status -> exception mapping, array helpers
 *   cpu.c       which instruction set the CPU ops run with
 *   cuda.c      build information and the CUDA checks
 *   metrics.c   classification metrics and perplexity
 *   model.c     the Model type: config, parameter table, forward, backward
 *   generate.c  the Model's key/value-cache methods and sampling
 *   train.c     the AdamW optimizer over a model's parameter block
 *   trainer.c   a whole fine-tuning run (rg_trainer) and the conversions sweep.c shares
 *   sweep.c     the hyperparameter sweep (rg_sweep)
 *   weights.c   llama.cpp's block formats (Q4_0, Q4_1, Q8_0) read as float32
 *
 * Conventions: parse arguments, convert with rg_array_in, release the GIL only
 * around the core call, clean up through one `error:`/`done:` label, and raise
 * every core status through binding_raise.
 */
#ifndef REVIEWGEN_BINDING_H
#define REVIEWGEN_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
/* One NumPy C-API table for the whole extension: module.c imports it, the
 * other files only use it. */
#define PY_ARRAY_UNIQUE_SYMBOL reviewgen_core_ARRAY_API
#ifndef BINDING_IMPORTS_NUMPY
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "rg_common.h"
#include "rg_model.h"
#include "rg_trainer.h"

typedef struct {
    PyObject *core_error;                    /* base class of every core exception */
    PyObject *status_error[RG_STATUS_COUNT]; /* one class per status (NULL for RG_OK) */
} core_state;

extern struct PyModuleDef binding_module_def;

core_state *binding_state_of_module(PyObject *module);
/* Module state from a heap type defined by this module (methods of our objects). */
core_state *binding_state_of_type(PyTypeObject *type);

/* THE mapping from a core status to a Python exception: the status' class
 * (KeyboardInterrupt for RG_ERR_INTERRUPTED, MemoryError for RG_ERR_NOMEM)
 * with a printf-style message. Returns NULL so callers can return it. */
PyObject *binding_raise(core_state *state, rg_status status, const char *format, ...);
/* "what: <the status' description>" */
#define binding_raise_status(state, status, what) \
    binding_raise((state), (status), "%s: %s", (what), rg_status_string(status))
/* The same for a method of one of our objects. */
#define binding_raise_for(self, status, message) \
    binding_raise(binding_state_of_type(Py_TYPE(self)), (status), "%s", (message))

/* `obj` as an aligned C-contiguous array of `typenum` (int32 or float32),
 * copying only where needed; a TypeError/ValueError names the argument.
 * int32 refuses values that do not fit. `ndim` < 0 accepts any. */
PyArrayObject *rg_array_in(PyObject *obj, int typenum, int ndim, const char *name);
/* A writable C-contiguous output array the caller allocated (no copy allowed). */
PyArrayObject *rg_array_out(PyObject *obj, int typenum, const char *name);

/* Ctrl-C inside a long core call asks the core to stop at its next layer
 * boundary (module.c). Call with the GIL held, around the GIL-free call. */
void interruptible_begin(void);
void interruptible_end(void);

/* The Model object (model.c), for generate.c and train.c. */
typedef struct {
    PyObject_HEAD
    rg_model *model; /* its busy flag (rg_model_try_acquire) serialises calls from threads */
} ModelObject;

/* The rg_model inside a _core.Model, or NULL with a TypeError naming `what`. */
rg_model *model_unwrap(PyObject *obj, const char *what);
/* Takes the model's busy flag; -1 with StateError when another call (from
 * any thread) holds it. Every method, getters included, enters and leaves. */
int model_enter(ModelObject *self);
void model_leave(ModelObject *self);
PyArrayObject *model_int_array(PyObject *self, PyObject *obj, int ndim, const char *name);

/* Generation methods of the Model type (generate.c), listed in model.c's method table. */
PyObject *model_reset_cache(ModelObject *self, PyObject *args, PyObject *kwargs);
PyObject *model_forward_logits(ModelObject *self, PyObject *args, PyObject *kwargs);
PyObject *model_decode_step(ModelObject *self, PyObject *args, PyObject *kwargs);
PyObject *model_cache_info(ModelObject *self, PyObject *unused);

/* Each area adds its functions and types to the module; 0 or -1. */
int binding_add_cpu(PyObject *module);
int binding_add_cuda(PyObject *module);
int binding_add_metrics(PyObject *module);
int binding_add_model(PyObject *module);
int binding_add_generate(PyObject *module);
int binding_add_train(PyObject *module);
int binding_add_trainer(PyObject *module);
int binding_add_sweep(PyObject *module);
int binding_add_weights(PyObject *module);

/* A (rows, bytes) uint8 array of llama.cpp blocks of type qtype as a core
 * source; -1 with an exception naming `what` when it is not one. */
struct rg_tensor_source;
int binding_block_source(PyArrayObject *raw, const char *qtype, const char *what, struct rg_tensor_source *out);

/* Python objects that back a trainer config / data set until rg_*_init has
 * copied them (trainer.c); release with trainer_buffers_release. */
typedef struct {
    PyArrayObject *arrays[64];
    PyObject *checkpoint_path; /* bytes */
    npy_intp orders_width;
    npy_intp n_label_values;
} trainer_buffers;
void trainer_buffers_release(trainer_buffers *keep);
/* A dict of rg_trainer_config fields (names as in rg_trainer.h; adamw's
 * fields flat: lr, beta1, ...; schedule and head_policy by name) on top of
 * rg_trainer_config_default(). 0 or -1 with an exception. */
int binding_trainer_config(PyObject *dict, rg_trainer_config *config, trainer_buffers *keep);
/* A dict of tokens, attention_mask, token_types, targets (int32 arrays). */
int binding_train_data(PyObject *dict, rg_train_data *data, trainer_buffers *keep, int classifier,
                       const char *what);
/* A history entry as the dict training.py's TrainResult.history holds. */
PyObject *binding_eval_dict(const rg_train_eval *entry, int lm);

/* The progress callback of a core run: called on the core's thread, it takes
 * the GIL only for the Python call; an exception stops the run and is kept
 * (error_*) to be raised by binding_finish_status once the call is back. */
typedef struct {
    PyObject *callback; /* or NULL: events are only counted */
    PyObject *error_type, *error, *error_traceback;
    ModelObject *model; /* marked not busy during the callback */
    int model_lost;     /* the model could not be taken back after the callback: not ours to release */
    int lm;
    int64_t calls;
} progress_bridge;
int binding_progress_bridge(void *user, const rg_train_event *event);
PyObject *binding_finish_status(core_state *state, progress_bridge *bridge, rg_status status,
                                const char *message);

#endif /* REVIEWGEN_BINDING_H */
