#!/usr/bin/env python3
"""transform.py - rewrites a CUDA source (csrc/cuda/*.cu) into C++ for the CPU
emulator of csrc/tests/cuda_emu/ (include/cuda_emu.h says what it is and what
it cannot show: it runs the threads of a block one after another in a fixed
order, so races and timing bugs stay invisible).

    python3 transform.py cuda/attention.cu build/cuda_emu/attention.cpp

Three rewrites, each keeping the line count (a `#line` directive at the top
points diagnostics, __FILE__ and debug info back to the .cu file):

  kernel<<<grid, block[, smem[, stream]]>>>(args)
      -> emu_launcher(emu_make_config(grid, block[, smem[, stream]]),
                      "kernel", kernel, BOUND)(args)
     BOUND is the first argument of the kernel's __launch_bounds__ (0 without).
  extern __shared__ T name[];
      -> T *name = (T *)emu_dyn_smem();
  __shared__ T name[dims];
      -> static T name[dims]; emu_shared_static(&name, sizeof(name));

Comments and string literals are left alone. Anything it does not
understand (a __shared__ declaration with several declarators or an
initialiser, a launch not followed by its argument list) is an error, not a
silent pass-through.
"""
import re
import sys


def mask_comments_and_strings(src):
    """src with the inside of comments, string and char literals replaced by
    spaces (newlines kept), so that offsets match the original."""
    out = list(src)
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if src[k] != "\n":
                    out[k] = " "
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            for k in range(i + 1, min(j, n)):
                if src[k] != "\n":
                    out[k] = " "
            i = j + 1
        else:
            i += 1
    return "".join(out)


def balanced_end(text, open_pos):
    """Index just past the parenthesis matching text[open_pos] == '('."""
    depth = 0
    for j in range(open_pos, len(text)):
        if text[j] == "(":
            depth += 1
        elif text[j] == ")":
            depth -= 1
            if depth == 0:
                return j + 1
    raise ValueError("unbalanced parentheses")


def split_top_level(text, sep=","):
    parts, depth, cur = [], 0, []
    for c in text:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def fail(path, masked, pos, message):
    line = masked.count("\n", 0, pos) + 1
    sys.exit(f"{path}:{line}: transform.py: {message}")


def launch_bounds(masked):
    """kernel name -> the expression of its __launch_bounds__' first argument."""
    bounds = {}
    for m in re.finditer(r"__launch_bounds__\s*\(", masked):
        end = balanced_end(masked, m.end() - 1)
        expr = split_top_level(masked[m.end():end - 1])[0].strip()
        name = re.match(r"\s*(\w+)\s*\(", masked[end:])
        if name:
            bounds[name.group(1)] = expr
    return bounds


def transform(src, path):
    masked = mask_comments_and_strings(src)
    bounds = launch_bounds(masked)
    edits = []  # (start, end, replacement)

    for m in re.finditer(r"(extern\s+)?__shared__\s+([^;]*);", masked):
        decl = src[m.start(2):m.end(2)]
        newlines = "\n" * src.count("\n", m.start(), m.end())
        flat = " ".join(masked[m.start(2):m.end(2)].split())
        flat = re.sub(r"__align__\s*\(\s*\w+\s*\)", "", flat).strip()
        if m.group(1):
            d = re.fullmatch(r"(.*?)\s*\b(\w+)\s*\[\s*\]", flat)
            if not d:
                fail(path, masked, m.start(), f"cannot read the dynamic shared declaration '{decl}'")
            ctype, name = d.group(1).strip(), d.group(2)
            repl = f"{ctype} *{name} = ({ctype} *)emu_dyn_smem();{newlines}"
        else:
            if len(split_top_level(flat)) != 1 or "=" in flat:
                fail(path, masked, m.start(), f"one __shared__ declarator without initialiser expected: '{decl}'")
            d = re.fullmatch(r"(.*?)\s*\b(\w+)\s*((?:\[[^\]]*\]\s*)*)", flat)
            if not d or not d.group(1).strip():
                fail(path, masked, m.start(), f"cannot read the __shared__ declaration '{decl}'")
            name = d.group(2)
            repl = f"static {flat}; emu_shared_static(&{name}, sizeof({name}));{newlines}"
        edits.append((m.start(), m.end(), repl))

    for m in re.finditer(r"([A-Za-z_]\w*(?:\s*<[^<>;()]*>)?)\s*<<<", masked):
        close = masked.find(">>>", m.end())
        if close < 0:
            fail(path, masked, m.start(), "'<<<' without '>>>'")
        after = re.match(r"\s*\(", masked[close + 3:])
        if not after:
            fail(path, masked, m.start(), "a launch must be followed by its argument list")
        name = m.group(1)
        base = re.sub(r"\s*<.*", "", name, flags=re.S)
        cfg = src[m.end():close]
        bound = f"(int)({bounds[base]})" if base in bounds else "0"
        ws = src[close + 3:close + 3 + after.end() - 1]
        repl = f'emu_launcher(emu_make_config({cfg}), "{base}", {name}, {bound}){ws}('
        edits.append((m.start(), close + 3 + after.end(), repl))

    edits.sort()
    out, pos = [], 0
    for start, end, repl in edits:
        if start < pos:
            fail(path, masked, start, "overlapping rewrites")
        out.append(src[pos:start])
        out.append(repl)
        pos = end
    out.append(src[pos:])
    return f'#line 1 "{path}"\n' + "".join(out)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: transform.py FILE.cu OUT.cpp")
    path, target = sys.argv[1], sys.argv[2]
    with open(path) as f:
        src = f.read()
    result = transform(src, path)
    with open(target, "w") as f:
        f.write(result)


if __name__ == "__main__":
    main()
