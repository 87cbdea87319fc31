/*
 * emu.cpp - the CUDA emulator's runtime: device memory, the runtime API, and
 * the scheduler that runs a kernel launch on the CPU.
 *
 * Part of csrc/tests/cuda_emu/ (`make -C csrc test-cuda-emu`): the real
 * csrc/cuda/NAME.cu files, rewritten by transform.py and compiled with g++
 * against include/, form a library with the real one's entry point
 * (RG_CUDA_BACKEND_SYMBOL), against which the real GPU-vs-CPU test cases
 * (csrc/tests/test_cuda_NAME.c) run. include/cuda_emu.h says what it shows.
 *
 * Execution: the blocks of a launch run one after another; the threads of a
 * block are fibers (own stack each, switched by a few instructions of
 * assembly on x86-64, by ucontext elsewhere or with -DEMU_UCONTEXT) that run
 * one at a time, each until it waits at a barrier (__syncthreads,
 * __syncwarp, a shuffle or vote) or exits. The scheduler releases a barrier when every thread it needs waits
 * at it, checks that they agree (same __syncthreads site; same mask and
 * operation for a warp collective, no lane of the mask exited or missing),
 * and reports a deadlock (no thread can run, some have not exited) with the
 * place each thread waits at. Order: the even thread indices ascending,
 * then the odd ones descending (reversed in every odd-numbered block); the
 * blocks alike (reversed in every other launch): of two neighbouring threads
 * or blocks, either may go first, so that results that depend on the order
 * of unsynchronised accesses (a missing barrier, a block reading another
 * block's output) tend to show up. RG_CUDA_EMU_FLIP_ORDER=1 in the
 * environment reverses every one of these orders (a second run with it
 * tries each launch and block the other way round).
 *
 * Limits (see cuda_emu.h): no concurrency, so races and timing bugs show only
 * where these orders expose them; everything is synchronous.
 *
 * Device memory is host malloc (so ASan bounds-checks kernels), filled with
 * all-ones bytes (NaN) by cudaMalloc as the GPU leaves it uninitialised; the
 * allocations are tracked, so copies, memsets, frees and cuBLASLt operands
 * are checked to lie inside one.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <vector>

#include "cuda_emu.h"

/* EMU_ASAN=1: the kernels are built with AddressSanitizer, so tell it about
 * every stack switch. This file itself need not be instrumented (the
 * Makefile builds it without sanitizers, for speed; ASan's interceptors
 * still check its memcpy and memset of device memory). */
#if !defined(EMU_ASAN) && defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#endif
#if EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
#define EMU_ASM_SWITCH 1
#else
#define EMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace {

/* ---- errors ---- */

cudaError_t last_error = cudaSuccess;

cudaError_t set_error(cudaError_t e)
{
    if (e != cudaSuccess)
        last_error = e;
    return e;
}

/* ---- device memory ---- */

std::map<uintptr_t, size_t> allocations; // start -> bytes

/* The allocation holding p, or allocations.end(). */
std::map<uintptr_t, size_t>::iterator find_allocation(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    auto it = allocations.upper_bound(a);
    if (it == allocations.begin())
        return allocations.end();
    --it;
    return a < it->first + (it->second ? it->second : 1) ? it : allocations.end();
}

/* ---- fibers ---- */

enum { READY, WAIT_BAR, WAIT_WARP, DONE };
const size_t STACK_BYTES = 256 * 1024;

struct Thread {
    void *sp; // saved stack pointer (x86-64)
#if !EMU_ASM_SWITCH
    ucontext_t ctx;
#endif
    char *stack; // usable stack [stack, stack + STACK_BYTES), a guard page below
    void *fake_stack;
    uint3 idx;
    unsigned linear;
    int state;
    const char *site; // where it waits at __syncthreads
    int pred, op, bytes, arg, width;
    unsigned mask;
    uint64_t value, result;
};

