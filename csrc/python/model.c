/*
 * model.c - the Model type of reviewgen._core: _core.Model(config: dict, *,
 * initialize=True), the generic transformer of rg_model.h. Arrays handed out by .parameters /
 * .gradients (compact with LoRA: param_table()'s grad_offset says where) are views whose base is the Model, so the model outlives them;
 * untying the head never moves the blocks. The key/value-cache methods live in
 * generate.c.
 */
#include "binding.h"

#include <math.h>

#include "rg_params.h"
#include "rg_gemm_bf16.h"
#include <string.h>

static const char *const model_norm_names[] = {"layernorm", "rmsnorm", NULL};
static const char *const model_position_names[] = {"learned", "rope", NULL};
static const char *const model_activation_names[] = {"gelu_tanh", "gelu_erf", "swiglu", NULL};
static const char *const model_head_names[] = {"lm", "cls_distilbert", "cls_bert", NULL};
static const char *const model_policy_names[] = {"frozen", "train", "untie", NULL};

/* THE list of model configuration fields: the name, kind and default of each
 * member of rg_model_config. reviewgen.core.models builds its ModelConfig
 * dataclass from it (config_fields()), so a field is added here and nowhere
 * else in the binding or in Python. REQUIRED marks fields without a default;
 * a choice's default is its index. */
