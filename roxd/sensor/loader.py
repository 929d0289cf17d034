"""Loading one bcc object, the same way for every sensor (the main programs in program.py, the
seccomp programs in seccomp/learner.py):

    tracefs mounted → kernel headers resolved (BCC_KERNEL_SOURCE ...) → source read, its
    `#include "x.bpf.c"` lines inlined → bcc imported → compiled and loaded, timed → clang/LLVM
    memory given back.

Every failure is a SensorError that says what to do. bcc is imported only here, and only when
a program is loaded, so unit tests need no bcc.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import dataclasses
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roxd.errors import SensorError
from roxd.sensor.headers import HeaderTree, resolve_headers
from roxd.sensor.tracefs import ensure_tracefs, tracefs_root
from roxd.startup_timing import MAIN, StageTime, timed

log = logging.getLogger(__name__)

# libbcc's compile is not reentrant: two BPF(text=...) at once in one process crash it
# (measured with bcc 0.26: SIGSEGV in both of two runs of two threads compiling roxd.bpf.c).
# The daemon compiles on a thread at start and the seccomp tracer compiles on an API call:
# one compile at a time, whoever asks.
_compile_lock = threading.Lock()

# Extra cflags computed from the source text and the tracefs root (e.g. -DHAVE_TP_<name>).
SourceFlags = Callable[[str, "Path | None"], Sequence[str]]


def default_bpf_dir() -> Path:
    """bpf/ beside the package in a source checkout, /usr/share/roxd/bpf when installed."""
    env = os.environ.get("ROXD_BPF_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "bpf"
    if (checkout / "roxd.bpf.c").exists():
        return checkout
    return Path("/usr/share/roxd/bpf")


@dataclass(frozen=True)
class BccObject:
    """A compiled and loaded bcc.BPF, with how it was made."""

    bpf: Any  # bcc.BPF
    source: str  # the text handed to bcc (includes inlined)
    headers: HeaderTree
    tracefs: Path | None
    load_seconds: float
    # "bpf compile" (clang and LLVM in libbcc) and "bpf load" (the kernel's verifier, and
    # with attach=True the attach): wall and CPU seconds of the thread that ran them
    stages: tuple[StageTime, ...] = ()
    # "cache": the compiled-object cache's bytecode (bpf_cache.py), no compile; "compiled":
    # compiled at this start (and written to the cache where it could be); `cache_note`
    # says why the cache was not used or not written ("" when it was)
    origin: str = "compiled"
    cache_note: str = ""


def read_source(bpf_dir: Path, main: str) -> str:
    """`main` with its `#include "x.bpf.c"` lines inlined: bcc generates tracepoint argument
    structs only for probes in the main text, not in included files."""
    try:
        text = (bpf_dir / main).read_text()
        return re.sub(
            r'^#include "([\w.]+\.bpf\.c)"$',
            lambda m: (bpf_dir / m.group(1)).read_text(),
            text,
            flags=re.MULTILINE,
        )
    except OSError as exc:
        raise SensorError(
            f"eBPF sources not found in {bpf_dir} ({exc.strerror}); set ROXD_BPF_DIR or "
            f"sensor.bpf_dir in the config") from exc


def optional_tracepoints(source: str, tracefs: Path | None) -> list[str]:
    """-DHAVE_TP_<name> for each `#ifdef HAVE_TP_<name>` probe whose tracepoint this kernel
    has (no CONFIG_MODULES: no init_module; no kexec; older: no fchmodat2). <name> is a
    syscalls:<name> event, or <category>__<event> for another category
    (HAVE_TP_io_uring__io_uring_create: no CONFIG_IO_URING, no ring setups reported)."""
    root = tracefs or tracefs_root()
    flags = []
    for name in sorted(set(re.findall(r"^#ifdef HAVE_TP_(\w+)$", source, re.MULTILINE))):
        category, _, event = name.partition("__") if "__" in name else ("syscalls", "", name)
        if root is not None and (root / "events" / category / event).is_dir():
            flags.append(f"-DHAVE_TP_{name}")
        else:
            log.info("tracepoint %s:%s not in this kernel: not watched", category, event)
    return flags


def import_bcc() -> Any:
    """bcc.BPF (Debian python3-bpfcc), or a SensorError that names the package."""
    try:
        from bcc import BPF
    except ImportError as exc:
        raise SensorError(
            "the bcc Python module is missing: install python3-bpfcc (Debian/Ubuntu) or "
            "python3-bcc (Fedora)") from exc
    return BPF


def load_bcc(bpf_dir: Path, main: str, *, cache_dir: Path, what: str,
             cflags: Sequence[str] = (), source_flags: SourceFlags | None = None,
             attach: bool = True) -> BccObject:
    """Compile and load `bpf_dir/main` (`what` names it in errors: "the eBPF programs").
    attach=False: compile and load (verify) every program but attach none; attach_deferred()
    attaches them later (the daemon compiles early and attaches when it is ready to read
    the ring buffer: events of the start-up seconds would otherwise queue up unread)."""
    tracefs = ensure_tracefs()
    headers = resolve_headers(cache_dir)
    os.environ.update(headers.env)
    source = read_source(bpf_dir, main)
    bpf_class = _timed_class(import_bcc(), attach)
    flags = [*cflags, *(source_flags(source, tracefs) if source_flags else ())]
    thread = threading.current_thread()
    label = MAIN if thread is threading.main_thread() else thread.name
    with _compile_lock:
        started, cpu = time.monotonic(), time.thread_time()
        try:
            bpf = bpf_class(text=source.encode(), cflags=flags)
        except Exception as exc:  # bcc raises bare Exception for compile/load/attach
            raise SensorError(f"loading {what} failed: {exc}") from exc
        ended, cpu_end = time.monotonic(), time.thread_time()
    compiled, compiled_cpu = getattr(bpf, "roxd_compiled_at", None) or (ended, cpu_end)
    helper_cpu = getattr(bpf, "roxd_helper_cpu", 0.0)
    stages = (StageTime("bpf compile", compiled - started, compiled_cpu - cpu, label),
              StageTime("bpf load" if not attach else "bpf load and attach",
                        ended - compiled, cpu_end - compiled_cpu + helper_cpu, label))
    release_compiler_memory()  # page LLVM back out: it is needed only for the compile
    return BccObject(bpf, source, headers, tracefs, ended - started, stages)


def _timed_class(bpf_class: Any, attach: bool) -> Any:
    """bcc.BPF that notes when its compile ended (its constructor compiles, then loads in
    _trace_autoload); with attach=False, the Deferred class below."""
    base = bpf_class if attach else _deferred_class(bpf_class)

    class Timed(base):  # type: ignore[misc, valid-type]
        def _trace_autoload(self) -> None:
            self.roxd_compiled_at = (time.monotonic(), time.thread_time())
            super()._trace_autoload()

    return Timed


def _deferred_class(bpf_class: Any) -> Any:
    """A bcc.BPF whose automatic attach (done in its constructor) only loads the programs;
    attach_deferred() runs bcc's own autoload, which reuses the loaded programs by name."""
    from bcc.libbcc import lib

    class Deferred(bpf_class):  # type: ignore[misc, valid-type]
        roxd_helper_cpu = 0.0  # CPU seconds of the second loading thread

        def _trace_autoload(self) -> None:
            names = [lib.bpf_function_name(self.module, i)
                     for i in range(lib.bpf_num_functions(self.module))]
            kinds = [(name, bpf_class.TRACEPOINT if name.startswith(b"tracepoint__")
                      else bpf_class.RAW_TRACEPOINT) for name in names
                     if name.startswith((b"tracepoint__", b"raw_tracepoint__"))]
            self.roxd_helper_cpu = load_on_two_threads(self.load_func, kinds)

        def attach_deferred(self) -> None:
            bpf_class._trace_autoload(self)

    return Deferred