std::vector<Thread> threads;
#if EMU_ASM_SWITCH
void *sched_sp;
#endif
#if !EMU_ASM_SWITCH
ucontext_t sched_ctx;
#endif
#if EMU_ASAN
void *sched_fake_stack;
const void *sched_stack_bottom;
size_t sched_stack_size;
#endif
Thread *current;
bool in_kernel;
const char *kernel_name = "?";
emu_body kernel_body;
unsigned block_threads, live, bar_waiting;
/* per warp: lanes waiting at a warp collective, and lanes that have exited (bit mask) */
unsigned warp_waiting[32], warp_done[32];
long launch_count;
unsigned long block_generation;

/* dynamic and static shared memory of the running launch */
void *dyn_smem;
size_t dyn_smem_bytes, static_smem_bytes, smem_limit;
struct SharedArray {
    void *ptr;
    size_t bytes;
    unsigned long generation;
};
std::vector<SharedArray> shared_arrays;

/* per kernel: cudaFuncAttributeMaxDynamicSharedMemorySize */
std::map<const void *, int> max_dynamic_smem;

const size_t DEFAULT_SMEM = 48 * 1024;
const size_t OPTIN_SMEM = 227 * 1024; // H100: cudaDevAttrMaxSharedMemoryPerBlockOptin

} // namespace

void emu_fatal(const char *format, ...)
{
    fflush(stdout);
    if (in_kernel && current != NULL)
        fprintf(stderr, "cuda-emu: kernel %s, block (%u,%u,%u), thread (%u,%u,%u): ", kernel_name, blockIdx.x,
                blockIdx.y, blockIdx.z, current->idx.x, current->idx.y, current->idx.z);
    else if (in_kernel)
        fprintf(stderr, "cuda-emu: kernel %s, block (%u,%u,%u): ", kernel_name, blockIdx.x, blockIdx.y, blockIdx.z);
    else
        fprintf(stderr, "cuda-emu: ");
    va_list args;
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fputc('\n', stderr);
    abort();
}

