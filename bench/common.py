"""Shared helpers of the benchmark scripts: paths, audio sets, devices, machine facts, load monitoring,
statistics, tables and result files. Only numpy/soundfile/torch (and the standard library) are needed, so this
imports in both aviary's virtualenv and the NeMo one."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
AUDIO = BENCH / "audio"
RESULTS = BENCH / "results"
MODELS = BENCH / "models"
FIXTURE_MODELS = REPO / "tests" / "fixtures" / "models"
DEFAULT_MODEL = MODELS / "parakeet-tdt_ctc-110m.nemo"
QUICK_MODEL_NAMES = ("fastconformer_hybrid_tdt_ctc_bpe.nemo", "fastconformer_rnnt_bpe.nemo",
                     "fastconformer_ctc_bpe.nemo")
NEMO_PYTHON = Path("/work/nemo-venv/bin/python")
SR = 16000

if str(REPO) not in sys.path:  # so `python bench/x.py` can import models/, service/ and bench/
    sys.path.insert(0, str(REPO))


# ---------------------------------------------------------------------------------------------------------
# Models and audio
# ---------------------------------------------------------------------------------------------------------

def resolve_model(path: str | None, quick: bool) -> Path:
    """The checkpoint to benchmark: --model, else the tiny TDT fixture (--quick), else the 110M bench model."""
    if path:
        return Path(path)
    if quick:
        for name in QUICK_MODEL_NAMES:
            if (FIXTURE_MODELS / name).exists():
                return FIXTURE_MODELS / name
        raise SystemExit(f"--quick needs a fixture model in {FIXTURE_MODELS} (none of {QUICK_MODEL_NAMES})")
    if not DEFAULT_MODEL.exists():
        raise SystemExit(f"{DEFAULT_MODEL} is missing: build it with\n  /work/nemo-venv/bin/python "
                         "tools/make_bench_models.py --out bench/models")
    return DEFAULT_MODEL


@dataclass(frozen=True)
class Clip:
    path: Path
    seconds: float


def ensure_audio() -> dict[str, list[Clip]]:
    """The benchmark audio sets (built on first use by bench/make_audio.py)."""
    index = AUDIO / "sets.json"
    if not index.exists():
        from bench import make_audio

        make_audio.build(AUDIO)
    sets = json.loads(index.read_text())
    return {name: [Clip(AUDIO / it["file"], float(it["seconds"])) for it in items] for name, items in sets.items()}


def audio_set(name: str, quick: bool = False) -> list[Clip]:
    clips = ensure_audio()[name]
    if quick and name == "mixed":  # three short clips and the long one
        clips = [c for c in clips if c.seconds < 7][:3] + [c for c in clips if c.seconds >= 7][:1]
    return clips


def read_wav(path: Path) -> np.ndarray:
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32")
    if sr != SR or x.ndim != 1:
        raise ValueError(f"{path}: expected 16 kHz mono")
    return x


def equal_batch(batch: int, seconds: float) -> np.ndarray:
    """``[batch, seconds*16000]`` float32 speech cut from the long clips at different offsets (no padding)."""
    n = round(seconds * SR)
    sources = [read_wav(c.path) for c in ensure_audio()["long"]]
    sources = [s for s in sources if len(s) >= n] or [np.tile(sources[-1], int(np.ceil(n / len(sources[-1]))))]
    rows = []
    for i in range(batch):
        src = sources[i % len(sources)]
        span = len(src) - n
        start = 0 if span <= 0 else int((i * 0.37 * SR * 7) % (span + 1))
        rows.append(src[start:start + n])
    return np.stack(rows)


# ---------------------------------------------------------------------------------------------------------
# Device, threads, machine
# ---------------------------------------------------------------------------------------------------------

def pick_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def set_threads(n: int | None) -> int:
    import torch

    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: Any = None, threads: int | None = None) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host_nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": threads or torch.get_num_threads(),
        "device": str(device) if device is not None else "cpu",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "loadavg_at_start": list(os.getloadavg()),
    }
    if device is not None and str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / _HZ, total / _HZ


def tree_cpu(root: int | None = None) -> float:
    """CPU seconds (user + system) used so far by a process and all its live descendants."""
    root = root or os.getpid()
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        pid, ppid = int(d.name), int(rest[1])
        children.setdefault(ppid, []).append(pid)
        cpu[pid] = (float(rest[11]) + float(rest[12])) / _HZ
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += children.get(pid, [])
    return total


class LoadMonitor:
    """Samples, once a second in a daemon thread, the 1-minute load average and -- more precise -- the CPU
    used by *other* processes (machine busy time minus this process tree's), in cores. On a quiet machine
    `others_cores` is ~0; anything above ~0.1 means someone else was computing during the measurement."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.samples: list[float] = []
        self.others: list[float] = []
        self.ours: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        busy0, _ = system_cpu()
        own0, t0 = tree_cpu(), time.monotonic()
        while not self._stop.wait(self.interval):
            busy1, _ = system_cpu()
            own1, t1 = tree_cpu(), time.monotonic()
            dt = t1 - t0
            if dt > 0:
                self.ours.append(max(own1 - own0, 0.0) / dt)
                self.others.append(max((busy1 - busy0) - (own1 - own0), 0.0) / dt)
            self.samples.append(os.getloadavg()[0])
            busy0, own0, t0 = busy1, own1, t1

    def __enter__(self) -> LoadMonitor:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> dict[str, float]:
        s = self.samples or [os.getloadavg()[0]]
        o = self.others or [0.0]
        return {"loadavg_min": round(min(s), 2), "loadavg_mean": round(statistics.fmean(s), 2),
                "loadavg_max": round(max(s), 2), "others_cores_mean": round(statistics.fmean(o), 3),
                "others_cores_p95": round(percentile(o, 95), 3),
                "ours_cores_mean": round(statistics.fmean(self.ours or [0.0]), 3)}


def others_busy(seconds: float) -> float:
    """Cores used by other processes over the next `seconds`."""
    busy0, _ = system_cpu()
    own0, t0 = tree_cpu(), time.monotonic()
    time.sleep(seconds)
    busy1, _ = system_cpu()
    own1 = tree_cpu()
    return max((busy1 - busy0) - (own1 - own0), 0.0) / (time.monotonic() - t0)


def wait_for_quiet(max_load: float, timeout_s: float, max_others: float = 0.1, window_s: float = 10.0) -> float:
    """Wait (up to timeout_s) until other processes have used at most `max_others` cores over two
    consecutive `window_s` windows and the 1-minute load average is at most max_load; returns the load."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline:
        others = others_busy(window_s)
        quiet = quiet + 1 if others <= max_others and os.getloadavg()[0] <= max_load else 0
        if quiet >= 2:
            break
    return os.getloadavg()[0]


# ---------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------

def proc_status_mb(pid: int | str = "self") -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process in MiB, from /proc (Linux)."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return out


# ---------------------------------------------------------------------------------------------------------
# Statistics, tables, results
# ---------------------------------------------------------------------------------------------------------

def median(values: Iterable[float]) -> float:
    v = list(values)
    return float(statistics.median(v)) if v else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def fmt(x: Any, nd: int = 2) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "-"
        return f"{x:.{nd}f}"
    return "-" if x is None else str(x)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], nd: int = 2) -> str:
    """A GitHub-markdown table (also readable on a terminal)."""
    cells = [[fmt(c, nd) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(str(c).rjust(w) for c, w in zip(r, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def read_results(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def add_common_args(ap: Any, quick_help: str = "tiny fixture model, few repeats: a smoke run in < 1 min") -> None:
    ap.add_argument("--model", help="a .nemo checkpoint (default: bench/models/parakeet-tdt_ctc-110m.nemo)")
    ap.add_argument("--device", default="auto", help="auto (cuda when present, else cpu) | cpu | cuda | cuda:N")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--out", default=None, help="results name: bench/results/<out>.json")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="LOAD",
                    help="before measuring, wait (up to 60 min) until other processes have used < 0.1 cores for "
                         "20 s and the 1-minute load average is <= LOAD")


LOCK_PATH = Path(os.environ.get("AVIARY_BENCH_LOCK", "/tmp/aviary-bench.lock"))
_lock_file: Any = None


def bench_lock() -> None:
    """Take the machine-wide benchmark lock (flock on LOCK_PATH), held until this process exits, so that two
    benchmarks that both use --wait-quiet never measure at the same time."""
    global _lock_file
    if _lock_file is not None:
        return
    import fcntl

    _lock_file = open(LOCK_PATH, "a+")  # noqa: SIM115 - held open until exit
    try:
        fcntl.flock(_lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"waiting for another benchmark to finish (lock {LOCK_PATH}) ...", flush=True)
        fcntl.flock(_lock_file, fcntl.LOCK_EX)


def maybe_wait(args: Any) -> None:
    """Honours --wait-quiet: benchmarks on a shared machine should start when nobody else is computing
    (and never while another --wait-quiet benchmark measures: see bench_lock)."""
    if getattr(args, "wait_quiet", 0) > 0:
        bench_lock()
        print(f"waiting for a quiet machine (load now {os.getloadavg()[0]:.2f}) ...", flush=True)
        t0 = time.monotonic()
        load = wait_for_quiet(args.wait_quiet, 3600)
        print(f"  load {load:.2f} after {time.monotonic() - t0:.0f} s of waiting, starting", flush=True)