typedef enum { FIELD_INT, FIELD_FLAG, FIELD_FLOAT, FIELD_CHOICE } model_field_kind;
#define REQUIRED NAN
#define FIELD(member, kind, choices, fallback, doc) \
    {#member, kind, offsetof(rg_model_config, member), choices, fallback, doc}
static const struct {
    const char *name;
    model_field_kind kind;
    size_t offset;
    const char *const *choices;
    double fallback;
    const char *doc;
} model_config_fields[] = {
    FIELD(vocab_size, FIELD_INT, NULL, REQUIRED, "V: token embeddings (LM head rows)"),
    FIELD(n_positions, FIELD_INT, NULL, REQUIRED, "P: the longest sequence"),
    FIELD(n_layer, FIELD_INT, NULL, REQUIRED, "L: transformer blocks"),
    FIELD(n_head, FIELD_INT, NULL, REQUIRED, "NH: attention heads"),
    FIELD(n_kv_head, FIELD_INT, NULL, 0, "NKV: key/value heads, divides NH (0: NH)"),
    FIELD(head_dim, FIELD_INT, NULL, 0, "HS: width of one head (0: n_embd / n_head)"),
    FIELD(n_embd, FIELD_INT, NULL, REQUIRED, "C: the residual stream's width"),
    FIELD(n_inner, FIELD_INT, NULL, 0, "F: MLP width (0: 4 * n_embd)"),
    FIELD(type_vocab_size, FIELD_INT, NULL, 0, "token types (BERT; 0: none)"),
    FIELD(norm, FIELD_CHOICE, model_norm_names, 0, "layernorm or rmsnorm"),
    FIELD(norm_eps, FIELD_FLOAT, NULL, 1e-5, "epsilon of every norm"),
    FIELD(pre_norm, FIELD_FLAG, NULL, 1, "norm before attention/MLP (else after each residual add)"),
    FIELD(embed_norm, FIELD_FLAG, NULL, 0, "LayerNorm right after the embeddings"),
    FIELD(final_norm, FIELD_FLAG, NULL, 1, "norm after the last block"),
    FIELD(position, FIELD_CHOICE, model_position_names, 0, "learned or rope"),
    FIELD(rope_theta, FIELD_FLOAT, NULL, 10000.0, "rotary base"),
    FIELD(activation, FIELD_CHOICE, model_activation_names, 0, "gelu_tanh, gelu_erf or swiglu"),
    FIELD(causal, FIELD_FLAG, NULL, 1, "causal attention mask"),
    FIELD(bias, FIELD_FLAG, NULL, 1, "biases on every linear layer"),
    FIELD(head, FIELD_CHOICE, model_head_names, 0, "lm, cls_distilbert or cls_bert"),
    FIELD(tie_word_embeddings, FIELD_FLAG, NULL, 1, "LM head reuses wte"),
    FIELD(num_labels, FIELD_INT, NULL, 0, "K: classes of a classification head"),
    FIELD(embd_pdrop, FIELD_FLOAT, NULL, 0.0, "dropout after the embeddings"),
    FIELD(resid_pdrop, FIELD_FLOAT, NULL, 0.0, "dropout before each residual add"),
    FIELD(attn_pdrop, FIELD_FLOAT, NULL, 0.0, "dropout on the attention weights"),
    FIELD(cls_pdrop, FIELD_FLOAT, NULL, 0.0, "dropout before the classifier"),
    FIELD(lora_rank, FIELD_INT, NULL, 0, "R: rank of the LoRA adapters (0: none)"),
    FIELD(lora_alpha, FIELD_FLOAT, NULL, 8.0, "adapters' output scaled by lora_alpha / lora_rank"),
    FIELD(lora_dropout, FIELD_FLOAT, NULL, 0.0, "dropout of each adapter's input, in training"),
    FIELD(lora_targets, FIELD_INT, NULL, 0, "bitmask of adapted linear layers (lora_sites())"),
};
#undef FIELD
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
        if (model_config_fields[i].kind == FIELD_INT || model_config_fields[i].kind == FIELD_FLAG) {
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
        if (model_config_fields[i].kind == FIELD_INT || model_config_fields[i].kind == FIELD_FLAG)
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

static void model_dealloc(ModelObject *self);

/* The rg_model inside a _core.Model, for the other sections of this file (the
 * trainer hands it to the optimizer); NULL with a TypeError naming `what`
 * for any other object. Only a _core.Model has model_dealloc as destructor. */
rg_model *model_unwrap(PyObject *obj, const char *what)
{
    if (obj == NULL || Py_TYPE(obj)->tp_dealloc != (destructor)model_dealloc) {
        PyErr_Format(PyExc_TypeError, "%s: expected a reviewgen._core.Model", what);
        return NULL;
    }
    return ((ModelObject *)obj)->model;
}

int model_enter(ModelObject *self)
{
    if (rg_model_try_acquire(self->model) != RG_OK) {
        binding_raise_for(self, RG_ERR_STATE, "Model: another call on this model is running (from another thread?)");
        return -1;
    }
    return 0;
}

void model_leave(ModelObject *self)
{
    rg_model_release(self->model);
}

static PyObject *model_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"config", "initialize", NULL};
    PyObject *dict;
    int initialize = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$p:Model", keywords, &dict, &initialize))
        return NULL;
    rg_model_config config;
    if (model_config_from_dict(dict, &config) < 0)
        return NULL;
    char refused[256];
    rg_status checked = rg_model_config_check(&config, refused, sizeof(refused));
    if (checked != RG_OK)
        return binding_raise_status(binding_state_of_type(type), checked, refused);
    ModelObject *self = (ModelObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = initialize ? rg_model_init(&self->model, &config) : rg_model_init_blank(&self->model, &config);
    Py_END_ALLOW_THREADS
    if (status != RG_OK) {
        Py_DECREF(self);
        return binding_raise_status(binding_state_of_type(type), status, "Model(config): the configuration was refused");
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
static PyObject *model_block_view(ModelObject *self, float *data, size_t numel, int writable)
{
    npy_intp n = (npy_intp)numel;
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
    return model_block_view(self, self->model->params, self->model->table.total, 1);
}

static PyObject *model_get_gradients(ModelObject *self, void *closure)
{
    /* with LoRA the gradient block is compact: only the tensors that may train */
    const rg_model *m = self->model; /* without LoRA: the parameter block's layout */
    return model_block_view(self, m->grads, m->table.compact_grads ? m->grads_total : m->table.total, 1);
}

static PyObject *model_get_config(ModelObject *self, void *closure)
{
    return model_config_to_dict(&self->model->config);
}

static PyObject *model_get_trainable(ModelObject *self, void *closure)
{
    if (model_enter(self) < 0)
        return NULL;
    PyObject *result = Py_BuildValue("(is)", self->model->n_trainable_blocks,
                                     model_policy_names[self->model->head_policy]);
    model_leave(self);
    return result;
}

static PyObject *model_get_activation_floats(ModelObject *self, void *closure)
{
    return PyLong_FromSize_t(self->model->acts_capacity);
}

static PyObject *model_param_table_locked(ModelObject *self);

static PyObject *model_param_table(ModelObject *self, PyObject *unused)
{
    if (model_enter(self) < 0)
        return NULL;
    PyObject *result = model_param_table_locked(self);
    model_leave(self);
    return result;
}

static PyObject *model_param_table_locked(ModelObject *self)
{
    const rg_param_table *table = &self->model->table;
    PyObject *list = PyList_New(table->count);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < table->count; i++) {
        const rg_param_info *info = &table->tensors[i];
        PyObject *shape = info->ndim == 2 ? Py_BuildValue("(LL)", (long long)info->shape[0], (long long)info->shape[1])
                                          : Py_BuildValue("(L)", (long long)info->shape[0]);
        const size_t at = rg_param_grad_offset(table, info);
        PyObject *grad_offset = at == SIZE_MAX ? Py_NewRef(Py_None) : PyLong_FromSize_t(at);
        PyObject *entry = shape && grad_offset
                              ? Py_BuildValue("{s:s,s:n,s:n,s:N,s:i,s:O,s:O,s:N}", "name", info->name,
                                              "offset", (Py_ssize_t)info->offset, "numel", (Py_ssize_t)info->numel,
                                              "shape", shape, "layer", info->layer,
                                              "decay", info->decay ? Py_True : Py_False,
                                              "trainable", info->trainable ? Py_True : Py_False,
                                              "grad_offset", grad_offset)
                              : NULL;
        if (shape == NULL || grad_offset == NULL) { /* Py_BuildValue (N) was not called */
            Py_XDECREF(shape);
            Py_XDECREF(grad_offset);
        }
        if (entry == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, entry);
    }
    return list;
}

/* An int32 array of exactly `ndim` dims, or NULL with an exception naming it. */
PyArrayObject *model_int_array(PyObject *self, PyObject *obj, int ndim, const char *name)
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
    binding_raise_for(self, RG_ERR_LABEL_RANGE, message);
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
        binding_raise_for(self, RG_ERR_SHAPE,
                            classifier ? "forward: attention_mask and token_types must be (B, T) like tokens, targets (B,)"
                                       : "forward: attention_mask, token_types and targets must be (B, T) like tokens");
        goto done;
    }
    if (B > INT32_MAX || T > c->n_positions) {
        char message[128];
        PyOS_snprintf(message, sizeof(message), "forward: %ld tokens per row, the model takes at most %d",
                      (long)T, c->n_positions);
        binding_raise_for(self, RG_ERR_SHAPE, message);
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
    model_leave(self);
    if (status == RG_ERR_LABEL_RANGE) {
        model_name_range_error((PyObject *)self, tokens, types);
        goto done;
    }
    if (status != RG_OK) {
        binding_raise_status(binding_state_of_type(Py_TYPE(self)), status, "forward");
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

static PyObject *model_logits_locked(ModelObject *self);

/* The copy is made while the flag is held: a forward on another thread would
 * otherwise reallocate the activations under the memcpy. */
static PyObject *model_logits(ModelObject *self, PyObject *unused)
{
    if (model_enter(self) < 0)
        return NULL;
    PyObject *result = model_logits_locked(self);
    model_leave(self);
    return result;
}

static PyObject *model_logits_locked(ModelObject *self)
{
    int rows, cols;
    const float *logits = rg_model_logits(self->model, &rows, &cols);
    if (logits == NULL)
        return binding_raise_for(self, RG_ERR_STATE,
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
    model_leave(self);
    if (status == RG_ERR_STATE)
        return binding_raise_for(self, status,
                                   "backward: needs a forward pass with targets first (one backward per forward, "
                                   "and set_trainable must not be called in between)");
    if (status != RG_OK)
        return binding_raise_status(binding_state_of_type(Py_TYPE(self)), status, "backward");
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
        return binding_raise_for(self, RG_ERR_INVALID_ARG,
                                   "set_trainable: head_policy must be 'frozen', 'train' or 'untie'");
    if (model_enter(self) < 0)
        return NULL;
    rg_status status = rg_model_set_trainable(self->model, k, (rg_head_policy)policy);
    model_leave(self);
    if (status == RG_ERR_UNSUPPORTED)
        return binding_raise_for(self, status, "set_trainable: 'untie' needs a language-model head (and no LoRA adapters)");
    if (status != RG_OK)
        return binding_raise_status(binding_state_of_type(Py_TYPE(self)), status, "set_trainable");
    Py_RETURN_NONE;
}

/* set_precision("bf16" | "fp32"): the op table later calls run on (rg_gemm_bf16.h). */
static PyObject *model_set_precision(ModelObject *self, PyObject *arg)
{
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (name == NULL || (strcmp(name, "bf16") != 0 && strcmp(name, "fp32") != 0)) {
        PyErr_Clear();
        return binding_raise_for(self, RG_ERR_INVALID_ARG, "set_precision: precision must be 'bf16' or 'fp32'");
    }
    const rg_ops_table *ops = strcmp(name, "bf16") == 0 ? rg_ops_cpu_bf16() : rg_ops_cpu();
    if (ops == NULL)
        return binding_raise_for(self, RG_ERR_UNSUPPORTED,
                                 "set_precision: bf16 needs a CPU with AVX512-BF16 (and AVX512F/BW/VL); this one "
                                 "has none, train in fp32");
    if (model_enter(self) < 0)
        return NULL;
    rg_status status = rg_model_set_ops(self->model, ops); /* drops a forward awaiting its backward */
    model_leave(self);
    if (status != RG_OK)
        return binding_raise_status(binding_state_of_type(Py_TYPE(self)), status, "set_precision");
    Py_RETURN_NONE;
}

static PyObject *model_get_precision(ModelObject *self, void *closure)
{
    const rg_ops_table *bf16 = rg_ops_cpu_bf16(); /* NULL without AVX512-BF16 */
    return PyUnicode_FromString(bf16 != NULL && self->model->ops == bf16 ? "bf16" : "fp32");
}

/* merge_lora() / unmerge_lora(): fold the adapters into the base weights and back. */
static PyObject *model_lora_fold(ModelObject *self, int merge)
{
    if (model_enter(self) < 0)
        return NULL;
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = merge ? rg_model_lora_merge(self->model) : rg_model_lora_unmerge(self->model);
    Py_END_ALLOW_THREADS
    model_leave(self);
    if (status == RG_ERR_UNSUPPORTED)
        return binding_raise_for(self, status, "the model has no LoRA adapters");
    if (status == RG_ERR_STATE)
        return binding_raise_for(self, status, merge ? "the adapters are merged already" : "the adapters are not merged");
    if (status != RG_OK)
        return binding_raise_status(binding_state_of_type(Py_TYPE(self)), status, "lora merge");
    Py_RETURN_NONE;
}

static PyObject *model_merge_lora(ModelObject *self, PyObject *unused) { return model_lora_fold(self, 1); }
static PyObject *model_unmerge_lora(ModelObject *self, PyObject *unused) { return model_lora_fold(self, 0); }

static PyObject *model_get_lora_merged(ModelObject *self, void *closure)
{
    return PyBool_FromLong(self->model->lora_merged);
}

/* _core.lora_sites(): name, bit and nothing else; the shapes come from lora_site(). */
static PyObject *core_lora_sites(PyObject *module, PyObject *unused)
{
    static const char *const names[RG_LORA_SITES] = {"q", "k", "v", "qkv", "o", "fc", "gate", "up", "fc2"};
    PyObject *dict = PyDict_New();
    for (int site = 0; dict != NULL && site < RG_LORA_SITES; site++) {
        PyObject *bit = PyLong_FromLong(RG_LORA_BIT(site));
        if (bit == NULL || PyDict_SetItemString(dict, names[site], bit) < 0) {
            Py_XDECREF(bit);
            Py_CLEAR(dict);
            break;
        }
        Py_DECREF(bit);
    }
    return dict;
}

static PyObject *model_zero_grad(ModelObject *self, PyObject *unused)
{
    if (model_enter(self) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rg_model_zero_grad(self->model);
    Py_END_ALLOW_THREADS
    model_leave(self);
    Py_RETURN_NONE;
}

/* _core.config_fields(): the field list above for Python. */
static PyObject *core_config_fields(PyObject *module, PyObject *unused)
{
    static const char *const kinds[] = {"int", "flag", "float", "choice"};
    PyObject *list = PyList_New(MODEL_CONFIG_FIELD_COUNT);
    for (size_t i = 0; list != NULL && i < MODEL_CONFIG_FIELD_COUNT; i++) {
        const char *const *choices = model_config_fields[i].choices;
        PyObject *names = PyTuple_New(0);
        for (int c = 0; names != NULL && choices != NULL && choices[c] != NULL; c++) {
            PyObject *name = PyUnicode_FromString(choices[c]);
            if (name == NULL || _PyTuple_Resize(&names, c + 1) < 0) {
                Py_XDECREF(name);
                Py_CLEAR(names);
                break;
            }
            PyTuple_SET_ITEM(names, c, name);
        }
        double fallback = model_config_fields[i].fallback;
        PyObject *default_value;
        if (isnan(fallback))
            default_value = Py_NewRef(Py_None);
        else if (model_config_fields[i].kind == FIELD_CHOICE)
            default_value = PyUnicode_FromString(choices[(int)fallback]);
        else if (model_config_fields[i].kind == FIELD_FLAG)
            default_value = PyBool_FromLong(fallback != 0.0);
        else if (model_config_fields[i].kind == FIELD_INT)
            default_value = PyLong_FromDouble(fallback);
        else
            default_value = PyFloat_FromDouble(fallback);
        PyObject *entry = names && default_value
            ? Py_BuildValue("{s:s,s:s,s:O,s:O,s:O,s:s}", "name", model_config_fields[i].name,
                            "kind", kinds[model_config_fields[i].kind], "choices", names,
                            "required", isnan(fallback) ? Py_True : Py_False, "default", default_value,
                            "doc", model_config_fields[i].doc)
            : NULL;
        Py_XDECREF(names);
        Py_XDECREF(default_value);
        if (entry == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, entry);
    }
    return list;
}

/* The rg_dtype of a checkpoint array, or -1 with a TypeError. */
static int model_source_dtype(PyArrayObject *values, int bfloat16, const char *name)
{
    int type = PyArray_TYPE(values);
    if (bfloat16 && type == NPY_UINT16)
        return RG_DTYPE_BF16;
    if (!bfloat16 && type == NPY_FLOAT32)
        return RG_DTYPE_F32;
    if (!bfloat16 && type == NPY_FLOAT16)
        return RG_DTYPE_F16;
    if (!bfloat16 && type == NPY_FLOAT64)
        return RG_DTYPE_F64;
    PyErr_Format(PyExc_TypeError, "set_param('%s'): expected float32, float16 or float64 values "
                 "(or uint16 holding bfloat16 with bfloat16=True), got dtype %S", name,
                 (PyObject *)PyArray_DESCR(values));
    return -1;
}

static PyObject *model_set_param(ModelObject *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"name", "values", "row_offset", "bfloat16", "quantized", NULL};
    const char *name;
    PyObject *values_obj;
    Py_ssize_t row_offset = 0;
    int bfloat16 = 0;
    const char *quantized = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sO|npz:set_param", keywords, &name, &values_obj,
                                     &row_offset, &bfloat16, &quantized))
        return NULL;
    const rg_param_info *info = rg_model_find_param(self->model, name);
    if (info == NULL)
        return PyErr_Format(PyExc_KeyError, "set_param: the model has no parameter '%s' "
                            "(param_table() lists them)", name);
    /* Any strides, no copy, unless the array is misaligned. */
    PyArrayObject *values = (PyArrayObject *)PyArray_FROM_OF(values_obj, NPY_ARRAY_ALIGNED);
    if (values == NULL)
        return NULL;
    PyObject *result = NULL;
    rg_tensor_source source;
    if (quantized != NULL) {
        char what[96];
        snprintf(what, sizeof(what), "set_param('%s')", name);
        if (binding_block_source(values, quantized, what, &source) < 0)
            goto done;
        if (info->ndim != 2) {
            PyErr_Format(PyExc_ValueError, "set_param('%s'): block formats hold 2-D tensors only", name);
            goto done;
        }
    } else {
        int dtype = model_source_dtype(values, bfloat16, name);
        if (dtype < 0)
            goto done;
        if (PyArray_NDIM(values) != info->ndim) {
            PyErr_Format(PyExc_ValueError, "set_param('%s'): expected %d dimension(s), got %d", name,
                         info->ndim, PyArray_NDIM(values));
            goto done;
        }
        const npy_intp itemsize = PyArray_ITEMSIZE(values);
        for (int d = 0; d < PyArray_NDIM(values); d++) {
            if (PyArray_STRIDE(values, d) % itemsize != 0) { /* e.g. a view into a packed record */
                PyArrayObject *copy = (PyArrayObject *)PyArray_NewCopy(values, NPY_CORDER);
                Py_DECREF(values);
                if ((values = copy) == NULL)
                    return NULL;
                break;
            }
        }
        source = (rg_tensor_source){
            .data = PyArray_DATA(values), .dtype = (rg_dtype)dtype, .rows = PyArray_DIM(values, 0),
            .cols = info->ndim == 2 ? PyArray_DIM(values, 1) : 1,
            .row_stride = PyArray_STRIDE(values, 0) / itemsize,
            .col_stride = info->ndim == 2 ? PyArray_STRIDE(values, 1) / itemsize : 1};
    }
    if (model_enter(self) < 0)
        goto done;
    rg_status status;
    Py_BEGIN_ALLOW_THREADS
    status = rg_param_write(self->model->params, info, row_offset, &source);
    Py_END_ALLOW_THREADS
    model_leave(self);
    core_state *state = binding_state_of_type(Py_TYPE(self));
    if (status == RG_ERR_SHAPE)
        binding_raise(state, status, "set_param('%s'): %zd x %zd values at row %zd do not fit its "
                      "shape (%lld, %lld)", name, (Py_ssize_t)source.rows, (Py_ssize_t)source.cols,
                      row_offset, (long long)info->shape[0],
                      (long long)(info->ndim == 2 ? info->shape[1] : 1));
    else if (status == RG_ERR_NONFINITE)
        binding_raise(state, status, "set_param('%s'): the values hold NaN or infinity", name);
    else if (status != RG_OK)
        binding_raise_status(state, status, "set_param");
    else
        result = Py_NewRef(Py_None);
done:
    Py_DECREF(values);
    return result;
}

static PyMethodDef model_methods[] = {
    {"set_param", (PyCFunction)(void (*)(void))model_set_param, METH_VARARGS | METH_KEYWORDS,
     "set_param(name, values, row_offset=0, bfloat16=False, quantized=None): copy a checkpoint array\n"
     "(float32, float16, float64, or uint16 bfloat16 bits; any strides, e.g. a transposed view) into\n"
     "rows [row_offset, row_offset + len(values)) of the named parameter, converting to float32.\n"
     "quantized='Q4_0', 'Q4_1' or 'Q8_0': values are raw llama.cpp blocks, (rows, bytes) uint8."},
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
    {"set_precision", (PyCFunction)model_set_precision, METH_O,
     "set_precision('bf16' | 'fp32'): linear layers' products in bf16 with fp32 sums and fp32 weights, or all fp32."},
    {"merge_lora", (PyCFunction)model_merge_lora, METH_NOARGS,
     "merge_lora(): add every LoRA adapter's scaled B @ A into its base weight (forward then skips them)."},
    {"unmerge_lora", (PyCFunction)model_unmerge_lora, METH_NOARGS,
     "unmerge_lora(): subtract them again (training needs the adapters unmerged)."},
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
    {"gradients", (getter)model_get_gradients, NULL, "Flat float32 view of the gradient block (with LoRA: "
     "compact, each trainable tensor at its table entry's grad_offset).", NULL},
    {"precision", (getter)model_get_precision, NULL, "'bf16' or 'fp32': what set_precision chose.", NULL},
    {"lora_merged", (getter)model_get_lora_merged, NULL, "True while the LoRA adapters are merged.", NULL},
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
    {Py_tp_doc, "Model(config: dict): the generic transformer of the C core (see reviewgen.core.models)."},
    {0, NULL}
};

static PyType_Spec model_type_spec = {
    .name = "reviewgen._core.Model",
    .basicsize = sizeof(ModelObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = model_type_slots,
};

static PyMethodDef model_module_methods[] = {
    {"lora_sites", core_lora_sites, METH_NOARGS,
     "lora_sites() -> {site name: bit of rg_model_config.lora_targets} (rg_model.h rg_lora_site)."},
    {"config_fields", core_config_fields, METH_NOARGS,
     "config_fields() -> list of dicts (name, kind, choices, required, default, doc): the fields of "
     "rg_model_config, in order."},
    {NULL, NULL, 0, NULL}
};

int binding_add_model(PyObject *module)
{
    if (PyModule_AddFunctions(module, model_module_methods) < 0)
        return -1;
    PyObject *type = PyType_FromModuleAndSpec(module, &model_type_spec, NULL);
    if (type == NULL)
        return -1;
    int rc = PyModule_AddObjectRef(module, "Model", type);
    Py_DECREF(type);
    return rc;
}
