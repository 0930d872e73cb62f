"""The stacked evaluation engine vs the one-at-a-time loop, same run (issue #16 part 1).

Run: OMP_NUM_THREADS=1 pytest benchmarks/bench_stacked.py -m bench --benchmark-enable -s
(and again with OMP_NUM_THREADS=2); the last case prints the table: ratios, achieved GFLOP/s
next to a matrix-multiply peak measured in the same run (the roofline line), and peak memory.

Training: ConvNet-3, DSA protocol, a fixed number of optimizer steps on an IPC-1/10/50 set of
MNIST (1x28x28) or CIFAR-10 (3x32x32) shape, K networks by the loop (``engine: loop``) and by
the stacked engine with its CPU kernel (``split``: each network's own forward/backward in a
shared step) and its grouped ``wide`` kernel. Throughput is networks x steps per hour, reported
as networks per hour of a 300-epoch run. Scoring: K networks on a 500-image test set (10,000
would cost minutes per case on one core; the ratio does not depend on the count) by K separate
passes vs one pass. Peak memory: the process's peak RSS rise during the case (sampled every
5 ms from /proc; the allocator keeps freed pages, so later cases can read low).

Where the time goes (torch.profiler, one ConvNet-3 fwd+bwd, MNIST batch 10, fp32, 1 thread):
convolution forward+backward ~58%, GroupNorm fwd+bwd ~15%, avg-pool fwd+bwd ~17%, ReLU ~6%:
the step is compute- and memory-bound, not overhead-bound, so putting K networks in one step
cannot buy the issue's 5x on this CPU; the stacked engine saves the per-step Python, sampling
and optimizer overheads and reads each test batch once.

Measured 2026-12-02 on the project's 2-core Xeon (Sapphire Rapids, AVX-512 bf16 + AMX), shared
with ~6 other processes (load ~10), one round per case, so single ratios are noisy:
* 1 thread (matmul peak fp32 72, bf16 540 GFLOP/s): split vs loop 0.86-1.24x (ignoring the
  first, cold case), 17-27 GFLOP/s both; wide 0.5-1.06x; IPC 50 1.00x; scoring 1.01-1.20x.
* 2 threads (matmul peak under that load: fp32 23, bf16 272 GFLOP/s): split vs loop K=10
  IPC 1 6.3x (MNIST) / 2.6x (CIFAR), IPC 10 2.8x / 1.5x; K=3 IPC 1 5.2x / 3.8x, IPC 10
  3.7x / 1.2x; IPC 50 1.15x; split 9-22 GFLOP/s vs the loop's 2-8: two-thread intra-op
  parallelism of small ops stalls on an oversubscribed machine, one network per worker thread
  does not (on a quiet machine expect less: at most ~2x over a well-scaling loop). Scoring
  0.8-1.1x (K=3/10), short of the 3x target: forward passes are compute-bound.
* Peak RSS rise: split +20-1000 MiB vs loop +0-520 (K networks' activations in flight at once
  with workers); wide up to +2 GiB training and (before its batches were cut to 1000/K) +11 GiB
  scoring K=10.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from benchmark import stacked
from benchmark.data import RealData, get_info
from benchmark.evaluate import TensorSource, TrainSettings, evaluate, get_protocol, model_seeds
from benchmark.evaluate import test_accuracy as one_pass  # not a test
from benchmark.models import create_model
from benchmark.seed import make_generator

pytestmark = pytest.mark.bench
STEPS = 2
RESULTS: dict[str, dict] = {}
THREADS = int(os.environ.get("OMP_NUM_THREADS", "1"))


class _NoTest:
    def __len__(self):
        return 1

    def iter_batches(self, bs, device):
        return iter(())


class PeakRSS:
    """Peak resident-set growth (MiB) while the block runs."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())
        self.mib = (self.peak - self.base) / 2**20


