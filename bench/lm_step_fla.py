#!/usr/bin/env python3
"""bench/lm_step_fla.py: the training step of bench/lm_step_gpu.lua, in PyTorch with
flash-linear-attention's DeltaNetForCausalLM (fla's own model class, which needs
`transformers`), printing the same columns: ms/step, tokens/s, peak GPU memory, activation
bytes per token and layer kept between forward and backward, the loss.

  python3 bench/lm_step_fla.py                     both models, fp32 masters + bf16 autocast
  python3 bench/lm_step_fla.py --precision bf16    parameters in bf16 (pure bf16 training)
  python3 bench/lm_step_fla.py --delta-rule-noop   chunk_delta_rule replaced by (q + k + v) * beta
  python3 bench/lm_step_fla.py --flce              fla's fused linear cross-entropy

fla is imported from $FLA_PATH, else from .peers/ beside this repository (.peers/fla), else
from the installed packages. Same shapes as the efla script: DeltaNet layers with short
convolutions, L2-normalised q/k, sigmoid beta, output RMSNorm, fla's SwiGLU size; one batch of
random tokens on the device; AdamW (fused), clip_grad_norm_(1.0); the loss is read once after
the timed steps.
"""
import argparse
import importlib
import os
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (os.environ.get('FLA_PATH'), os.path.join(ROOT, '.peers')):
    if p and os.path.isdir(os.path.join(p, 'fla')):
        sys.path.insert(0, p)
        break

import torch  # noqa: E402

MODELS = {
    'byte': dict(vocab_size=256, hidden_size=512, num_hidden_layers=8, num_heads=4, batch=16, seq=2048),
    '125m': dict(vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_heads=6, batch=16, seq=2048),
    'tiny': dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_heads=2, batch=2, seq=64),
}


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default='both', choices=['byte', '125m', 'both', 'tiny'])
    ap.add_argument('--precision', default='amp', choices=['amp', 'bf16', 'fp32'],
                    help='amp: fp32 parameters + bf16 autocast (efla --compute bfloat16); bf16: bf16 parameters')
    ap.add_argument('--batch', type=int)
    ap.add_argument('--seq', type=int)
    ap.add_argument('--steps', type=int, default=10)
    ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--delta-rule-noop', action='store_true')
    ap.add_argument('--flce', action='store_true', help="fla's fused linear cross-entropy (default: fused CE)")
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--per-step', action='store_true',
                    help='then time each step alone (synchronised) and print min / median / max and host time '
                         'per step: whether a slow run is slow throughout or in a few steps, and host-bound or not')
    return ap.parse_args()


def install_noop():
    dn = import_layer_module('delta_net')

    def noop(q, k, v, beta, initial_state=None, output_final_state=False, **kw):
        return (q + k + v) * beta.unsqueeze(-1), None
    dn.chunk_delta_rule = noop


def import_layer_module(name):
    """fla.layers.<name> without running fla/layers/__init__.py, which imports every layer
    (some need `transformers`)."""
    import fla
    if 'fla.layers' not in sys.modules:
        pkg = types.ModuleType('fla.layers')
        pkg.__path__ = [os.path.join(os.path.dirname(fla.__file__), 'layers')]
        sys.modules['fla.layers'] = pkg
    return importlib.import_module('fla.layers.' + name)


def build_from_layers(spec, flce):
    """The same model as DeltaNetForCausalLM (pre-norm blocks of fla's DeltaNet layer and
    GatedMLP, fused RMSNorm, fused cross-entropy), for a machine without `transformers`."""
    import torch.nn as nn
    from fla.modules import FusedCrossEntropyLoss, FusedLinearCrossEntropyLoss, GatedMLP, RMSNorm
    DeltaNet = import_layer_module('delta_net').DeltaNet
    d, H = spec['hidden_size'], spec['num_heads']

    class Block(nn.Module):
        def __init__(self, i):
            super().__init__()
            self.attn_norm, self.mlp_norm = RMSNorm(d, eps=1e-6), RMSNorm(d, eps=1e-6)
            self.attn = DeltaNet(mode='chunk', hidden_size=d, num_heads=H, use_gate=False, use_short_conv=True,
                                 conv_size=4, use_output_norm=True, qk_norm='l2', qk_activation='silu',
                                 norm_eps=1e-6, layer_idx=i)
            self.mlp = GatedMLP(hidden_size=d, hidden_ratio=4, hidden_act='swish', fuse_swiglu=True)

        def forward(self, x):
            x = x + self.attn(self.attn_norm(x))[0]
            return x + self.mlp(self.mlp_norm(x))

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(spec['vocab_size'], d)
            self.blocks = nn.ModuleList(Block(i) for i in range(spec['num_hidden_layers']))
            self.norm = RMSNorm(d, eps=1e-6)
            self.lm_head = nn.Linear(d, spec['vocab_size'], bias=False)
            self.criterion = FusedLinearCrossEntropyLoss() if flce else FusedCrossEntropyLoss(inplace_backward=True)

        def forward(self, input_ids, labels, use_cache=False):
            x = self.embed(input_ids)
            for b in self.blocks:
                x = b(x)
            x = self.norm(x)
            # next-token loss as fla's model computes it: labels shifted left, last position ignored
            target = torch.cat((labels[:, 1:], torch.full_like(labels[:, :1], -100)), 1).reshape(-1)
            if flce:
                loss = self.criterion(x.reshape(-1, d), target, self.lm_head.weight, self.lm_head.bias)
            else:
                loss = self.criterion(self.lm_head(x).reshape(-1, spec['vocab_size']), target)
            return types.SimpleNamespace(loss=loss)

    return LM()


