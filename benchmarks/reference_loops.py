"""Plain reference-style distillation iterations, written the way the official code is written
(per-class loops, fp32, NCHW, no batching tricks), for the speed benchmarks
(``benchmarks/bench_iter_*.py``) and the loss-equivalence tests (``tests/test_iter_equivalence_*.py``).

They take dbench's samplers and DSA parameter draws only as data sources (the official code's
``get_images`` and per-class DiffAugment seeds), drawn in the same order as dbench's own paths,
so on identical inputs and nets the loss must agree with dbench's default path: the comparison
is of the same math, not of different work.

Sections: distribution matching (DM, IDM, DataDAM) and gradient matching (DC, DSA, IDC, DREAM).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark import augment as A

# ======================================================================================
# Distribution matching: DM, IDM, DataDAM
# ======================================================================================
#
# DM      VICO-UoE/DatasetCondensation@53f63a6 main_DM.py (non-BN branch): for each class, embed the
#         augmented real batch (output detached) and the class's augmented synthetic images, loss +=
#         ||mean(real) - mean(syn)||^2; one backward and one image step per iteration.
# IDM     uitrbn/IDM@fe23bbc IDM_cifar10.py: the matching net in eval mode; for each class: real embed
#         (detached), partition-and-expand of the class's synthetic images, Siamese DSA, MMD + weight x CE
#         of net(img_syn) (a second forward, as the official code does), one image step per class; then
#         fetch_net_num queue nets take model_train_steps plain-CE SGD steps on all-class real batches.
# DataDAM DataDistillation/DataDAM@0f6ea09 main_DataDAM.py: per class real batch + DSA, concatenated;
#         forward hooks clone every ReLU output; one forward for all real images (detached), one for all
#         synthetic; per layer except the last: L2-normalised sum_c |a|^p attention maps, per-class mean
#         distance x 100; final embedding MMD x 100 x task_balance.


def dm_reference_iteration(net, sampler, aug, syn: torch.Tensor, opt, k: int, ipc: int,
                           batch_real: int) -> torch.Tensor:
    """One DM iteration like ``main_DM.py`` (ConvNet/InstanceNorm branch); returns the loss."""
    params = aug.sample(k)  # the per-class DiffAugment seeds
    loss = torch.tensor(0.0)
    for c in range(k):
        img_real = sampler(c, batch_real)
        img_syn = syn[c * ipc:(c + 1) * ipc]
        img_real = A.apply(img_real, params[c])
        img_syn = A.apply(img_syn, params[c])
        output_real = net.embed(img_real).detach()
        output_syn = net.embed(img_syn)
        loss = loss + torch.sum((torch.mean(output_real, dim=0) - torch.mean(output_syn, dim=0)) ** 2)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def _expand(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """IDM partition-and-expand: each image -> factor**2 cells (order TL, BL, TR, BR), each
    bilinearly upsampled back to full size."""
    h, w = x.shape[-2:]
    ph, pw = -(-h // factor), -(-w // factor)
    cells = [x[:, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw] for j in range(factor) for i in range(factor)]
    return torch.cat([F.interpolate(c, size=(h, w), mode="bilinear", align_corners=False) for c in cells])


def idm_reference_image_steps(net, sampler, aug, syn: torch.Tensor, opt, k: int, ipc: int, batch_real: int,
                              ce_weight_eff: float, factor: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """IDM's matching half (one image step per class); returns (sum of MMD, sum of CE)."""
    net.eval()
    params = aug.sample(k)
    tot_dm, tot_ce = torch.tensor(0.0), torch.tensor(0.0)
    for c in range(k):
        img_real = A.apply(sampler(c, batch_real), params[c])
        img_syn = A.apply(_expand(syn[c * ipc:(c + 1) * ipc], factor), params[c])
        output_real = net.embed(img_real).detach()
        output_syn = net.embed(img_syn)
        loss_dm = torch.sum((torch.mean(output_real, dim=0) - torch.mean(output_syn, dim=0)) ** 2)
        logits = net(img_syn)
        loss_ce = nn.functional.cross_entropy(logits, torch.full((img_syn.shape[0],), c, dtype=torch.long))
        loss = loss_dm + ce_weight_eff * loss_ce
        opt.zero_grad()
        loss.backward()
        opt.step()
        tot_dm, tot_ce = tot_dm + loss_dm.detach(), tot_ce + loss_ce.detach()
    return tot_dm, tot_ce