namespace {

void host_only(const char *what)
{
    if (current != NULL)
        emu_fatal("%s called from device code", what);
}

/* ---- context switching ---- */

#if EMU_ASM_SWITCH
extern "C" void emu_ctx_switch(void **save_sp, void *new_sp);
extern "C" void emu_ctx_start(void);
/* Saves the callee-saved registers on the current stack, stores the stack
 * pointer in *save_sp, and resumes the context whose stack pointer is new_sp
 * (MXCSR and the x87 control word are not switched: nothing here changes
 * them). emu_ctx_start is where a new context begins: it calls r13(r12) and
 * never returns. */
__asm__(".text\n"
        ".p2align 4\n"
        ".globl emu_ctx_switch\n"
        ".hidden emu_ctx_switch\n"
        ".type emu_ctx_switch,@function\n"
        "emu_ctx_switch:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size emu_ctx_switch, .-emu_ctx_switch\n"
        ".globl emu_ctx_start\n"
        ".hidden emu_ctx_start\n"
        ".type emu_ctx_start,@function\n"
        "emu_ctx_start:\n"
        "  movq %r12, %rdi\n"
        "  callq *%r13\n"
        "  ud2\n"
        ".size emu_ctx_start, .-emu_ctx_start\n");
#endif

void thread_main(void *arg);

void ctx_init(Thread &t)
{
#if EMU_ASM_SWITCH
    uint64_t *top = (uint64_t *)(((uintptr_t)(t.stack + STACK_BYTES)) & ~(uintptr_t)15);
    uint64_t *sp = top - 2 - 7; // sp + 7 words (= top - 2) is 16-aligned where emu_ctx_start calls
    sp[0] = 0;                        // r15
    sp[1] = 0;                        // r14
    sp[2] = (uint64_t)&thread_main;   // r13: the function
    sp[3] = (uint64_t)&t;             // r12: its argument
    sp[4] = 0;                        // rbx
    sp[5] = 0;                        // rbp
    sp[6] = (uint64_t)&emu_ctx_start; // return address
    t.sp = sp;
#else
    getcontext(&t.ctx);
    t.ctx.uc_stack.ss_sp = t.stack;
    t.ctx.uc_stack.ss_size = STACK_BYTES;
    t.ctx.uc_link = NULL;
    // makecontext passes ints: split the pointer
    uintptr_t p = (uintptr_t)&t;
    makecontext(&t.ctx, (void (*)())(void (*)(unsigned, unsigned))[](unsigned lo, unsigned hi) {
        thread_main((void *)(((uintptr_t)hi << 32) | lo));
    }, 2, (unsigned)(p & 0xffffffffu), (unsigned)((uint64_t)p >> 32));
#endif
}

/* Switches from `from` to `to` (NULL: the scheduler, run_block's stack) and
 * returns when something switches back to `from`. A DONE `from` never
 * comes back. */
void ctx_jump(Thread *from, Thread *to)
{
#if EMU_ASAN
    void **save = from == NULL ? &sched_fake_stack : from->state == DONE ? NULL : &from->fake_stack;
    if (to != NULL)
        __sanitizer_start_switch_fiber(save, to->stack, STACK_BYTES);
    else
        __sanitizer_start_switch_fiber(save, sched_stack_bottom, sched_stack_size);
#endif
    current = to;
    if (to != NULL)
        threadIdx = to->idx;
#if EMU_ASM_SWITCH
    emu_ctx_switch(from != NULL ? &from->sp : &sched_sp, to != NULL ? to->sp : sched_sp);
#else
    swapcontext(from != NULL ? &from->ctx : &sched_ctx, to != NULL ? &to->ctx : &sched_ctx);
#endif
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(from != NULL ? from->fake_stack : sched_fake_stack, NULL, NULL);
#endif
    current = from;
    if (from != NULL)
        threadIdx = from->idx;
}

void after_state_change(Thread &t);

/* k-th of n in the emulator's order: the even indices ascending, then the
 * odd ones descending (so that of two neighbours either may go first), the
 * whole sequence reversed when `reverse`. */
unsigned long long interleaved(unsigned long long k, unsigned long long n, bool reverse)
{
    if (reverse)
        k = n - 1 - k;
    const unsigned long long evens = (n + 1) / 2;
    return k < evens ? 2 * k : 2 * (n / 2 - 1 - (k - evens)) + 1;
}

/* 1 when RG_CUDA_EMU_FLIP_ORDER=1: every block and thread order reversed
 * (a second run with it tries each launch and block the other way round). */
unsigned order_flip(void)
{
    static int flip = -1;
    if (flip < 0) {
        const char *v = getenv("RG_CUDA_EMU_FLIP_ORDER");
        flip = v != NULL && v[0] == '1';
    }
    return (unsigned)flip;
}

/* The pass over the block's threads: position (in pass_order) of the running thread. */
unsigned pass_pos;
std::vector<unsigned> pass_order;

Thread &thread_at(unsigned k)
{
    return threads[pass_order[k]];
}

/* The next runnable thread of this pass, or NULL (back to the scheduler). */
Thread *next_in_pass(void)
{
    for (unsigned k = pass_pos + 1; k < block_threads; k++)
        if (thread_at(k).state == READY) {
            pass_pos = k;
            return &thread_at(k);
        }
    return NULL;
}

/* The running thread t has just waited or exited (t.state says which): the
 * scheduler's bookkeeping, then straight on to the next runnable thread. */
void yield_thread(Thread &t)
{
    after_state_change(t);
    ctx_jump(&t, next_in_pass());
}

void thread_main(void *arg)
{
    Thread &t = *(Thread *)arg;
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    kernel_body.run(kernel_body.closure);
    t.state = DONE;
    yield_thread(t);
    abort(); // a finished thread is never resumed
}

char *new_stack(void)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *m = (char *)mmap(NULL, STACK_BYTES + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                           -1, 0);
    if (m == MAP_FAILED)
        emu_fatal("mmap of a thread stack failed: %s", strerror(errno));
    mprotect(m, page, PROT_NONE); // overflow faults instead of corrupting the next stack
    return m + page;
}

/* ---- barriers ---- */