def load_on_two_threads(load_func: Callable[[bytes, int], Any],
                        programs: Sequence[tuple[bytes, int]]) -> float:
    """load_func(name, kind) for every program, half of them on a helper thread; the first
    error is raised here, on the calling thread. Returns the helper thread's CPU seconds.
    The kernel verifies each program in the bpf() call, with the GIL released: two threads
    verify two at a time (measured: 92 programs in 0.26 s against 0.43 s on one thread, quiet
    2-core host). bcc's load_func only reads the compiled program and caches the fd under
    the GIL."""
    errors: list[BaseException] = []
    cpu: list[float] = []

    def load(part: Sequence[tuple[bytes, int]], helper: bool) -> None:
        start = time.thread_time()
        try:
            for name, kind in part:
                load_func(name, kind)
        except BaseException as exc:  # raised below, on the calling thread
            errors.append(exc)
        if helper:
            cpu.append(time.thread_time() - start)

    helper = threading.Thread(target=load, args=(programs[1::2], True), name="bpf-load",
                              daemon=True)
    helper.start()
    load(programs[0::2], False)
    helper.join()
    if errors:
        raise errors[0]
    return sum(cpu)


def attach_deferred(bpf: Any) -> None:
    """Attach what load_bcc(attach=False) loaded; nothing for an object already attached."""
    attach = getattr(bpf, "attach_deferred", None)
    if attach is not None:
        attach()


