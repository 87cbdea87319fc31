/*
 * cpu.c - which copy of the CPU ops runs (rg_ops_cpu_isa, rg_backend.h).
 */
#include "binding.h"

#include "rg_backend.h"
#include "rg_gemm_bf16.h"

static PyObject *core_cpu_isa(PyObject *module, PyObject *unused)
{
    return PyUnicode_FromString(rg_ops_cpu_isa_name());
}

static PyObject *core_cpu_isas(PyObject *module, PyObject *unused)
{
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (size_t i = 0; rg_ops_cpu_isa_at(i) != NULL; i++) {
        const char *name = rg_ops_cpu_isa_at(i);
        if (PyDict_SetItemString(out, name, rg_ops_cpu_isa(name) != NULL ? Py_True : Py_False) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *core_blas_core(PyObject *module, PyObject *unused)
{
    return PyUnicode_FromString(rg_ops_blas_core());
}

static PyObject *core_bf16_supported(PyObject *module, PyObject *unused)
{
    return PyBool_FromLong(rg_gemm_bf16_supported());
}

static PyMethodDef cpu_methods[] = {
    {"bf16_supported", core_bf16_supported, METH_NOARGS,
     "True when this CPU runs the bf16 products (AVX512-BF16): Model.set_precision('bf16')."},
    {"cpu_isa", core_cpu_isa, METH_NOARGS,
     "The instruction set of the CPU ops that new models use (REVIEWGEN_CPU_ISA read now)."},
    {"cpu_isas", core_cpu_isas, METH_NOARGS,
     "{name: runs on this CPU} for every instruction set this build carries, narrowest first."},
    {"blas_core", core_blas_core, METH_NOARGS,
     "The core OpenBLAS runs its kernels for (its own choice, or OPENBLAS_CORETYPE's)."},
    {NULL, NULL, 0, NULL}
};

int binding_add_cpu(PyObject *module)
{
    return PyModule_AddFunctions(module, cpu_methods);
}