const char *op_name(int op)
{
    switch (op) {
    case EMU_WARP_SYNC: return "__syncwarp";
    case EMU_WARP_SHFL: return "__shfl_sync";
    case EMU_WARP_SHFL_UP: return "__shfl_up_sync";
    case EMU_WARP_SHFL_DOWN: return "__shfl_down_sync";
    case EMU_WARP_SHFL_XOR: return "__shfl_xor_sync";
    case EMU_WARP_VOTE: return "__ballot_sync/__any_sync/__all_sync";
    }
    return "?";
}

void describe_thread(const Thread &t)
{
    fprintf(stderr, "  thread (%u,%u,%u): ", t.idx.x, t.idx.y, t.idx.z);
    switch (t.state) {
    case READY: fprintf(stderr, "runnable\n"); break;
    case DONE: fprintf(stderr, "exited\n"); break;
    case WAIT_BAR: fprintf(stderr, "waits at __syncthreads %s\n", t.site); break;
    case WAIT_WARP: fprintf(stderr, "waits at %s, mask 0x%08x\n", op_name(t.op), t.mask); break;
    }
}

/* Every non-exited thread waits at __syncthreads: release them (same site required). */
void release_barrier(void)
{
    const Thread *first = NULL;
    int count = 0;
    for (unsigned i = 0; i < block_threads; i++) {
        Thread &t = threads[i];
        if (t.state != WAIT_BAR)
            continue;
        if (first == NULL)
            first = &t;
        else if (strcmp(first->site, t.site) != 0) {
            fprintf(stderr, "cuda-emu: kernel %s, block (%u,%u,%u): divergent __syncthreads:\n", kernel_name,
                    blockIdx.x, blockIdx.y, blockIdx.z);
            describe_thread(*first);
            describe_thread(t);
            current = NULL;
            emu_fatal("threads of one block wait at different __syncthreads");
        }
        count += t.pred;
    }
    bool all = count == (int)bar_waiting, any = count > 0;
    for (unsigned i = 0; i < block_threads; i++) {
        Thread &t = threads[i];
        if (t.state != WAIT_BAR)
            continue;
        t.state = READY;
        t.result = t.op == 0 ? (uint64_t)count : t.op == 1 ? (uint64_t)all : (uint64_t)any;
    }
    bar_waiting = 0;
}

/* Threads in the warp of thread index w0 (the last warp may be partial). */
unsigned warp_size_at(unsigned w0)
{
    return block_threads - w0 < 32 ? block_threads - w0 : 32;
}

/* Thread t just arrived at a warp collective: if every lane of its mask is
 * there with the same mask, compute every lane's result and release them. */