def release_compiler_memory() -> None:
    """clang/LLVM are needed only for the one compile at start: give back their freed heap
    (malloc_trim) and page out their ~85 MB of library text (MADV_PAGEOUT, Linux 5.4), which
    would otherwise stay resident for the daemon's whole life. A later recompile simply pages
    them back in."""
    libc = ct.CDLL("libc.so.6", use_errno=True)
    with contextlib.suppress(AttributeError):
        libc.malloc_trim(0)
    madv_pageout = 21
    libc.madvise.argtypes = (ct.c_void_p, ct.c_size_t, ct.c_int)
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or not ("libLLVM" in fields[5] or "libclang" in fields[5]):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        libc.madvise(start, end - start, madv_pageout)  # best effort; failure changes nothing


# ---------------------------------------------------------------------------- cached
# The main sensor loads through the compiled-object cache (bpf_cache.py, cached_bpf.py): on a
# hit no clang and no LLVM run at all; on a miss the source is compiled with a sentinel pid,
# the bytecode saved, and the programs loaded from it the same way as on a hit, so both
# starts run the same loader. Anything unexpected falls back to load_bcc (the compile as it
# always was) with one log line.

BPF_CACHE_ENV = "ROXD_BPF_CACHE_DIR"  # where cached objects go (default: the cache dir)
BPF_CACHE_OFF_ENV = "ROXD_BPF_CACHE"  # "off": compile at every start, as before the cache


def bpf_cache_dir(cache_dir: Path) -> Path:
    env = os.environ.get(BPF_CACHE_ENV)
    return Path(env) if env else cache_dir


def load_cached(bpf_dir: Path, main: str, *, cache_dir: Path, what: str,
                cflags: Sequence[str] = (), source_flags: SourceFlags | None = None,
                attach: bool = True) -> BccObject:
    """load_bcc through the compiled-object cache: the same programs and maps, and an object
    with the same interface (a bcc.BPF subclass, cached_bpf.py)."""
    from roxd.sensor import bpf_cache

    if os.environ.get(BPF_CACHE_OFF_ENV, "").lower() in ("off", "0", "no", "false"):
        loaded = load_bcc(bpf_dir, main, cache_dir=cache_dir, what=what, cflags=cflags,
                          source_flags=source_flags, attach=attach)
        return dataclasses.replace(loaded, cache_note=f"{BPF_CACHE_OFF_ENV}=off")
    tracefs = ensure_tracefs()
    headers = resolve_headers(cache_dir)
    os.environ.update(headers.env)
    source = read_source(bpf_dir, main)
    flags = bpf_cache.with_sentinel(
        [*cflags, *(source_flags(source, tracefs) if source_flags else ())])
    label = MAIN if threading.current_thread() is threading.main_thread() \
        else threading.current_thread().name
    store = bpf_cache_dir(cache_dir)
    stages: list[StageTime] = []
    started = time.monotonic()
    with timed(stages, "bpf cache load", label):
        # the source's own headers (common.h, found through -I) are part of what compiles
        local = "".join(p.read_text() for p in sorted(bpf_dir.glob("*.h")))
        # where the sources sit is no input of the bytecode (their text is): checkouts and
        # installs share a cache
        keyed = ["-I<bpf_dir>" if f == f"-I{bpf_dir}" else f for f in flags]
        key = bpf_cache.cache_key(source + local, keyed,
                                  bpf_cache.headers_identity(headers.path))
        refused = bpf_cache.refused(store, key)
        obj = None
        if refused:
            note = f"not cacheable on this host: {refused}"
        else:
            try:
                obj = bpf_cache.load(store, key)
                note = "" if obj is not None else "no cached object for these inputs"
            except bpf_cache.CacheError as exc:
                note = f"cached object set aside: {exc}"
                log.warning("eBPF object cache: %s; compiling", note)
                bpf_cache.set_aside(store, key)
    if refused:  # found out at an earlier start: compile once, as before the cache
        log.info("eBPF object cache: %s; compiling", note)
        return _uncached(bpf_dir, main, cache_dir, what, cflags, source_flags, attach, note)
    origin = "cache"
    if obj is None:
        origin = "compiled"
        obj, why = _compile_for_cache(source, flags, key, store, what, stages, label)
        if obj is None:
            # every start would compile twice: remember it for these inputs
            log.warning("eBPF object cache: %s; loading the compile as before", why)
            bpf_cache.mark_refused(store, key, why)
            return _uncached(bpf_dir, main, cache_dir, what, cflags, source_flags, attach,
                             why)
        note = why or note
    try:
        bpf = _open_and_load(obj, attach, stages, label)
    except Exception as exc:  # OSError from bpf(), bare Exception from bcc's attach
        why = f"loading the cached object failed: {exc}"
        log.warning("eBPF object cache: %s; compiling as before", why)
        bpf_cache.set_aside(store, key)
        if origin == "compiled":  # refused fresh from the compile: so it will be next time
            bpf_cache.mark_refused(store, key, why)
        return _uncached(bpf_dir, main, cache_dir, what, cflags, source_flags, attach, why)
    if origin == "cache":
        log.info("eBPF programs loaded from the compiled-object cache (%s), no compile",
                 bpf_cache.cache_file(store, key).name[:12])
        # no compile ran, but importing bcc mapped libLLVM and libclang, and the dynamic
        # linker's relocations left about 40 MB of them resident (idle RSS 143 MB against 98
        # after a start that compiled and paged them out): give them back the same way
        release_compiler_memory()
    return BccObject(bpf, source, headers, tracefs, time.monotonic() - started,
                     tuple(stages), origin, note)