def idm_reference_train_net(net, net_opt, all_sampler, bs: int, steps: int) -> tuple[int, int]:
    """``steps`` plain CE steps of a queue net on random all-class real batches; (correct, total)
    counted per step on the host, as torchnet's ClassErrorMeter does."""
    net.train()
    correct = total = 0
    for _ in range(steps):
        x, y = all_sampler(bs)
        out = net(x)
        loss = nn.functional.cross_entropy(out, y)
        net_opt.zero_grad()
        loss.backward()
        net_opt.step()
        correct += int((out.argmax(1) == y).sum().item())
        total += y.numel()
    return correct, total


def _attention(fm: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """DataDAM ``get_attention(fm, param=p, exp=1, norm='l2')``."""
    am = torch.sum(torch.pow(torch.abs(fm), power), dim=1)
    return F.normalize(am.view(am.size(0), -1), p=2, dim=1)


def datadam_reference_loss(net, sampler, aug, syn: torch.Tensor, k: int, ipc: int, batch_real: int,
                           power: float = 1.0, attention_weight: float = 100.0,
                           task_balance: float = 0.01) -> torch.Tensor:
    """DataDAM's loss for one iteration like ``main_DataDAM.py`` (hooks on the ReLUs)."""
    params = aug.sample(k)
    real_all, syn_all = [], []
    for c in range(k):
        real_all.append(A.apply(sampler(c, batch_real), params[c]))
        syn_all.append(A.apply(syn[c * ipc:(c + 1) * ipc], params[c]))
    img_real_all, img_syn_all = torch.cat(real_all), torch.cat(syn_all)
    acts: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: acts.append(o.clone()))
             for b in net.blocks for m in b.modules() if isinstance(m, nn.ReLU)]
    try:
        output_real = net.embed(img_real_all).detach()
        acts_real = [a.detach() for a in acts]
        acts.clear()
        output_syn = net.embed(img_syn_all)
        acts_syn = list(acts)
    finally:
        for h in hooks:
            h.remove()
    n = img_real_all.shape[0] // k
    loss = torch.tensor(0.0)
    for ar, as_ in zip(acts_real[:-1], acts_syn[:-1]):
        mr = _attention(ar, power).reshape(k, n, -1).mean(1)
        ms = _attention(as_, power).reshape(k, ipc, -1).mean(1)
        loss = loss + attention_weight * torch.sum((mr - ms) ** 2)
    er = output_real.reshape(k, n, -1).mean(1)
    es = output_syn.reshape(k, ipc, -1).mean(1)
    return loss + attention_weight * task_balance * torch.sum((er - es) ** 2)


# ======================================================================================
# Gradient matching: DC, DSA, IDC, DREAM, DREAM+ (owned by the gradient-matching benchmark)
# ======================================================================================
#
# DC/DSA VICO-UoE/DatasetCondensation@53f63a6 main.py: per class, net(img_real) -> CE -> autograd.grad over
#         *all* net parameters (detached clones), net(img_syn) -> CE -> autograd.grad(create_graph=True),
#         loss += match_loss (distance_wb per tensor: conv rows, 1-D tensors 0); then optimizer_img.zero_grad(),
#         loss.backward() (which also fills the net's .grad, as the official code does), step; then, unless
#         the last outer loop, inner_loop x epoch('train') on the synthetic set (batch 256, shuffled; DSA:
#         per-sample DiffAugment).
# IDC     snu-mllab/Efficient-Dataset-Condensation@ceac95a condense.py: per class: real batch and the decoded
#         synthetic images, aug(cat) once, matchloss (grads of all parameters; dist per tensor, 1-D and 2-D
#         skipped unless bias/fc), loss.item(), optim_img.zero_grad(), loss.backward(), step - one image
#         step per class; then train_epoch on n_data real samples (no_grad aug, CutMix with np.random-style
#         draw, loss.item() and top-1 accuracy on the host per batch).
# DREAM   lyq312318224/DREAM@595e3c1 condense.py: IDC's loop on representative batches.
# DREAM+  condense_improve.py: the same with bi_match: one forward per side gives logits and features;
#         dist(mean feat real, mean feat syn) added to the gradient distance.