void try_release_warp(Thread &t)
{
    const unsigned w0 = t.linear & ~31u, lanes = warp_size_at(w0), lane = t.linear & 31u, w = t.linear / 32;
    const unsigned mask = t.mask;
    if (!(mask >> lane & 1u))
        emu_fatal("%s with mask 0x%08x that does not include the calling lane %u", op_name(t.op), mask, lane);
    if (lanes < 32 && (mask >> lanes) != 0)
        emu_fatal("%s with mask 0x%08x names lanes that do not exist (the warp has %u threads)", op_name(t.op),
                  mask, lanes);
    if (mask & warp_done[w])
        emu_fatal("%s with mask 0x%08x: lane %d has exited and can never take part", op_name(t.op), mask,
                  __builtin_ctz(mask & warp_done[w]));
    warp_waiting[w]++;
    if (warp_waiting[w] < (unsigned)__builtin_popcount(mask))
        return; // not all there yet
    for (unsigned l = 0; l < lanes; l++) {
        if (!(mask >> l & 1u))
            continue;
        const Thread &o = threads[w0 + l];
        if (o.state != WAIT_WARP || o.mask != mask)
            return; // not all there yet
    }
    warp_waiting[w] -= (unsigned)__builtin_popcount(mask);
    for (unsigned l = 0; l < lanes; l++) {
        if (!(mask >> l & 1u))
            continue;
        const Thread &o = threads[w0 + l];
        if (o.op != t.op || o.bytes != t.bytes || (o.op != EMU_WARP_SYNC && o.width != t.width))
            emu_fatal("lanes of mask 0x%08x meet at different warp operations: lane %u at %s (%d bytes, width %d), "
                      "lane %u at %s (%d bytes, width %d)",
                      mask, lane, op_name(t.op), t.bytes, t.width, l, op_name(o.op), o.bytes, o.width);
    }
    uint64_t ballot = 0;
    if (t.op == EMU_WARP_VOTE)
        for (unsigned l = 0; l < lanes; l++)
            if ((mask >> l & 1u) && threads[w0 + l].value)
                ballot |= 1ull << l;
    const int width = t.width;
    if (t.op != EMU_WARP_SYNC && t.op != EMU_WARP_VOTE && (width < 1 || width > 32 || (width & (width - 1)) != 0))
        emu_fatal("%s with width %d (must be a power of two up to 32)", op_name(t.op), width);
    for (unsigned l = 0; l < lanes; l++) {
        if (!(mask >> l & 1u))
            continue;
        Thread &o = threads[w0 + l];
        o.state = READY;
        if (o.op == EMU_WARP_SYNC) {
            o.result = 0;
            continue;
        }
        if (o.op == EMU_WARP_VOTE) {
            o.result = ballot;
            continue;
        }
        // PTX shfl.sync: c = ((32 - width) << 8) | (up ? 0 : 31)
        const int segmask = (32 - width) & 31, cval = o.op == EMU_WARP_SHFL_UP ? 0 : 31;
        const int maxLane = ((int)l & segmask) | (cval & ~segmask), minLane = (int)l & segmask;
        const int b = o.arg & 31;
        int j = 0;
        bool pval = false;
        switch (o.op) {
        case EMU_WARP_SHFL_UP: j = (int)l - b; pval = j >= maxLane; break;
        case EMU_WARP_SHFL_DOWN: j = (int)l + b; pval = j <= maxLane; break;
        case EMU_WARP_SHFL_XOR: j = (int)l ^ b; pval = j <= maxLane; break;
        default: j = minLane | (b & ~segmask); pval = j <= maxLane; break;
        }
        if (!pval)
            j = (int)l;
        if (j < 0 || j >= (int)lanes || !(mask >> j & 1u))
            o.result = ~0ull; // a lane outside the mask: undefined on the GPU, NaN / -1 here
        else
            o.result = threads[w0 + (unsigned)j].value;
        if (o.bytes < 8)
            o.result &= (1ull << (8 * o.bytes)) - 1;
    }
}

Thread &device_thread(const char *what)
{
    if (current == NULL)
        emu_fatal("%s called outside a kernel", what);
    return *current;
}

/* ---- launches ---- */

void run_block(unsigned linear_block)
{
#if EMU_ASAN
    if (sched_stack_size == 0) {
        pthread_attr_t attr;
        void *addr = NULL;
        if (pthread_getattr_np(pthread_self(), &attr) == 0) {
            pthread_attr_getstack(&attr, &addr, &sched_stack_size);
            pthread_attr_destroy(&attr);
        }
        sched_stack_bottom = addr;
    }
#endif
    block_generation++;
    static_smem_bytes = 0;
    if (dyn_smem_bytes > 0)
        memset(dyn_smem, 0xff, dyn_smem_bytes);
    live = block_threads;
    bar_waiting = 0;
    memset(warp_waiting, 0, sizeof(warp_waiting));
    memset(warp_done, 0, sizeof(warp_done));
    const unsigned bx = blockDim.x, by = blockDim.y;
    for (unsigned i = 0; i < block_threads; i++) {
        Thread &t = threads[i];
        t.linear = i;
        t.idx.x = i % bx;
        t.idx.y = (i / bx) % by;
        t.idx.z = i / (bx * by);
        t.state = READY;
        t.fake_stack = NULL;
        t.site = NULL;
        ctx_init(t);
    }
    pass_order.resize(block_threads);
    for (unsigned k = 0; k < block_threads; k++)
        pass_order[k] = (unsigned)interleaved(k, block_threads, ((linear_block + order_flip()) & 1u) != 0);
    while (live > 0) {
        Thread *first = NULL;
        for (unsigned k = 0; k < block_threads && first == NULL; k++)
            if (thread_at(k).state == READY) {
                pass_pos = k;
                first = &thread_at(k);
            }
        if (first == NULL) {
            fprintf(stderr, "cuda-emu: kernel %s, block (%u,%u,%u): deadlock, no thread can go on:\n", kernel_name,
                    blockIdx.x, blockIdx.y, blockIdx.z);
            int shown = 0;
            for (unsigned i = 0; i < block_threads && shown < 12; i++)
                if (threads[i].state != DONE) {
                    describe_thread(threads[i]);
                    shown++;
                }
            emu_fatal("deadlock (a barrier that some threads never reach)");
        }
        ctx_jump(NULL, first); // runs the pass
    }
}