def _flops_per_step(arch, info, batch, precision) -> float:
    """FLOPs of one network's forward + backward on one batch (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    m = create_model(arch, info, make_generator(0, "init"))
    x = torch.randn(batch, info.channels, *info.im_size)
    with FlopCounterMode(display=False) as fc:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            torch.nn.functional.cross_entropy(m(x), torch.zeros(batch, dtype=torch.long)).backward()
    return float(fc.get_total_flops())


def _peak_gflops(dtype, seconds=0.6) -> float:
    a = torch.randn(1024, 1024, dtype=dtype)
    b = torch.randn(1024, 1024, dtype=dtype)
    a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 1024**3 * n / (time.perf_counter() - t0) / 1e9


@pytest.fixture(scope="module", autouse=True)
def _warm():
    """One untimed step of each engine first: oneDNN primitive caches, allocator, imports."""
    torch.set_num_threads(THREADS)
    for name in ("mnist", "cifar10"):
        info = get_info(name)
        src = TensorSource(torch.randn(10, info.channels, *info.im_size), torch.arange(10))
        proto = get_protocol("dsa").resolve(info, "ConvNet")
        for engine, kernel in (("loop", "auto"), ("stacked", "split"), ("stacked", "wide")):
            evaluate(src, proto, "ConvNet", info, _NoTest(), [0, 1], TrainSettings(max_steps=1, engine=engine,
                                                                                    stack_kernel=kernel))


SHAPES = {"mnist": "mnist", "cifar": "cifar10"}
TRAIN_CASES = [(shape, ipc, k, engine) for shape in ("mnist", "cifar") for ipc in (1, 10) for k in (3, 10)
               for engine in ("loop", "split", "wide")]
TRAIN_CASES += [("cifar", 50, 3, engine) for engine in ("loop", "split", "wide")]


@pytest.mark.parametrize("shape,ipc,k,engine", TRAIN_CASES, ids=[f"{s}-ipc{i}-K{k}-{e}" for s, i, k, e in TRAIN_CASES])
def test_train_throughput(benchmark, shape, ipc, k, engine):
    torch.set_num_threads(THREADS)
    info = get_info(SHAPES[shape])
    n = 10 * ipc
    g = torch.Generator().manual_seed(0)
    src = TensorSource(torch.randn(n, info.channels, *info.im_size, generator=g), torch.arange(n) % 10)
    proto = get_protocol("dsa").resolve(info, "ConvNet")
    s = TrainSettings(max_steps=STEPS, engine="loop" if engine == "loop" else "stacked",
                      stack_kernel="auto" if engine == "loop" else engine)
    seeds = model_seeds(0, "ConvNet", k)
    with PeakRSS() as mem:
        res = benchmark.pedantic(lambda: evaluate(src, proto, "ConvNet", info, _NoTest(), seeds, s),
                                 rounds=2 if ipc == 1 else 1, iterations=1)
    assert all(r.steps == STEPS for r in res)
    sec = benchmark.stats.stats.min
    steps_per_run = 301 * -(-n // proto.batch_size)  # a 300-epoch DSA evaluation (epochs 0..300)
    nets_per_hour = 3600 * k * STEPS / sec / steps_per_run
    flops = _flops_per_step("ConvNet", info, min(n, proto.batch_size), "fp32") * k * STEPS
    row = {"sec": sec, "nets_per_hour": nets_per_hour, "gflops": flops / sec / 1e9, "peak_mib": mem.mib}
    RESULTS[f"train {shape} ipc{ipc} K{k} {engine}"] = row
    benchmark.extra_info.update(row)


SCORE_N = 500
SCORE_CASES = [(k, engine, prec) for k in (3, 10) for engine in ("separate", "split", "wide") for prec in ("fp32",)]
SCORE_CASES += [(3, engine, "bf16") for engine in ("separate", "split", "wide")]


@pytest.mark.parametrize("k,engine,precision", SCORE_CASES, ids=[f"K{k}-{e}-{p}" for k, e, p in SCORE_CASES])
def test_score_k_networks(benchmark, k, engine, precision):
    torch.set_num_threads(THREADS)
    info = get_info("cifar10")
    g = torch.Generator().manual_seed(0)
    test = RealData(info, torch.randint(0, 256, (SCORE_N, 3, 32, 32), generator=g, dtype=torch.uint8),
                    torch.arange(SCORE_N) % 10, "test")
    nets = [create_model("ConvNet", info, make_generator(s, "init")) for s in range(k)]
    s = TrainSettings(precision=precision)
    if engine == "separate":
        fn = lambda: [one_pass(m, test, s) for m in nets]  # noqa: E731
    elif engine == "split":
        fn = lambda: stacked.test_accuracies(nets, test, s)  # noqa: E731
    else:
        wide = stacked.WideConvNet(nets)
        fn = lambda: stacked.test_accuracies_wide(wide, test, s)  # noqa: E731
    with PeakRSS() as mem:
        accs = benchmark.pedantic(fn, rounds=1, iterations=1)
    assert len(accs) == k
    sec = benchmark.stats.stats.mean
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        nets[0](torch.randn(100, 3, 32, 32))
    flops = fc.get_total_flops() * SCORE_N / 100 * k
    row = {"sec": sec, "gflops": flops / sec / 1e9, "peak_mib": mem.mib}
    RESULTS[f"score K{k} {engine} {precision}"] = row
    benchmark.extra_info.update(row)


def test_zz_report(benchmark):
    """The summary: speed-ups within this run, the roofline line, peak memory."""
    torch.set_num_threads(THREADS)
    peak32 = benchmark.pedantic(lambda: _peak_gflops(torch.float32), rounds=1, iterations=1)
    peak16 = _peak_gflops(torch.bfloat16)
    lines = [f"threads {THREADS}; matmul peak (1024^3, same run): fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s"]
    for key, r in RESULTS.items():
        if key.startswith("train") and key.endswith(" loop"):
            base = key[:-5]
            for eng in ("split", "wide"):
                o = RESULTS.get(f"{base} {eng}")
                if o:
                    lines.append(f"{base:<22} {eng:>5}: {o['nets_per_hour']:8.1f} nets/h vs loop "
                                 f"{r['nets_per_hour']:8.1f} = {o['nets_per_hour'] / r['nets_per_hour']:.2f}x; "
                                 f"{o['gflops']:.1f} vs "
                                 f"{r['gflops']:.1f} GFLOP/s; peak +{o['peak_mib']:.0f} vs +{r['peak_mib']:.0f} MiB")
    for key, r in RESULTS.items():
        if key.startswith("score") and " separate " in key:
            for eng in ("split", "wide"):
                o = RESULTS.get(key.replace("separate", eng))
                if o:
                    lines.append(f"{key.replace(' separate', ''):<22} {eng:>5}: {o['sec']:.2f} s vs {r['sec']:.2f} s "
                                 f"= {r['sec'] / o['sec']:.2f}x; {o['gflops']:.1f} vs {r['gflops']:.1f} GFLOP/s; "
                                 f"peak +{o['peak_mib']:.0f} vs +{r['peak_mib']:.0f} MiB")
    print("\n" + "\n".join(lines))
    benchmark.extra_info["report"] = lines
