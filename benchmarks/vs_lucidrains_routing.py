"""Our routing attention layer against lucidrains/routing-transformer's ``SelfAttention``, side by side.

    python -m benchmarks.vs_lucidrains_routing --ref_dir /path/to/routing-transformer \\
        [--lengths 1024 4096 16384] [--repeats 5] [--before REV]

One bidirectional layer, B=4, d_model 256, 8 heads of 32 (4 routing heads, 4 local heads), 64 tokens per cluster
(C = L / 64), local block 64, separate q/k projections, training mode on both sides (so the online k-means update
runs), float32, both sides held to the same threads. Forward (the reference under ``torch.no_grad``, then its
``Kmeans.update()``; ours: the jitted training-mode apply with the ``routing`` collection mutable) and forward +
backward (loss = sum of squared outputs + the commitment loss; gradients of every parameter and of x; the
reference's EMA ``update()`` after its backward, as its backward hook does in ``RoutingTransformer``). The k-means
initialisation (10 iterations on the first batch) runs once on both sides before the timed calls and is timed on
its own. Medians of alternating runs. Then a breakdown of where the time goes, each part jitted (ours) or called
(reference) on its own at the layer's shapes; the reference's gather/attention/scatter part is derived as its
``KmeansAttention`` minus its ``Kmeans`` and its top-w. ``--before REV``: the same for ``models/routing.py`` at git
revision REV. Writes ``benchmarks/results/vs_lucidrains_routing.md``.
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
from pathlib import Path

from benchmarks import common, references

B, D, H, HR, W = 4, 256, 8, 4, 64
P = D // H


def load_revision(rev: str):
    return common.load_revision("models/routing.py", rev, "routing_before")


def main():
    ap = argparse.ArgumentParser()
    references.add_ref_dir(ap, "routing")
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--before", default=None, help="git revision of models/routing.py to time next to the current one")
    ap.add_argument("--out", default="benchmarks/results/vs_lucidrains_routing.md")
    args = ap.parse_args()
    root = references.check_checkout("routing", args.ref_dir)
    ref = references.load_module(root, "routing_transformer/routing_transformer.py", "lucidrains_routing",
                                 package_root=True)
    references.set_threads(args.threads)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from models import routing as now

    impls = {"ours": now}
    if args.before:
        impls[f"ours before ({args.before})"] = load_revision(args.before)

    def our_layer(mod, x):
        """(forward, forward + backward, parts) closures for one implementation of models/routing.py."""
        m = mod.RoutingAttention(d_model=D, num_heads=H, num_routing_heads=HR, window=W, causal=False)
        var = jax.jit(m.init)(jax.random.key(1), x)

        def loss(params, routing):
            out, st = m.apply({"params": params, "routing": routing}, x, deterministic=False,
                              mutable=["routing", "losses"], rngs={"dropout": jax.random.key(2)})
            return jnp.sum(out ** 2) + sum(jax.tree_util.tree_leaves(st["losses"])), st["routing"]

        fwd = jax.jit(loss)
        fb = jax.jit(jax.value_and_grad(loss, argnums=0, has_aux=True))
        _, routing = fwd(var["params"], var["routing"])  # the first batch: k-means init; steady state from here
        routing = jax.tree_util.tree_map(jnp.asarray, routing)
        return (lambda: fwd(var["params"], routing)), (lambda: fb(var["params"], routing)), routing

    def our_parts(mod, x, routing):
        """Each piece of the layer jitted on its own at the layer's shapes (ms each, timed alternating)."""
        r = np.random.default_rng(0)
        w_in = jnp.asarray(r.normal(size=(3, D, H, P)).astype(np.float32) / 16)
        w_out = jnp.asarray(r.normal(size=(H, P, D)).astype(np.float32) / 16)
        L = x.shape[1]
        q, k, v = (jnp.asarray(r.normal(size=(B, HR, L, P)).astype(np.float32)) for _ in range(3))
        ql, kl, vl = (jnp.asarray(r.normal(size=(B, H - HR, L, P)).astype(np.float32)) for _ in range(3))
        mu = routing["centroids"]
        q_hat, k_hat = mod.l2_normalize(q), mod.l2_normalize(k)
        x_hat = jnp.concatenate([q_hat, k_hat], axis=2)
        sq = lambda f: (lambda *a: jnp.sum(f(*a) ** 2))

        def proj(x, w_in, w_out):  # as the layer: three [D, H, P] products, heads to axis 1 and back, out
            q_, k_, v_ = (jnp.einsum("bld,dhp->blhp", x, w_in[i]).transpose(0, 2, 1, 3) for i in range(3))
            return jnp.einsum("blhp,hpd->bld", (q_ + k_ + v_).transpose(0, 2, 1, 3), w_out)

        fns = {"projections (q, k, v in; out), f+b": (jax.grad(sq(proj), argnums=(0, 1, 2)), (x, w_in, w_out))}
        if hasattr(mod, "_similarities_cl"):  # one similarity matrix shared by routing, loss and update
            # as the layer of that revision does it: the running-comparison argmax and the unsorted top-w where
            # the revision has them
            nearest = getattr(mod, "argmax_clusters", lambda s: jnp.argmax(s, axis=-2).astype(jnp.int32))
            unsorted = "sort" in inspect.signature(mod._top_w_cl).parameters
            top_w = (lambda s: mod._top_w_cl(s, W, sort=False)) if unsorted else (lambda s: mod._top_w_cl(s, W))
            sim = jax.jit(lambda a, m: mod._similarities_cl(a, m))(x_hat, mu)
            a_x = nearest(sim)
            fns["similarities + nearest centroid (q and k, once)"] = (
                lambda a, m: nearest(mod._similarities_cl(a, m)), (x_hat, mu))
            fns["top-w selection" + ("" if unsorted else " + index sort") + " (q and k)"] = (
                lambda s: (top_w(s[..., :L]), top_w(s[..., L:])), (sim,))
            fns["centroid update (given the assignment)"] = (
                lambda m, a, i: mod.centroid_update(m, a, None, 0.999, assignment=i), (mu, x_hat, a_x))
            fns["commitment loss (given the assignment), f+b"] = (
                jax.grad(lambda a, m, i: mod.commitment_loss(a, m, None, assignment=i)), (x_hat, mu, a_x))
        else:  # the earlier layer: each of the three computed its own similarities
            fns["assignment: similarities + top-w + sort (q and k)"] = (
                lambda a, b, m: mod.balanced_assignment(a, b, m, W), (q_hat, k_hat, mu))
            fns["centroid update (with its own nearest centroid)"] = (
                lambda m, a: mod.centroid_update(m, a, None, 0.999), (mu, x_hat))
            fns["commitment loss (with its own nearest centroid), f+b"] = (
                jax.grad(lambda a, m: mod.commitment_loss(a, m, None)), (x_hat, mu))
        idx_q, idx_k = jax.jit(lambda a, b, m: mod.balanced_assignment(a, b, m, W))(q_hat, k_hat, mu)
        fns["gather + attention in clusters + scatter-back, f+b"] = (  # indices as arguments: not constant-folded
            jax.grad(sq(lambda a, b, c, i, j: mod.routing_attention(a, b, c, i, j)), argnums=(0, 1, 2)),
            (q, k, v, idx_q, idx_k))
        fns["local heads, f+b"] = (
            jax.grad(sq(lambda a, b, c: mod.local_attention(a, b, c, W)), argnums=(0, 1, 2)), (ql, kl, vl))
        init = jax.jit(lambda key, a: mod.kmeans_init(key, a, mu.shape[1], None, 10))
        once = {"k-means init (10 iterations, first batch only)": lambda: init(jax.random.key(0), x_hat)}
        jitted = {name: (lambda f=jax.jit(f), a=a: f(*a)) for name, (f, a) in fns.items()}
        return jitted, once

    def ref_layer(L, x_np):
        torch.manual_seed(0)
        attn = ref.SelfAttention(dim=D, depth=1, max_seq_len=L, heads=H, local_attn_heads=H - HR, window_size=W,
                                 causal=False, rel_pos_emb=False, shared_qk=False).train()
        x = torch.tensor(x_np)
        km = attn.global_attn.kmeans

        def fwd():
            with torch.no_grad():
                out, loss = attn(x)
            km.update()
            return out

        def fb():
            attn.zero_grad(set_to_none=True)
            xg = x.detach().requires_grad_()
            out, loss = attn(xg)
            (out.pow(2).sum() + loss).backward()
            km.update()
            return xg.grad

        fb()  # the first batch: Kmeans.init (10 iterations)
        return attn, fwd, fb

    def ref_parts(attn, x_np):
        L = x_np.shape[1]
        r = np.random.default_rng(0)
        x = torch.tensor(x_np)
        q, k, v = (torch.tensor(r.normal(size=(B, HR, L, P)).astype(np.float32)) for _ in range(3))
        ql, kl, vl = (torch.tensor(r.normal(size=(B, H - HR, L, P)).astype(np.float32)) for _ in range(3))
        ga, km = attn.global_attn, attn.global_attn.kmeans

        def fb_of(f, *ts):
            def run():
                ps = [t.detach().requires_grad_() for t in ts]
                out = f(*ps)
                out.backward()
                return [p.grad for p in ps]
            return run

        def proj(x):
            o = attn.to_q(x) + attn.to_k(x) + attn.to_v(x)
            lq, lk, lv = attn.local_to_qkv(x).chunk(3, dim=-1)
            return attn.to_out(torch.cat([o, lq + lk + lv], dim=-1)).pow(2).sum()

        def kmeans(qk):
            dists, loss = km(qk, True)
            km.update()
            return loss

        def glob(q, k, v):
            out, loss = ga(q, k, v)
            ga.kmeans.update()
            return out.pow(2).sum() + loss

        with torch.no_grad():
            dists, _ = km(torch.cat((q, k), dim=2), False)
        dq, dk = dists[:, :, :L], dists[:, :, L:]

        def topw():
            with torch.no_grad():
                return ref.distribution(dq, W), ref.distribution(dk, W)

        def init():
            km.initted.data.copy_(torch.tensor(False))
            with torch.no_grad():
                km.init(torch.cat((q, k), dim=2))

        saved = km.means.detach().clone()
        fns = {"projections (q, k, v, local qkv; out), f+b": fb_of(proj, x),
               "Kmeans: similarities + buckets + commitment loss + new means, f+b": fb_of(kmeans, torch.cat((q, k), 2)),
               "top-w selection (distribution, q and k)": topw,
               "KmeansAttention (all of the routing heads), f+b": fb_of(glob, q, k, v),
               "local heads (LocalAttention), f+b": fb_of(lambda a, b, c: attn.local_attn(a, b, c).pow(2).sum(),
                                                          ql, kl, vl)}
        once = {"k-means init (10 iterations, first batch only)": init}
        return fns, once, saved

    def table_parts(t, total, names):
        return [[n, t[n] * 1e3, t[n] / total] for n in names]

    rows, part_sections, bounds = [], [], []
    load_start = os.getloadavg()
    for L in args.lengths:
        x_np = np.random.default_rng(L).normal(size=(B, L, D)).astype(np.float32)
        x = jnp.asarray(x_np)
        attn, rfwd, rfb = ref_layer(L, x_np)
        fns_f, fns_fb, routing_of = {"reference": rfwd}, {"reference": rfb}, {}
        for name, mod in impls.items():
            fns_f[name], fns_fb[name], routing_of[name] = our_layer(mod, x)
        tf = common.time_alternating(fns_f, repeats=args.repeats)
        tfb = common.time_alternating(fns_fb, repeats=args.repeats)
        for name in impls:
            rows.append([L, name, tf[name] * 1e3, tf["reference"] * 1e3, tf["reference"] / tf[name],
                         tfb[name] * 1e3, tfb["reference"] * 1e3, tfb["reference"] / tfb[name]])
            print(rows[-1], flush=True)

        # breakdown: ours (each implementation) and the reference, all parts alternating in one round
        part_fns, once_fns, labels = {}, {}, {}
        for name, mod in impls.items():
            j, o = our_parts(mod, x, routing_of[name])
            labels[name] = list(j) + list(o)
            part_fns.update({(name, k): f for k, f in j.items()})
            once_fns.update({(name, k): f for k, f in o.items()})
        rj, ro, saved = ref_parts(attn, x_np)
        labels["reference"] = list(rj) + list(ro)
        part_fns.update({("reference", k): f for k, f in rj.items()})
        once_fns.update({("reference", k): f for k, f in ro.items()})
        tp = common.time_alternating(part_fns, repeats=args.repeats)
        tp.update(common.time_alternating(once_fns, repeats=3))
        attn.global_attn.kmeans.means.data.copy_(saved)
        for name in list(impls) + ["reference"]:
            t = {k: v for (n, k), v in tp.items() if n == name}
            total = tfb[name]
            body = [[k, t[k] * 1e3, t[k] / total if "init" not in k else float("nan")] for k in labels[name]]
            if name == "reference":
                derived = (t["KmeansAttention (all of the routing heads), f+b"]
                           - t["Kmeans: similarities + buckets + commitment loss + new means, f+b"]
                           - t["top-w selection (distribution, q and k)"])
                body.insert(4, ["= gather + attention in clusters + scatter_mean (derived: KmeansAttention - Kmeans "
                                "- top-w)", derived * 1e3, derived / total])
            summed = sum(r[1] for r in body if "init" not in r[0] and not r[0].startswith("KmeansAttention"))
            body.append(["sum of the parts (without the init)", summed, summed / 1e3 / total])
            body.append(["whole layer, f+b", total * 1e3, 1.0])
            part_sections.append((L, name, body))
            if name == "ours":
                proj_t = t["projections (q, k, v in; out), f+b"]
                bounds.append([L, proj_t * 1e3, tfb["reference"] * 1e3, tfb["reference"] / proj_t,
                               tfb["reference"] / tfb["ours"]])
            print(L, name, [(r[0][:30], round(r[1], 1)) for r in body], flush=True)

    cmd = "python -m benchmarks.vs_lucidrains_routing " + " ".join(sys.argv[1:])
    text = [f"## Routing attention layer vs lucidrains' `SelfAttention` (B={B}, d_model {D}, {H} heads of {P}: "
            f"{HR} routing + {H - HR} local, window {W})", "",
            references.header("routing", args.threads), "",
            f"Command: `{cmd}` (in an environment with torch and the reference's requirements). Medians of "
            f"{args.repeats} alternating runs; ratio = reference time / ours. Load average (1, 5, 15 min) at the "
            f"start {', '.join(f'{a:.1f}' for a in load_start)}, at the end "
            f"{', '.join(f'{a:.1f}' for a in os.getloadavg())} on {os.cpu_count()} cores: PyTorch's CPU threads "
            "slow down far more than XLA's when other processes share the cores, so ratios measured under load "
            "overstate ours.", "",
            "Settings on both sides: bidirectional (`causal=False`), training mode (the online k-means update runs "
            f"every call), {W} tokens per cluster and C = L / {W} clusters, separate query and key projections "
            "(`shared_qk=False`; ours: the default `shared_qk=-1` = shared only when causal), local block "
            f"{W} looking one block back and one forward, commitment weight 1e-4, EMA decay 0.999, no dropout, "
            "float32. Where they differ: the reference is built with `rel_pos_emb=False` (its default adds a "
            "relative positional term to the local heads, which our layer does not have); the reference projects "
            "the local heads with one fused `Linear` (with bias) and the routing heads' q, k, v without bias, ours "
            "projects all 8 heads' q, k, v together (biases on q and v); its output projection has no bias, ours "
            "has one. The reference averages a token's cluster outputs with `+1e-5` in the denominator, ours with "
            "an exact `where` (same cost). The reference applies the EMA update in `Kmeans.update()`, called here "
            "after each forward (forward: under `torch.no_grad`) or backward; ours updates in the jitted step. The "
            "k-means init (10 iterations on the first batch) runs before the timed calls on both sides and is "
            "timed separately in the breakdown.", "",
            common.markdown_table(["L", "code", "fwd ms", "ref fwd ms", "fwd ratio", "f+b ms", "ref f+b ms",
                                   "f+b ratio"], rows), "",
            "### Where the time goes (forward + backward unless marked)", "",
            "Each part on its own at the layer's shapes (ours: a separate `jax.jit`; reference: the module or "
            "function called alone, with backward where it has a gradient), all parts of all sides timed "
            "alternating in one round; share = part / whole layer f+b (from the table above, a separate round). "
            "Parts run alone do not overlap as they can inside one program, so the sum need not equal the "
            "whole.", ""]
    text += ["**The projections bound the ratio.** Both layers make the same projections (d_model 256 to 8 heads' q, "
             "k, v and back: 4 x 256 x 256 multiply-adds per token, 1.57 MFLOP per token forward + backward), a "
             "plain matmul on each side. `bound` = reference layer f+b / our projections alone f+b: the ratio ours "
             "would reach if everything else in our layer took no time.", "",
             common.markdown_table(["L", "our projections ms", "ref layer f+b ms", "bound", "f+b ratio reached"],
                                   bounds), ""]
    for L, name, body in part_sections:
        text += [f"**L = {L}, {name}**", "", common.markdown_table(["part", "ms", "share"], body), ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