def run(name, a):
    spec = dict(MODELS[name])
    B, T = a.batch or spec.pop('batch'), a.seq or spec.pop('seq')
    spec.pop('batch', None), spec.pop('seq', None)
    torch.manual_seed(a.seed)
    torch.cuda.empty_cache()
    try:
        from fla.models import DeltaNetConfig, DeltaNetForCausalLM
    except ImportError as e:  # fla's model classes need `transformers`
        print('(fla.models unavailable: %s; building the same model from fla.layers)' % e)
        model = build_from_layers(spec, a.flce).cuda()
    else:
        cfg = DeltaNetConfig(attn_mode='chunk', use_gate=False, use_short_conv=True, conv_size=4,
                             use_output_norm=True, qk_norm='l2', qk_activation='silu', hidden_ratio=4,
                             fuse_norm=True, fuse_swiglu=True, fuse_cross_entropy=not a.flce,
                             fuse_linear_cross_entropy=a.flce, use_cache=False, **spec)
        model = DeltaNetForCausalLM(cfg).cuda()
    if a.precision == 'bf16':
        model = model.to(torch.bfloat16)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
    tok = torch.randint(0, spec['vocab_size'], (B, T), device='cuda')
    labels = torch.randint(0, spec['vocab_size'], (B, T), device='cuda')
    autocast = torch.autocast('cuda', dtype=torch.bfloat16, enabled=a.precision == 'amp')

    def forward():
        with autocast:
            return model(input_ids=tok, labels=labels, use_cache=False).loss

    def step():
        opt.zero_grad(set_to_none=True)
        loss = forward()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    opt.zero_grad(set_to_none=True)
    before = torch.cuda.memory_allocated()
    loss = forward()
    torch.cuda.synchronize()
    kept = torch.cuda.memory_allocated() - before
    loss.backward()
    del loss
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / a.steps
    peak = torch.cuda.max_memory_allocated()
    nparams = sum(p.numel() for p in model.parameters())
    print('%-6s %-9s %-5s %7.1f %10.0f %9.2f %10.0f %9.3f  %s' % (
        name, 'fla-' + a.precision, 'noop' if a.delta_rule_noop else 'real', dt * 1e3, B * T / dt, peak / 2 ** 30,
        kept / (B * T) / spec['num_hidden_layers'], loss.item(),
        '%.1fM params, B=%d T=%d%s' % (nparams / 1e6, B, T, ', flce' if a.flce else '')))
    if a.per_step:
        # each step between synchronisations: its wall time, and the host's share (the time until
        # step() returned, before the wait for the device)
        walls, hosts = [], []
        for _ in range(a.steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            t1 = time.perf_counter()
            torch.cuda.synchronize()
            walls.append(time.perf_counter() - t0)
            hosts.append(t1 - t0)
        walls.sort(), hosts.sort()
        mid = len(walls) // 2
        print('       per step (synchronised, %d steps): min %.1f, median %.1f, max %.1f ms; host until return: '
              'median %.1f ms' % (len(walls), walls[0] * 1e3, walls[mid] * 1e3, walls[-1] * 1e3, hosts[mid] * 1e3))


def main():
    a = parse()
    import fla
    if a.delta_rule_noop:
        install_noop()
    print('fla %s from %s, torch %s on %s' % (getattr(fla, '__version__', '?'), os.path.dirname(fla.__file__),
                                             torch.__version__, torch.cuda.get_device_name()))
    print('%-6s %-9s %-5s %7s %10s %9s %10s %9s  %s' % ('model', 'compute', 'delta', 'ms/step', 'tokens/s',
                                                       'peak GiB', 'act B/t/l', 'loss', 'shape'))
    for n in (['byte', '125m'] if a.model == 'both' else [a.model]):
        try:
            run(n, a)
        except Exception as e:  # one failing model still lets the other print
            print('%-6s failed: %s' % (n, str(e).split('\n')[0]))


if __name__ == '__main__':
    main()
