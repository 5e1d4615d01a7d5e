"""A software prefetch for Numba kernels: ``prefetch(array, i)`` hints that ``array[i]`` will be read soon.

It lowers to LLVM's ``llvm.prefetch`` (read, high locality, data cache) and has no effect on
results. The approximate mode uses it to overlap the cache misses of the forward-index rows it
re-scores (``bench/README.md``, "Query speed").
"""

from __future__ import annotations

from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: LLVM mangles the overloaded intrinsic by pointer type: ``p0`` with opaque pointers (LLVM >= 16)
_NAME = "llvm.prefetch.p0" if binding.llvm_version_info[0] >= 16 else "llvm.prefetch.p0i8"


@intrinsic
def prefetch(typingctx, array, index):
    """Prefetch the cache line holding ``array[index]`` (1-D array, integer index; no bounds check:
    a prefetch never faults)."""
    if not isinstance(array, types.Array) or array.ndim != 1 or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            _NAME)
        builder.call(fn, [builder.bitcast(builder.gep(ary.data, [i]), i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen
