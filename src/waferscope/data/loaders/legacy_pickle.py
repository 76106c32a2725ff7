"""Unpickling pandas DataFrames written by old pandas (0.x, Python 2), restricted to data classes.

The WM-811K ``LSWMD.pkl`` was pickled by pandas 0.x under Python 2. It refers to modules that no
longer exist (``pandas.indexes.base._new_Index``, ``pandas.indexes.numeric.Int64Index``,
``pandas.core.internals.BlockManager`` built with an argument-less ``NEWOBJ``, earlier still
``pandas.core.index``), and its array buffers are Python 2 ``str`` (so it needs
``encoding="latin1"``). :class:`LegacyUnpickler` maps those names to today's classes.

A pickle can name any importable callable and so run arbitrary code. The unpickler therefore
admits only an allow-list of numpy/pandas data classes and reconstruction helpers and refuses
everything else; still, users should import a pickle to Parquet once (``waferscope data import``)
and not unpickle files they do not trust.

:func:`dump_legacy_dataframe` writes a DataFrame in the old layout, with the old module paths and
Python 2 strings; tests and ``benchmarks/bench_import.py`` use it to prove the shim works without
the 2.1 GB original.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import pandas as pd

# ---- reading ------------------------------------------------------------------------------------
_INDEX_RENAMES = {"Int64Index": "Index", "UInt64Index": "Index", "Float64Index": "Index", "NumericIndex": "Index"}
_INDEX_MODULE_OF = {"RangeIndex": "range", "MultiIndex": "multi", "CategoricalIndex": "category",
                    "DatetimeIndex": "datetimes", "FrozenList": "frozen"}


class _BlockManagerShim:
    """pandas ≤ 1.x pickled BlockManager with an argument-less NEWOBJ and a __setstate__ tuple.

    Today's BlockManager cannot be created without arguments.
    """

    def __new__(cls, *args, **kwargs):
        from pandas.core.internals import BlockManager

        if args or kwargs:
            return BlockManager(*args, **kwargs)
        return BlockManager.__new__(BlockManager, (), [], False)


def _reconstructor(cls, base, state):
    """copyreg._reconstructor (protocols 0/1) — routed through the BlockManager shim's __new__."""
    if cls is _BlockManagerShim:
        return cls.__new__(cls)
    import copyreg

    return copyreg._reconstructor(cls, base, state)


class _FrozenNDArray(np.ndarray):
    """pandas < 0.25 pickled some index internals as FrozenNDArray, a read-only ndarray."""


def legacy_location(module: str, name: str) -> tuple[str, str] | Any:
    """Today's (module, name) for a name an old pandas/numpy pickle refers to (or a shim)."""
    if module in ("copyreg", "copy_reg") and name == "_reconstructor":
        return _reconstructor
    if module.startswith("numpy.core"):  # numpy 2 moved numpy.core → numpy._core
        return "numpy._core" + module[len("numpy.core"):], name
    if name == "BlockManager" and module.startswith("pandas.core.internals"):
        return _BlockManagerShim
    if name == "FrozenNDArray":
        return _FrozenNDArray
    if module.startswith("pandas.indexes") or module == "pandas.core.index":
        name = _INDEX_RENAMES.get(name, name)
        return f"pandas.core.indexes.{_INDEX_MODULE_OF.get(name, 'base')}", name
    if module == "pandas.core.indexes.numeric":
        return "pandas.core.indexes.base", _INDEX_RENAMES.get(name, name)
    if module == "pandas.core.internals.blocks" and name == "new_block":
        return "pandas._libs.internals", "_unpickle_block"
    if module == "pandas.core.base" and name == "FrozenList":
        return "pandas.core.indexes.frozen", "FrozenList"
    if module == "pandas.tslib" or module == "pandas._libs.tslib":
        return "pandas._libs.tslibs.timestamps", name
    return module, name


_SAFE_BUILTINS = {"slice", "set", "frozenset", "list", "dict", "tuple", "complex", "bytearray", "bytes",
                  "object", "range", "int", "float", "str", "bool"}