void after_state_change(Thread &t)
{
    if (t.state == DONE) {
        live--;
        const unsigned w0 = t.linear & ~31u, lanes = warp_size_at(w0), lane = t.linear & 31u;
        warp_done[t.linear / 32] |= 1u << lane;
        // lanes already waiting for it at a warp collective can never go on
        if (warp_waiting[t.linear / 32] > 0)
            for (unsigned l = 0; l < lanes; l++) {
                const Thread &o = threads[w0 + l];
                if (o.state == WAIT_WARP && (o.mask >> lane & 1u))
                    emu_fatal("exits while lane %u waits for it at %s (mask 0x%08x)", l, op_name(o.op), o.mask);
            }
        if (bar_waiting > 0 && bar_waiting == live)
            release_barrier();
    } else if (t.state == WAIT_BAR) {
        if (++bar_waiting == live)
            release_barrier();
    } else if (t.state == WAIT_WARP) {
        try_release_warp(t);
    }
}

} // namespace

/* ---- device-side entry points ---- */

void emu_syncthreads(const char *site)
{
    emu_syncthreads_count(site, 0, 0);
}

int emu_syncthreads_count(const char *site, int predicate, int op)
{
    Thread &t = device_thread("__syncthreads");
    t.site = site;
    t.pred = predicate != 0;
    t.op = op;
    t.state = WAIT_BAR;
    yield_thread(t);
    return (int)t.result;
}

uint64_t emu_warp_op(unsigned mask, int op, uint64_t value, int bytes, int arg, int width)
{
    Thread &t = device_thread(op_name(op));
    t.mask = mask;
    t.op = op;
    t.value = value;
    t.bytes = bytes;
    t.arg = arg;
    t.width = width;
    t.state = WAIT_WARP;
    yield_thread(t);
    return t.result;
}

unsigned __activemask(void)
{
    Thread &t = device_thread("__activemask");
    const unsigned w0 = t.linear & ~31u, lanes = warp_size_at(w0);
    unsigned m = 0;
    for (unsigned l = 0; l < lanes; l++)
        if (threads[w0 + l].state != DONE)
            m |= 1u << l;
    return m;
}

void *emu_dyn_smem(void)
{
    device_thread("dynamic shared memory");
    return dyn_smem;
}

void emu_shared_static(void *ptr, size_t bytes)
{
    device_thread("__shared__");
    SharedArray *a = NULL;
    for (auto &s : shared_arrays)
        if (s.ptr == ptr)
            a = &s;
    if (a == NULL) {
        shared_arrays.push_back(SharedArray{ptr, bytes, 0});
        a = &shared_arrays.back();
    }
    if (a->generation == block_generation)
        return;
    a->generation = block_generation;
    memset(ptr, 0xff, bytes); // unset shared memory reads as NaN
    static_smem_bytes += bytes;
    if (static_smem_bytes > DEFAULT_SMEM)
        emu_fatal("%zu bytes of static shared memory (the limit is 48 KiB)", static_smem_bytes);
    if (static_smem_bytes + dyn_smem_bytes > smem_limit)
        emu_fatal("%zu bytes of static and %zu of dynamic shared memory exceed the kernel's %zu", static_smem_bytes,
                  dyn_smem_bytes, smem_limit);
}

bool emu_is_device_range(const void *p, size_t bytes)
{
    auto it = find_allocation(p);
    return it != allocations.end() && (uintptr_t)p + bytes <= it->first + it->second;
}

