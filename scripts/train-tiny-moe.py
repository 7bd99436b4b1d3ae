#!/usr/bin/env python3
"""Trains a small Qwen3-MoE with Hugging Face transformers and writes it as an eep checkpoint.

Why: the random-weight presets have no confident predictions (router and logits near ties), so
GPU-vs-CPU greedy agreement on them measures bf16 rounding at ties, not the kernels. A model
trained on a small synthetic language has real structure: confident routing and next tokens.
It also lets eep's CPU forward be checked against an implementation eep did not write
(transformers' Qwen3MoeForCausalLM) on the same weights.

Runs where torch and transformers exist (the GPU machines; not CI). Writes into OUT:
  config.json          the model config eep reads (HF field names)
  model.safetensors    the weights in bf16, HF tensor names, one tensor per expert projection
  agreement.json       prompts, the reference's greedy continuations (fed back teacher-forced),
                       and how the model did on held-out text
  hf_logits.safetensors  "logits" F32 [points][vocab]: transformers' logits, in fp32 from the
                       bf16-rounded weights, at each prompt's last position and after each fed
                       token (prompt-major), the points eep's tests compare against

Usage: train-tiny-moe.py OUT [--steps N] [--seed S]
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

# The synthetic language. Token ids: 0 BOS, 1 SEP, 2.. task markers, content from 16 on.
BOS, SEP = 0, 1
COPY, CHAIN, ARITH, REVERSE = 2, 3, 4, 5
FIRST_CONTENT = 16


def model_config(vocab):
    return dict(vocab_size=vocab, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, head_dim=64, num_experts=16, num_experts_per_tok=4,
                moe_intermediate_size=48, norm_topk_prob=True, rms_norm_eps=1e-6,
                rope_theta=1000000.0, max_position_embeddings=512, tie_word_embeddings=False)


class Language:
    """Segments whose continuation is fixed once their head is seen: copy (x.. SEP x..),
    reverse (x.. SEP ..x), a chain through a fixed permutation of the content tokens, and an
    arithmetic run (a, a+d, a+2d, ... over the content range)."""

    def __init__(self, vocab, seed):
        self.vocab = vocab
        self.n = vocab - FIRST_CONTENT
        rng = random.Random(seed)
        perm = list(range(self.n))
        rng.shuffle(perm)
        self.perm = perm

    def content(self, rng):
        return FIRST_CONTENT + rng.randrange(self.n)

    def segment(self, rng, kind=None, length=None):
        kind = kind if kind is not None else rng.choice([COPY, CHAIN, ARITH, REVERSE])
        if kind in (COPY, REVERSE):
            n = length or rng.randint(4, 20)
            xs = [self.content(rng) for _ in range(n)]
            return [kind] + xs + [SEP] + (xs if kind == COPY else xs[::-1])
        if kind == CHAIN:
            n = length or rng.randint(8, 28)
            x = rng.randrange(self.n)
            out = [kind]
            for _ in range(n):
                out.append(FIRST_CONTENT + x)
                x = self.perm[x]
            return out
        n = length or rng.randint(8, 28)
        a, d = rng.randrange(self.n), rng.randint(1, 7)
        return [kind] + [FIRST_CONTENT + (a + i * d) % self.n for i in range(n)]

    def sequence(self, rng, length):
        out = [BOS]
        while len(out) < length:
            out += self.segment(rng)
        return out[:length]


def prompts_and_steps(lang, seed, decode_steps):
    """Prompts whose next decode_steps + 1 tokens the language fixes: each ends inside a
    segment after its head (for copy/reverse: at SEP, the copy 18 long)."""
    rng = random.Random(seed)
    prompts = []
    for i in range(16):
        kind = [COPY, CHAIN, ARITH, REVERSE][i % 4]
        prefix = [BOS]
        for _ in range(rng.randint(0, 3)):  # some context before, so positions vary
            prefix += lang.segment(rng)
        if kind in (COPY, REVERSE):
            seg = lang.segment(rng, kind, decode_steps + 2)
            cut = seg.index(SEP) + 1
        else:
            seg = lang.segment(rng, kind, 28)
            cut = rng.randint(4, 28 - decode_steps - 2)
        prompts.append(prefix + seg[:cut])
    return prompts


def check_rope(model, cfg):
    """eep reads rope_theta from config.json: the model must use that theta."""
    hd, theta = cfg["head_dim"], cfg["rope_theta"]
    want = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    got = model.model.rotary_emb.inv_freq.double().cpu()
    err = (got - want).abs().max().item()
    if err > 1e-6 * want.max().item():
        sys.exit(f"rotary inv_freq does not match rope_theta {theta} (max error {err})")


def expert_tensors(state, cfg):
    """Per-expert gate/up/down [out][in] under eep's (the original checkpoints') names, from
    either the per-expert modules or the fused expert tensors newer transformers keep."""
    H, I, E = cfg["hidden_size"], cfg["moe_intermediate_size"], cfg["num_experts"]
    out = {}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}.mlp.experts."
        if p + "0.gate_proj.weight" in state:
            for e in range(E):
                for proj in ("gate_proj", "up_proj", "down_proj"):
                    out[f"{p}{e}.{proj}.weight"] = state[f"{p}{e}.{proj}.weight"]
            continue
        gu, down = state[p + "gate_up_proj"], state[p + "down_proj"]
        if tuple(gu.shape) == (E, H, 2 * I):  # [in][out] storage
            gu = gu.transpose(1, 2)
        if tuple(down.shape) == (E, I, H):
            down = down.transpose(1, 2)
        assert tuple(gu.shape) == (E, 2 * I, H), f"gate_up_proj shape {tuple(gu.shape)}"
        assert tuple(down.shape) == (E, H, I), f"down_proj shape {tuple(down.shape)}"
        for e in range(E):
            out[f"{p}{e}.gate_proj.weight"] = gu[e, :I]
            out[f"{p}{e}.up_proj.weight"] = gu[e, I:]
            out[f"{p}{e}.down_proj.weight"] = down[e]
    return out


def check_moe_tensors(model, state, experts, cfg):
    """The written expert tensors, run as the Qwen3-MoE block is defined (softmax router,
    top-k, renormalised, SwiGLU experts), must reproduce transformers' own block."""
    K = cfg["num_experts_per_tok"]
    torch.manual_seed(1)
    for l in range(cfg["num_hidden_layers"]):
        mlp = model.model.layers[l].mlp
        x = torch.randn(64, cfg["hidden_size"], device="cuda")
        with torch.no_grad():
            want = mlp(x.unsqueeze(0))
            want = (want[0] if isinstance(want, tuple) else want).squeeze(0)
            router = state[f"model.layers.{l}.mlp.gate.weight"]
            prob = torch.softmax(x @ router.t(), dim=-1)
            w, idx = prob.topk(K, dim=-1)
            w = w / w.sum(-1, keepdim=True)
            got = torch.zeros_like(x)
            p = f"model.layers.{l}.mlp.experts."
            for t in range(x.shape[0]):
                for j in range(K):
                    e = int(idx[t, j])
                    g = experts[f"{p}{e}.gate_proj.weight"] @ x[t]
                    u = experts[f"{p}{e}.up_proj.weight"] @ x[t]
                    got[t] += w[t, j] * (experts[f"{p}{e}.down_proj.weight"] @ (F.silu(g) * u))
        err = ((got - want).norm() / want.norm()).item()
        if err > 1e-4:
            sys.exit(f"layer {l}: the written expert tensors do not reproduce the MoE block "
                     f"(relative error {err:.3g})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--decode-steps", type=int, default=16)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(args.seed)
    vocab, seq_len, batch = 512, 128, 64
    cfg = model_config(vocab)
    lang = Language(vocab, args.seed)
    hf_cfg = Qwen3MoeConfig(**cfg, decoder_sparse_step=1, mlp_only_layers=[],
                            output_router_logits=True, router_aux_loss_coef=0.01,
                            attention_dropout=0.0, attn_implementation="eager")
    model = Qwen3MoeForCausalLM(hf_cfg).cuda()
    check_rope(model, cfg)
    # The conversion to per-expert tensors is checked before training too, so that a
    # transformers version with another expert layout fails in seconds, not after training.
    with torch.no_grad():
        state0 = {k: v.detach() for k, v in model.state_dict().items()}
        check_moe_tensors(model, state0, expert_tensors(state0, cfg), cfg)
    print("expert layout: " + ", ".join(sorted({k.split(".mlp.experts.")[1].split(".", 1)[-1]
                                                 for k in state0 if ".mlp.experts." in k})))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    rng = random.Random(args.seed + 1)
    t0 = time.time()
    model.train()
    for step in range(args.steps):
        ids = torch.tensor([lang.sequence(rng, seq_len) for _ in range(batch)], device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(input_ids=ids, labels=ids)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {out.loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)

    # The checkpoint: bf16 as real ones are; the reference then runs in fp32 on exactly those
    # bf16 values (eep's CPU backend widens bf16 weights to fp32 the same way).
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    state = {k: v.detach() for k, v in model.state_dict().items()}
    experts = expert_tensors(state, cfg)
    check_moe_tensors(model, state, experts, cfg)
    tensors = {k: v for k, v in state.items() if ".mlp.experts." not in k and "rotary" not in k}
    tensors.update(experts)
    os.makedirs(args.out, exist_ok=True)
    save_file({k: v.to(torch.bfloat16).contiguous().cpu() for k, v in tensors.items()},
              os.path.join(args.out, "model.safetensors"))
    eep_cfg = dict(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe",
                   intermediate_size=cfg["moe_intermediate_size"] * cfg["num_experts_per_tok"],
                   decoder_sparse_step=1, mlp_only_layers=[], rope_scaling=None,
                   hidden_act="silu", attention_bias=False, torch_dtype="bfloat16", **cfg)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(eep_cfg, f, indent=1)

    # Held-out text: how often the model's top token is the language's next token where the
    # language fixes it (the second half of copy/reverse segments, chain and arithmetic runs
    # after two tokens).
    test_rng = random.Random(args.seed + 2)
    ids = torch.tensor([lang.sequence(test_rng, seq_len) for _ in range(64)], device="cuda")
    with torch.no_grad():
        pred = model(input_ids=ids).logits.argmax(-1)
    fixed = correct = 0
    for b in range(ids.shape[0]):
        row = ids[b].tolist()
        for t in range(1, seq_len - 1):
            if determined(row, t + 1):
                fixed += 1
                correct += int(pred[b, t].item() == row[t + 1])

    prompts = prompts_and_steps(lang, args.seed + 3, args.decode_steps)
    forced, points = [], []
    with torch.no_grad():
        for p in prompts:
            seq = list(p)
            for _ in range(args.decode_steps):
                logits = model(input_ids=torch.tensor([seq], device="cuda")).logits[0, -1]
                seq.append(int(logits.argmax()))
            logits = model(input_ids=torch.tensor([seq], device="cuda")).logits[0]
            points.append(logits[len(p) - 1:].float().cpu())
            forced.append(seq[len(p):])
    save_file({"logits": torch.cat(points).contiguous()}, os.path.join(args.out, "hf_logits.safetensors"))
    import transformers
    with open(os.path.join(args.out, "agreement.json"), "w") as f:
        json.dump({"prompts": prompts, "forced": forced, "decode_steps": args.decode_steps,
                   "reference": f"transformers {transformers.__version__} Qwen3MoeForCausalLM, "
                                f"eager attention, fp32 on the bf16 weights, torch {torch.__version__}",
                   "training": {"steps": args.steps, "seed": args.seed, "batch": batch,
                                "seq_len": seq_len, "final_loss": round(out.loss.item(), 4),
                                "held_out_fixed_positions": fixed,
                                "held_out_top1_correct": correct}}, f, indent=None)
        f.write("\n")
    print(f"held-out: top-1 right on {correct}/{fixed} positions the language fixes "
          f"({100.0 * correct / max(fixed, 1):.2f}%)")
    print(f"wrote {args.out}: {len(tensors)} tensors, {len(prompts)} prompts x "
          f"{args.decode_steps + 1} points")


def determined(row, i):
    """Whether the language fixes row[i] given row[:i] (the segment's head seen)."""
    # Walk back to the segment's marker.
    j = i - 1
    while j >= 0 and row[j] >= FIRST_CONTENT or (j >= 0 and row[j] == SEP):
        j -= 1
    if j < 0 or row[j] not in (COPY, CHAIN, ARITH, REVERSE) or row[i] < FIRST_CONTENT:
        return False
    kind, body = row[j], row[j + 1:i]
    if kind in (COPY, REVERSE):
        return SEP in body
    return len(body) >= 2 and row[i - 1] >= FIRST_CONTENT


if __name__ == "__main__":
    main()