def ref_distance_wb(gwr: torch.Tensor, gws: torch.Tensor) -> torch.Tensor | float:
    """VICO ``utils.distance_wb``."""
    shape = gwr.shape
    if len(shape) == 4:  # conv, out*in*h*w
        gwr = gwr.reshape(shape[0], shape[1] * shape[2] * shape[3])
        gws = gws.reshape(shape[0], shape[1] * shape[2] * shape[3])
    elif len(shape) == 3:  # layernorm, C*h*w
        gwr = gwr.reshape(shape[0], shape[1] * shape[2])
        gws = gws.reshape(shape[0], shape[1] * shape[2])
    elif len(shape) == 1:  # batchnorm/instancenorm, C; groupnorm x, bias
        return 0
    return torch.sum(1 - torch.sum(gwr * gws, dim=-1) / (torch.norm(gwr, dim=-1) * torch.norm(gws, dim=-1) + 0.000001))


def ref_dc_match_loss(gw_syn, gw_real) -> torch.Tensor:
    """VICO ``utils.match_loss`` with ``dis_metric='ours'``."""
    dis = torch.tensor(0.0)
    for ig in range(len(gw_real)):
        dis = dis + ref_distance_wb(gw_real[ig], gw_syn[ig])
    return dis


def ref_idc_dist(x: torch.Tensor, y: torch.Tensor, method: str) -> torch.Tensor:
    """IDC ``condense.dist`` (mse / l1)."""
    if method == "mse":
        return (x - y).pow(2).sum()
    if method == "l1":
        return (x - y).abs().sum()
    raise ValueError(method)


def dc_reference_matching_step(net, syn: torch.Tensor, opt_img, sampler, aug_params, ipc: int,
                               batch_real: int) -> torch.Tensor:
    """One DC/DSA outer-loop matching step (all classes, one image step); returns the loss."""
    net_parameters = list(net.parameters())
    criterion = nn.CrossEntropyLoss()
    loss = torch.tensor(0.0)
    for c, p in enumerate(aug_params):
        img_real = sampler(c, batch_real)
        lab_real = torch.ones((img_real.shape[0],), dtype=torch.long) * c
        img_syn = syn[c * ipc:(c + 1) * ipc].reshape((ipc, *syn.shape[1:]))
        lab_syn = torch.ones((ipc,), dtype=torch.long) * c
        if p.steps:  # DSA: the class's DiffAugment seed, shared by real and synthetic
            img_real = A.apply(img_real, p)
            img_syn = A.apply(img_syn, p)
        output_real = net(img_real)
        loss_real = criterion(output_real, lab_real)
        gw_real = torch.autograd.grad(loss_real, net_parameters)
        gw_real = [_.detach().clone() for _ in gw_real]
        output_syn = net(img_syn)
        loss_syn = criterion(output_syn, lab_syn)
        gw_syn = torch.autograd.grad(loss_syn, net_parameters, create_graph=True)
        loss = loss + ref_dc_match_loss(gw_syn, gw_real)
    opt_img.zero_grad()
    loss.backward()
    opt_img.step()
    return loss.detach()


