"""train_overhead: fastai `Learner` training img/s ÷ a hand-written PyTorch loop over the same model, tensors and
optimizer (CPU, Lite0). Target ≥ 0.97.

Both sides train the same Lite0 (Mode A: 3 parameter groups, SGD momentum 0.9 at 1e-3/1e-3/1e-2, channels-last as the
study runs it) on the same in-memory batches of real wikiart7 images. The Learner is `artstudy.train.build_learner`
(torch SGD through `OptimWrapper`, our callbacks); its time is the training phase of an epoch (before_train →
after_train), so validation is left out. The two are measured alternately, `--repeats` times, in one process; the ratio
is the median of the per-repeat ratios. Usage: python bench/train_overhead.py [--size 128] [--bs 32] [--batches 4]
"""
import argparse, time
import _common as C

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128); ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--batches", type=int, default=4); ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer repeats (3)")
    a = ap.parse_args()
    if a.quick: a.repeats = 3
    C.ensure_fast_env()
    import torch
    from torch.utils.data import TensorDataset
    from fastai.vision.all import Callback, DataLoaders
    from artstudy.models import split_groups
    from artstudy.train import build_learner, group_lrs, MODES
    load0 = C.loadavg()
    torch.manual_seed(0)
    x, y = C.real_batches(a.bs * (a.batches + 1), a.size)
    dls = DataLoaders.from_dsets(TensorDataset(x[:a.bs * a.batches], y[:a.bs * a.batches]), TensorDataset(x[-a.bs:], y[-a.bs:]),
                                 bs=a.bs, shuffle=False, drop_last=False, num_workers=0, device="cpu")
    dls.c = 7
    learn = build_learner(dls, "efficientnet_lite0", "mode_a", channels_last=True, mixed_precision=False)
    lrs = group_lrs(MODES["mode_a"], len(split_groups(learn.model)))

    class TrainTimer(Callback):
        order = 99
        def before_train(self): self.t, self.c = time.perf_counter(), time.process_time()
        def after_train(self): self.seconds, self.cpu = time.perf_counter() - self.t, time.process_time() - self.c
    timer = TrainTimer(); learn.add_cb(timer)

    model = learn.model
    opt = torch.optim.SGD([{"params": g, "lr": lr} for g, lr in zip(split_groups(model), lrs)], lr=lrs[-1], momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    loop_dl = torch.utils.data.DataLoader(TensorDataset(x[:a.bs * a.batches], y[:a.bs * a.batches]), batch_size=a.bs)
    n = a.bs * a.batches

    def fastai_run():
        with learn.no_bar(), learn.no_logging(): learn.fit(1, lr=lrs)
        return timer.seconds, timer.cpu
    def loop_run():
        model.train(); t, c = time.perf_counter(), time.process_time()
        for xb, yb in loop_dl:
            xb = xb.contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(xb), yb)
            loss.backward(); opt.step(); opt.zero_grad()
        return time.perf_counter() - t, time.process_time() - c

    fastai_run(); loop_run()   # warm-up (allocator, optimizer state)
    rows = []
    for r in range(a.repeats):
        if r % 2 == 0: tf, tl = fastai_run(), loop_run()
        else: tl = loop_run(); tf = fastai_run()
        rows.append(dict(fastai_img_s=n / tf[0], loop_img_s=n / tl[0], ratio=tl[0] / tf[0], ratio_cpu=tl[1] / tf[1]))
    opt_type = type(learn.opt.opt).__name__ if hasattr(learn.opt, "opt") else type(learn.opt).__name__
    C.emit("train_overhead", dict(
        bench="train_overhead", ratio=round(C.median([r["ratio"] for r in rows]), 3), target=">= 0.97",
        fastai_img_s=round(C.median([r["fastai_img_s"] for r in rows]), 1),
        loop_img_s=round(C.median([r["loop_img_s"] for r in rows]), 1),
        ratios=[round(r["ratio"], 3) for r in rows],
        ratio_cpu_time=round(C.median([r["ratio_cpu"] for r in rows]), 3),
        ratios_cpu_time=[round(r["ratio_cpu"], 3) for r in rows], model="tf_efficientnet_lite0, mode_a (3 groups, SGD 0.9)",
        optimizer=f"torch {opt_type} via fastai OptimWrapper", size=a.size, bs=a.bs, images_per_measure=n,
        repeats=a.repeats, channels_last=True, device="cpu", loadavg_before=load0, loadavg_after=C.loadavg(),
        machine=C.machine()))

if __name__ == "__main__": main()