def _compile_for_cache(source: str, flags: list[str], key: str, store: Path, what: str,
                       stages: list[StageTime], label: str) -> tuple[Any, str]:
    """Compile with the sentinel pid, load nothing, take the bytecode, save it: (the
    CompiledObject, a note on saving) or (None, why it cannot be cached)."""
    from roxd.sensor import bpf_cache

    base = import_bcc()

    class CompileOnly(base):  # type: ignore[misc, valid-type]
        def _trace_autoload(self) -> None:
            pass  # the programs are loaded from the extracted bytecode

    with _compile_lock:
        with timed(stages, "bpf compile", label):
            try:
                bpf = CompileOnly(text=source.encode(), cflags=flags)
            except Exception as exc:  # bcc raises bare Exception for compile errors
                raise SensorError(f"loading {what} failed: {exc}") from exc
        try:
            with timed(stages, "bpf cache write", label):
                try:
                    obj = bpf_cache.extract(bpf, key)
                except Exception as exc:  # CacheError, OSError from bpf(), or libbcc's
                    return None, f"the compiled object cannot be cached: {exc}"
                note = ""
                try:
                    bpf_cache.save(store, obj)
                except OSError as exc:
                    note = f"not written to {store}: {exc.strerror or exc}"
                    log.warning("eBPF object cache: %s", note)
        finally:
            bpf.cleanup()  # its maps go; the extracted object creates its own
    release_compiler_memory()
    return obj, note


def _open_and_load(obj: Any, attach: bool, stages: list[StageTime], label: str) -> Any:
    """Maps created, the automatically attached programs verified on two threads (the
    kernel's verifier runs with the GIL released), attached unless attach=False."""
    from roxd.sensor.cached_bpf import open_cached

    with timed(stages, "bpf maps", label):
        bpf = open_cached(obj, os.getpid())
    try:
        names = bpf.roxd_autoload()
        wall, own = time.monotonic(), time.thread_time()
        helper_cpu = load_on_two_threads(bpf.load_func, names)
        if attach:
            bpf.attach_deferred()
        stages.append(StageTime("bpf load and attach" if attach else "bpf load",
                                time.monotonic() - wall,
                                time.thread_time() - own + helper_cpu, label))
    except BaseException:
        bpf.cleanup()
        raise
    return bpf


def _uncached(bpf_dir: Path, main: str, cache_dir: Path, what: str, cflags: Sequence[str],
              source_flags: SourceFlags | None, attach: bool, why: str) -> BccObject:
    loaded = load_bcc(bpf_dir, main, cache_dir=cache_dir, what=what, cflags=cflags,
                      source_flags=source_flags, attach=attach)
    return dataclasses.replace(loaded, cache_note=why)