void emu_run_kernel(const emu_config &cfg, const char *name, const void *func, int max_threads, emu_body body)
{
    if (in_kernel)
        emu_fatal("kernel %s launched from device code (not emulated)", name);
    const dim3 g = cfg.grid, b = cfg.block;
    const unsigned long long nthreads = (unsigned long long)b.x * b.y * b.z;
    const char *refused = NULL;
    cudaError_t why = cudaErrorInvalidConfiguration;
    if (b.x == 0 || b.y == 0 || b.z == 0 || b.x > 1024 || b.y > 1024 || b.z > 64 || nthreads > 1024)
        refused = "block dimensions out of range (x, y <= 1024, z <= 64, at most 1024 threads, none 0)";
    else if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 2147483647u || g.y > 65535 || g.z > 65535)
        refused = "grid dimensions out of range (x < 2^31, y and z <= 65535, none 0)";
    else if (max_threads > 0 && nthreads > (unsigned long long)max_threads) {
        refused = "more threads per block than the kernel's __launch_bounds__";
        why = cudaErrorLaunchOutOfResources;
    } else {
        auto it = max_dynamic_smem.find(func);
        const size_t dyn_limit = it != max_dynamic_smem.end() ? (size_t)it->second : DEFAULT_SMEM;
        if (cfg.smem > dyn_limit) {
            refused = "more dynamic shared memory than the kernel's limit (48 KiB unless raised by "
                      "cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize))";
            why = cudaErrorInvalidValue;
        }
        smem_limit = it != max_dynamic_smem.end() ? OPTIN_SMEM : DEFAULT_SMEM;
    }
    if (refused != NULL) {
        fprintf(stderr, "cuda-emu: launch of %s<<<(%u,%u,%u), (%u,%u,%u), %zu>>> refused: %s\n", name, g.x, g.y, g.z,
                b.x, b.y, b.z, cfg.smem, refused);
        set_error(why);
        return;
    }
    launch_count++;
    kernel_name = name;
    kernel_body = body;
    block_threads = (unsigned)nthreads;
    while (threads.size() < block_threads) {
        threads.emplace_back();
        threads.back().stack = new_stack();
    }
    dyn_smem_bytes = cfg.smem;
    dyn_smem = cfg.smem > 0 ? malloc(cfg.smem) : NULL; // exactly its size: ASan sees an overrun
    blockDim = b;
    gridDim = g;
    in_kernel = true;
    const unsigned long long nblocks = (unsigned long long)g.x * g.y * g.z;
    for (unsigned long long k = 0; k < nblocks; k++) {
        const unsigned long long lb = interleaved(k, nblocks, ((launch_count + order_flip()) & 1) == 0);
        blockIdx.x = (unsigned)(lb % g.x);
        blockIdx.y = (unsigned)((lb / g.x) % g.y);
        blockIdx.z = (unsigned)(lb / ((unsigned long long)g.x * g.y));
        run_block((unsigned)(lb & 0xffffffffu));
    }
    in_kernel = false;
    free(dyn_smem);
    dyn_smem = NULL;
    dyn_smem_bytes = 0;
    kernel_name = "?";
}

/* ---- runtime API ---- */

cudaError_t cudaGetDeviceCount(int *count)
{
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    *device = 0;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    return device == 0 ? cudaSuccess : set_error(cudaErrorInvalidDevice);
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device)
{
    if (device != 0)
        return set_error(cudaErrorInvalidDevice);
    switch (attr) { // an H100's
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxBlockDimX: *value = 1024; break;
    case cudaDevAttrMaxGridDimX: *value = 2147483647; break;
    case cudaDevAttrMaxGridDimY: *value = 65535; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)DEFAULT_SMEM; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = 132; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)OPTIN_SMEM; break;
    default: return set_error(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
    host_only("cudaDeviceSynchronize");
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    return last_error;
}

const char *cudaGetErrorName(cudaError_t error)
{
    switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t error)
{
    switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    }
    return "unknown error";
}