def dc_reference_inner_epochs(net, opt_net, x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int,
                              g: torch.Generator, dsa_strategy: str | None = None) -> float:
    """DC's ``epoch('train', ...)`` x ``epochs`` on the synthetic set (DataLoader shuffle; DSA:
    per-sample DiffAugment); loss and accuracy accumulated on the host as ``utils.epoch`` does."""
    net.train()
    criterion = nn.CrossEntropyLoss()
    loss_avg = 0.0
    for _ in range(epochs):
        perm = torch.randperm(y.numel(), generator=g)
        for s in range(0, y.numel(), batch):
            img, lab = x[perm[s:s + batch]], y[perm[s:s + batch]]
            if dsa_strategy:
                img = A.apply(img, A.sample_dsa(dsa_strategy, img.shape[0], tuple(img.shape[-2:]), g, siamese=False))
            output = net(img)
            loss = criterion(output, lab)
            loss_avg += loss.item() * lab.shape[0]
            _acc = int((output.argmax(1) == lab).sum().item())
            opt_net.zero_grad()
            loss.backward()
            opt_net.step()
    return loss_avg


def idc_reference_class_steps(net, syn: torch.Tensor, opt_img, real, sampler, ipc: int, batch_real: int,
                              decode, norm, aug_type: str, g_aug: torch.Generator, metric: str,
                              bidirectional: bool = False) -> float:
    """The matching half of one IDC/DREAM/DREAM+ inner step (one image step per class); returns
    the summed loss (``loss_total += loss.item()``)."""
    from benchmark.synset import multi_formation

    criterion = nn.CrossEntropyLoss()
    params = list(net.parameters())
    loss_total = 0.0
    for c in range(real.num_classes):
        img = real.pixels(sampler.indices(c, batch_real))
        lab = torch.ones(img.shape[0], dtype=torch.long) * c
        img_syn = multi_formation(syn[c * ipc:(c + 1) * ipc], torch.zeros(ipc, dtype=torch.long), decode)[0]
        lab_syn = torch.ones(img_syn.shape[0], dtype=torch.long) * c
        n = img.shape[0]
        img_aug = A.apply(norm(torch.cat([img, img_syn])), A.sample_idc(aug_type, 1, tuple(img.shape[-2:]), g_aug,
                                                                         siamese=True))
        img_real, img_s = img_aug[:n], img_aug[n:]
        feat_real = net.embed(img_real)
        output_real = net.classifier(feat_real)
        g_real = torch.autograd.grad(criterion(output_real, lab), params, retain_graph=bidirectional)
        g_real = [g.detach() for g in g_real]
        feat_syn = net.embed(img_s)
        output_syn = net.classifier(feat_syn)
        g_syn = torch.autograd.grad(criterion(output_syn, lab_syn), params, create_graph=True)
        loss = torch.tensor(0.0)
        for i in range(len(g_real)):
            if g_real[i].ndim in (1, 2):  # args.bias / args.fc False
                continue
            loss = loss + ref_idc_dist(g_real[i], g_syn[i], metric)
        if bidirectional:
            loss = loss + ref_idc_dist(feat_real.detach().mean(0), feat_syn.mean(0), metric)
        loss_total += loss.item()
        opt_img.zero_grad()
        loss.backward()
        opt_img.step()
    return loss_total


def idc_reference_train_epoch(net, opt_net, next_batch, n_data: int, aug, g: torch.Generator,
                              mix_p: float) -> int:
    """IDC ``train_epoch``: batches until ``n_data`` samples, no_grad aug, CutMix with
    probability ``mix_p``, plain CE; loss and top-1 read on the host per batch. Returns steps."""
    net.train()
    criterion = nn.CrossEntropyLoss()
    seen = steps = 0
    while seen < n_data:
        input, target = next_batch()
        if aug is not None:
            with torch.no_grad():
                input = aug(input)
        if mix_p > 0 and float(torch.rand(1, generator=g)) < mix_p:
            input, perm, ratio = A.cutmix(input, g)
            output = net(input)
            loss = criterion(output, target) * ratio + criterion(output, target[perm]) * (1.0 - ratio)
        else:
            output = net(input)
            loss = criterion(output, target)
        _loss, _top1 = loss.item(), (output.argmax(1) == target).float().mean().item()
        opt_net.zero_grad()
        loss.backward()
        opt_net.step()
        seen += target.numel()
        steps += 1
    return steps