_SAFE_EXACT = {
    ("copyreg", "_reconstructor"), ("copyreg", "__newobj__"), ("copyreg", "__newobj_ex__"),
    ("_codecs", "encode"), ("collections", "OrderedDict"),
    ("pyarrow.lib", "_restore_array"), ("pyarrow.lib", "type_for_alias"), ("pyarrow.lib", "py_buffer"),
}
_SAFE_FUNCTION_PREFIXES = ("_new_", "_unpickle", "__pyx_unpickle", "_nat_unpickle", "_reconstruct", "_frombuffer")
_PANDAS_MODULES = ("pandas.core", "pandas._libs", "pandas.arrays")


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asks for something that is not a numpy/pandas data class."""


class LegacyUnpickler(pickle.Unpickler):
    """The C unpickler (fast: find_class runs once per distinct name).

    With legacy renames and an allow-list of what may be constructed.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a pickled class: legacy names renamed, and only what the allow-list names constructed."""
        import _compat_pickle  # Python 2 names (__builtin__, copy_reg) → Python 3, as fix_imports does

        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        target = legacy_location(module, name)
        if not isinstance(target, tuple):
            return target
        module, name = target
        if not _allowed_name(module, name):
            raise RefusedGlobal(f"refusing to load {module}.{name}: not a numpy/pandas data class "
                                "(a pickle can run arbitrary code)")
        obj = super().find_class(module, name)
        if not _allowed_object(module, name, obj):
            raise RefusedGlobal(f"refusing to load {module}.{name}: not a numpy/pandas data class "
                                "(a pickle can run arbitrary code)")
        return obj


def _allowed_name(module: str, name: str) -> bool:
    if "." in name:  # protocol 4 resolves dotted names attribute by attribute: no detours
        return False
    if module == "builtins":
        return name in _SAFE_BUILTINS
    if (module, name) in _SAFE_EXACT:
        return True
    if module == "numpy" or module.startswith(("numpy._core", "numpy.dtypes")):
        return True  # decided on the object below
    return module == "pandas" or module.startswith(_PANDAS_MODULES)


def _data_bases() -> tuple[type, ...]:
    """Classes whose subclasses hold data and touch nothing outside the process."""
    import pandas._libs.internals as libinternals
    from pandas._libs.arrays import NDArrayBacked
    from pandas._libs.tslibs import BaseOffset, NaTType, Period, Timedelta, Timestamp
    from pandas.api.extensions import ExtensionArray, ExtensionDtype
    from pandas.core.base import PandasObject

    return (np.ndarray, np.dtype, np.generic, PandasObject, ExtensionDtype, ExtensionArray, NDArrayBacked,
            libinternals.BlockManager, libinternals.Block, libinternals.BlockPlacement,
            Timestamp, Timedelta, Period, BaseOffset, NaTType)


def _allowed_object(module: str, name: str, obj: Any) -> bool:
    if module in ("builtins", "copyreg", "_codecs", "collections", "pyarrow.lib"):
        return True  # only the exact names allowed above get here
    if isinstance(obj, type):
        # Not every class pandas/numpy export is data: pd.HDFStore / pd.ExcelWriter / np.memmap open files.
        return issubclass(obj, _data_bases()) and not issubclass(obj, np.memmap)
    origin = getattr(obj, "__module__", "") or ""
    return (origin.startswith(("numpy._core", "pandas._libs", "pandas.core"))
            and (name.startswith(_SAFE_FUNCTION_PREFIXES) or name in ("scalar", "new_block")))


def load_legacy_pickle(fileobj) -> Any:
    """Unpickle from a binary file object with the legacy shims and allow-list."""
    return LegacyUnpickler(fileobj, encoding="latin1").load()


# ---- writing the old layout (for tests and benchmarks) -------------------------------------------
class _Global:
    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class _NewObj:  # cls.__new__(cls) then __setstate__(state): what protocol 2 emitted for pandas objects
    def __init__(self, cls: _Global, state: Any):
        self.cls, self.state = cls, state


class _Reduce:
    def __init__(self, func: _Global, args: tuple):
        self.func, self.args = func, args


class _Fresh(tuple):
    """A tuple made on the fly by a __reduce__ (an array's state, its shape).

    Python 2's cPickle did not memoise objects with a reference count below 2, so these (and
    the data strings inside) never entered the memo: an unpickler frees them as soon as the
    array is built.
    """


class _LegacyPickler(pickle._Pickler):  # the Python pickler: its dispatch table can be extended
    dispatch = pickle._Pickler.dispatch.copy()

    def save_fresh_tuple(self, obj: _Fresh):
        if len(obj) <= 3:
            for item in obj:
                self.save(item)
            self.write((pickle.EMPTY_TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3)[len(obj)])
            return
        self.write(pickle.MARK)
        for item in obj:
            self.save(item)
        self.write(pickle.TUPLE)

    def save_global_ref(self, obj: _Global, name=None):
        key = (obj.module, obj.name)
        memo_key = id(self._globals.setdefault(key, obj))
        if memo_key in self.memo:
            self.write(self.get(self.memo[memo_key][0]))
            return
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("ascii"))
        self.memoize(self._globals[key])

    def save_newobj(self, obj: _NewObj):
        self.save(obj.cls)
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        self.save(obj.state)
        self.write(pickle.BUILD)

    def save_reduce_ref(self, obj: _Reduce):
        self.save(obj.func)
        self.save(obj.args)
        self.write(pickle.REDUCE)
        self.memoize(obj)

    def save_py2_str(self, obj: bytes):
        # Python 2 wrote its byte strings as STRING opcodes: loading them needs encoding="latin1".
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256
                   else pickle.BINSTRING + n.to_bytes(4, "little") + obj)  # not memoized: may be a cached object

    def save_py2_text(self, obj: str):
        try:
            self.save_py2_str(obj.encode("ascii"))  # Python 2 `str` for ASCII names and labels
        except UnicodeEncodeError:
            pickle._Pickler.save_str(self, obj)

    dispatch[_Fresh] = save_fresh_tuple
    dispatch[_Global] = save_global_ref
    dispatch[_NewObj] = save_newobj
    dispatch[_Reduce] = save_reduce_ref
    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_text


_DTYPES: dict = {}


def _legacy_dtype(dtype: np.dtype) -> "_Build":
    # One object per dtype, as the pickler memoised numpy's shared dtype instances (BINGET after the first).
    if dtype not in _DTYPES:
        _, args, state = dtype.__reduce__()
        _DTYPES[dtype] = _Build(_Reduce(_Global("numpy", "dtype"), args), state)
    return _DTYPES[dtype]


def _legacy_array(arr: np.ndarray) -> _Reduce | _NewObj:
    """Ndarray the way numpy 1.x under Python 2 pickled it (numpy.core.multiarray._reconstruct)."""
    arr = np.asarray(arr)
    descr = _legacy_dtype(arr.dtype)
    if arr.dtype.kind == "O":
        data: Any = [_legacy_value(v) for v in arr.ravel(order="C")]
    else:
        data = np.ascontiguousarray(arr).tobytes()
    return _Build(_Reduce(_RECONSTRUCT, _EMPTY_ARRAY_ARGS), _Fresh((1, _Fresh(arr.shape), descr, False, data)))


_RECONSTRUCT = _Global("numpy.core.multiarray", "_reconstruct")
_EMPTY_ARRAY_ARGS = (_Global("numpy", "ndarray"), (0,), b"b")


class _Build:  # obj (a _Reduce) followed by BUILD(state)
    def __init__(self, obj: Any, state: Any):
        self.obj, self.state = obj, state


def _save_build(self: _LegacyPickler, obj: _Build):
    self.save(obj.obj)
    self.save(obj.state)
    self.write(pickle.BUILD)
    self.memoize(obj)  # a shared dtype is built once, then fetched (BINGET)


_LegacyPickler.dispatch[_Build] = _save_build


def _legacy_value(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return _legacy_array(v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _legacy_index(index: pd.Index) -> _Reduce:
    if isinstance(index, pd.RangeIndex):
        d = {"start": index.start, "stop": index.stop, "step": index.step, "name": index.name}
        return _Reduce(_Global("pandas.indexes.base", "_new_Index"), (_Global("pandas.indexes.range", "RangeIndex"), d))
    if index.dtype.kind in "iu":
        cls = _Global("pandas.indexes.numeric", "Int64Index")
        data = _legacy_array(index.to_numpy(dtype=np.int64))
    else:
        cls = _Global("pandas.indexes.base", "Index")
        data = _legacy_array(index.to_numpy(dtype=object))
    return _Reduce(_Global("pandas.indexes.base", "_new_Index"), (cls, {"data": data, "name": index.name}))


def dump_legacy_dataframe(df: pd.DataFrame, fileobj) -> None:
    """Write ``df`` the way pandas 0.19 under Python 2 pickled a DataFrame (protocol 2).

    Columns of float dtype become one float block, everything else one object block, in the
    pandas-0.14.1 BlockManager state layout that old pickles carry.
    """
    items = _legacy_index(pd.Index(df.columns, dtype=object))
    axes = [items, _legacy_index(df.index)]
    float_cols = [i for i, c in enumerate(df.columns) if df[c].dtype.kind == "f"]
    object_cols = [i for i in range(df.shape[1]) if i not in float_cols]
    block_values, block_items, blocks = [], [], []
    for locs, dtype in ((float_cols, np.float64), (object_cols, object)):
        if not locs:
            continue
        values = np.empty((len(locs), len(df)), dtype=dtype)
        for j, loc in enumerate(locs):
            values[j] = df.iloc[:, loc].to_numpy(dtype=dtype)
        legacy_values = _legacy_array(values)
        block_values.append(legacy_values)
        block_items.append(_legacy_index(pd.Index([df.columns[i] for i in locs], dtype=object)))
        blocks.append({"values": legacy_values, "mgr_locs": _legacy_array(np.asarray(locs, dtype=np.int64))})
    extra_state = {"0.14.1": {"axes": axes, "blocks": blocks}}
    manager = _NewObj(_Global("pandas.core.internals", "BlockManager"), (axes, block_values, block_items, extra_state))
    frame = _NewObj(_Global("pandas.core.frame", "DataFrame"), {"_data": manager, "_typ": "dataframe", "_metadata": []})
    pickler = _LegacyPickler(fileobj, protocol=2)
    pickler._globals = {}
    pickler.dump(frame)


def dumps_legacy_dataframe(df: pd.DataFrame) -> bytes:
    """Return the legacy pickle of ``df`` as bytes (for tests and fixtures)."""
    buf = io.BytesIO()
    dump_legacy_dataframe(df, buf)
    return buf.getvalue()