cudaError_t cudaMalloc(void **ptr, size_t bytes)
{
    host_only("cudaMalloc");
    if (ptr == NULL)
        return set_error(cudaErrorInvalidValue);
    *ptr = NULL;
    if (bytes == 0)
        return cudaSuccess;
    void *p = malloc(bytes);
    if (p == NULL)
        return set_error(cudaErrorMemoryAllocation);
    memset(p, 0xff, bytes); // device memory starts as garbage: here NaN
    allocations[(uintptr_t)p] = bytes;
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr)
{
    host_only("cudaFree");
    if (ptr == NULL)
        return cudaSuccess;
    auto it = allocations.find((uintptr_t)ptr);
    if (it == allocations.end()) {
        fprintf(stderr, "cuda-emu: cudaFree(%p): not the start of a device allocation\n", ptr);
        return set_error(cudaErrorInvalidValue);
    }
    allocations.erase(it);
    free(ptr);
    return cudaSuccess;
}

namespace {

cudaError_t check_range(const void *p, size_t bytes, bool device, const char *what, const char *side)
{
    const bool on_device = emu_is_device_range(p, bytes);
    if (device && !on_device) {
        fprintf(stderr, "cuda-emu: %s: the %s range [%p, +%zu) is not inside one device allocation\n", what, side, p,
                bytes);
        return set_error(find_allocation(p) == allocations.end() ? cudaErrorInvalidValue : cudaErrorInvalidValue);
    }
    if (!device && find_allocation(p) != allocations.end()) {
        fprintf(stderr, "cuda-emu: %s: the %s pointer %p is device memory, the copy's kind says host\n", what, side,
                p);
        return set_error(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

} // namespace

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    host_only("cudaMemcpy");
    if (bytes == 0)
        return cudaSuccess;
    if (dst == NULL || src == NULL)
        return set_error(cudaErrorInvalidValue);
    cudaError_t e = cudaSuccess;
    switch (kind) {
    case cudaMemcpyHostToHost: break;
    case cudaMemcpyHostToDevice:
        if ((e = check_range(dst, bytes, true, "cudaMemcpy HostToDevice", "destination")) == cudaSuccess)
            e = check_range(src, bytes, false, "cudaMemcpy HostToDevice", "source");
        break;
    case cudaMemcpyDeviceToHost:
        if ((e = check_range(src, bytes, true, "cudaMemcpy DeviceToHost", "source")) == cudaSuccess)
            e = check_range(dst, bytes, false, "cudaMemcpy DeviceToHost", "destination");
        break;
    case cudaMemcpyDeviceToDevice:
        if ((e = check_range(src, bytes, true, "cudaMemcpy DeviceToDevice", "source")) == cudaSuccess)
            e = check_range(dst, bytes, true, "cudaMemcpy DeviceToDevice", "destination");
        break;
    case cudaMemcpyDefault: break;
    default: return set_error(cudaErrorInvalidMemcpyDirection);
    }
    if (e != cudaSuccess)
        return e;
    memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t)
{
    return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemset(void *dst, int value, size_t bytes)
{
    host_only("cudaMemset");
    if (bytes == 0)
        return cudaSuccess;
    cudaError_t e = check_range(dst, bytes, true, "cudaMemset", "destination");
    if (e != cudaSuccess)
        return e;
    memset(dst, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t)
{
    return cudaMemset(dst, value, bytes);
}

cudaError_t cudaStreamCreate(cudaStream_t *stream)
{
    static char dummy[16];
    *stream = (cudaStream_t)(void *)dummy;
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t)
{
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t)
{
    host_only("cudaStreamSynchronize");
    return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void *func, cudaFuncAttribute attr, int value)
{
    host_only("cudaFuncSetAttribute");
    if (func == NULL)
        return set_error(cudaErrorInvalidDeviceFunction);
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || (size_t)value > OPTIN_SMEM)
            return set_error(cudaErrorInvalidValue);
        max_dynamic_smem[func] = value;
        return cudaSuccess;
    }
    if (attr == cudaFuncAttributePreferredSharedMemoryCarveout)
        return value >= -1 && value <= 100 ? cudaSuccess : set_error(cudaErrorInvalidValue);
    return set_error(cudaErrorInvalidValue);
}
