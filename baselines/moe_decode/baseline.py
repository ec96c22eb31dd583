"""Baseline decode MoE experts for one tensor-parallel rank of Qwen3-30B-A3B (H=2048, I=192, top-8).

The structure of the contest baseline as MOE.md describes it: both physical cores walk every
routed (token, expert) pair in order, and core c owns intermediate columns [96c, 96c+96) of every
expert. Gate and up weights arrive as 192-byte row slices, K-tile by K-tile, on one DMA queue
into a single buffer; the down projection reuses one PSUM bank with one read-out per output
tile; the cores swap fp32 partials, and each finishes half of the output columns.

Rounding chain (the contract): gate/up accumulate in fp32 PSUM over the 16 K-tiles in order;
silu(gate) * up rounds to bf16; each core's down partial is fp32; partial(core 0) + partial(core 1)
rounds to bf16; times the fp32 routing weight rounds to bf16; experts add in slot order 0..7
with a bf16 rounding after every add.
"""

from knight.npu import nisa, nl

H = 2048  # hidden size
I = 192  # expert intermediate size per tensor-parallel rank  # noqa: E741
K = 8  # experts per token (top-8)
P = 128  # partitions
KT = H // P  # K-tiles of the hidden dimension
HALF = I // 2  # intermediate columns per core

# Tuning knobs (name -> allowed values). Every value keeps the output bits unchanged.
GU_TILES_PER_DMA = 2  # K-tiles (of 128 hidden rows) of gate/up weights fetched by one DMA
WEIGHT_ENGINE = "sync"  # nisa.engine that triggers the weight DMAs (its queue carries them all)
WEIGHT_BUFFERS = 1  # weight buffers rotated across (token, expert) pairs
GU_ROWS = "own"  # gate/up columns fetched per hidden row: "own" (this core's, 192-B runs) or "whole" (2x bytes, one run)
TUNABLES = {
    "GU_TILES_PER_DMA": [1, 2, 4, 8, 16],
    "WEIGHT_ENGINE": ["sync", "scalar", "gpsimd"],
    "WEIGHT_BUFFERS": [1, 2],
    "GU_ROWS": ["own", "whole"],
}


def moe_decode(hidden, expert_ids, expert_weights, w_gate_up, w_down, out):
    T = hidden.shape[0]
    c = nl.program_id(0)
    other = 1 - c
    cols = nl.ds(c * HALF, HALF)

    # Activations with hidden row h = 16p + kt on partition p, column kt (a contiguous reshape).
    x = nl.ndarray((P, KT, T), dtype=nl.bfloat16, name="x")
    nisa.dma_copy(dst=x, src=hidden.reshape(T, P, KT).permute(1, 2, 0))
    ids = nl.ndarray((1, T * K), dtype=nl.int32, name="ids")
    nisa.dma_copy(dst=ids, src=expert_ids.reshape(1, T * K))
    wts = nl.ndarray((P, T * K), dtype=nl.float32, name="routing_weights")
    nisa.dma_copy(dst=wts, src=expert_weights.reshape(1, T * K).broadcast_to(P, T * K))

    fetched = cols if GU_ROWS == "own" else nl.ds(0, I)  # gate/up columns each DMA brings in
    mine = nl.ds(0, HALF) if GU_ROWS == "own" else cols  # this core's columns among them
    width = HALF if GU_ROWS == "own" else I
    wgu = [nl.ndarray((P, KT, 2, width), dtype=nl.bfloat16, name=f"w_gate_up{b}") for b in range(WEIGHT_BUFFERS)]
    wdn = [nl.ndarray((HALF, H), dtype=nl.bfloat16, name=f"w_down{b}") for b in range(WEIGHT_BUFFERS)]
    ps_gate = nl.ndarray((HALF, 1), dtype=nl.float32, buffer=nl.psum, name="ps_gate")
    ps_up = nl.ndarray((HALF, 1), dtype=nl.float32, buffer=nl.psum, name="ps_up")
    ps_down = nl.ndarray((P, 1), dtype=nl.float32, buffer=nl.psum, name="ps_down")
    act = nl.ndarray((HALF, 1), dtype=nl.float32, name="silu_gate")
    inter = nl.ndarray((HALF, 1), dtype=nl.bfloat16, name="intermediate")
    partial = nl.ndarray((P, KT), dtype=nl.float32, name="partial")
    theirs = nl.ndarray((P, KT // 2), dtype=nl.float32, name="their_partial")
    expert_out = nl.ndarray((P, KT // 2), dtype=nl.bfloat16, name="expert_out")
    scaled = nl.ndarray((P, KT // 2), dtype=nl.bfloat16, name="scaled")
    acc = nl.ndarray((P, KT // 2), dtype=nl.bfloat16, name="acc")

    for t in range(T):
        for k in range(K):
            slot = t * K + k
            buf = slot % WEIGHT_BUFFERS
            e = nisa.register_alloc()
            nisa.register_load(e, ids[0:1, slot : slot + 1])

            # Gate and up columns of this core: 2 x 192-byte pieces per hidden row (or whole rows).
            src = w_gate_up[e].reshape(P, KT, 2, I)
            for kt in range(0, KT, GU_TILES_PER_DMA):
                tiles = nl.ds(kt, GU_TILES_PER_DMA)
                nisa.dma_copy(dst=wgu[buf][:, tiles], src=src[:, tiles, :, fetched], engine=nisa.engine[WEIGHT_ENGINE])
            nisa.dma_copy(dst=wdn[buf], src=w_down[e][cols, :], engine=nisa.engine[WEIGHT_ENGINE])

            for kt in range(KT):
                nisa.nc_matmul(ps_gate, wgu[buf][:, kt, 0, mine], x[:, kt, t : t + 1], accumulate=kt > 0)
            for kt in range(KT):
                nisa.nc_matmul(ps_up, wgu[buf][:, kt, 1, mine], x[:, kt, t : t + 1], accumulate=kt > 0)
            nisa.activation(act, nl.silu, ps_gate)
            nisa.tensor_tensor(inter, act, ps_up, nl.multiply)

            # Down projection: output h = 128j + p; one bank, one read-out per tile.
            for j in range(KT):
                nisa.nc_matmul(ps_down, wdn[buf][:, j * P : (j + 1) * P], inter, accumulate=False)
                nisa.tensor_copy(partial[:, j : j + 1], ps_down)

            # Swap partials: each core finishes output tiles [8c, 8c+8).
            nisa.sendrecv(
                src=partial[:, other * 8 : other * 8 + 8], dst=theirs, send_to_rank=other, recv_from_rank=other,
                pipe_id=0, dma_engine=nisa.dma_engine.gpsimd_dma,
            )
            nisa.tensor_tensor(expert_out, partial[:, c * 8 : c * 8 + 8], theirs, nl.add)
            nisa.tensor_scalar(scaled, expert_out, nl.multiply, wts[:, slot : slot + 1])
            if k == 0:
                nisa.tensor_copy(acc, scaled)
            else:
                nisa.tensor_tensor(acc, acc, scaled, nl.add)

        dst = out[t].reshape(KT, P)[c * 8 : c * 8 + 8, :].permute(1, 0)
        nisa.dma_copy(dst=dst, src=acc)
