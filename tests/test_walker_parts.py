"""The walker's plumbing, against its mutation survivors: what prune_model hands to a method's `prepare` and to
walk_blocks, walk_blocks' defaults, the weight strategy's hooks, and the staged-forward check."""

import copy

import pytest
import torch

from conftest import build_tiny_llama
from wandapp import walker
from wandapp.adapter import BlockParts
from wandapp.offload import BlockShuttle, OverlappedShuttle
from wandapp.walker import BlockContext, ResidentWeights, _map_tensors, module_device, prune_model, walk_blocks

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model_and_ids():
    model = build_tiny_llama(num_hidden_layers=3)
    ids = torch.randint(0, model.config.vocab_size, (5, 16), generator=torch.Generator().manual_seed(0))
    return model, ids


class Recorder:
    """A weights strategy that records its calls (and keeps the blocks where they are)."""

    def fetch(self, i, block):
        self.calls.append(("fetch", i))

    def __init__(self):
        self.calls, self.prefetched = [], []

    def prefetch(self, i, block):
        self.calls.append(("prefetch", i))
        self.prefetched.append(block)

    def release(self, i, block):
        self.calls.append(("release", i))

    def flush(self):
        self.calls.append(("flush",))


class Spy:
    """A method that prunes nothing and records what the walker gives it."""

    name = "spy"

    def __init__(self):
        self.prepared, self.seen = None, []

    def hyperparameters(self):
        return {}

    def prepare(self, model, input_ids, device, **kwargs):
        self.prepared = (device, kwargs)

    def prune_block(self, ctx):
        self.seen.append((ctx.index, ctx.micro_batch, ctx.inputs.device, ctx.wants_outputs))
        ctx.log["block"] = ctx.index
        if ctx.inputs.is_meta:  # no data to run the block on: hand the inputs on as the outputs
            ctx.next_inputs = ctx.inputs


class Bare:
    """A weights strategy with neither prefetch nor flush (both are optional)."""

    def fetch(self, i, block):
        pass

    def release(self, i, block):
        pass


def test_prune_model_hands_its_settings_to_prepare_and_the_walk(model_and_ids, monkeypatch):
    model, ids = model_and_ids
    walked = {}
    real_walk = walker.walk_blocks

    def walk(*args, **kwargs):
        walked.update(args=args[3:], kwargs=kwargs)
        return real_walk(*args, **kwargs)

    monkeypatch.setattr(walker, "walk_blocks", walk)
    spy, weights = Spy(), Recorder()
    logs = prune_model(model, ids, spy, CPU, offload=False, store="cpu", micro_batch=3, weights=weights)
    assert spy.prepared == (CPU, {"offload": False, "store": "cpu", "micro_batch": 3})
    assert walked["args"] == (CPU, False, "cpu", 3)
    assert walked["kwargs"] == {"desc": "pruning (spy)", "weights": weights, "last_outputs": False, "compile": False,
                                "propagate": True}
    assert logs == [{"block": 0}, {"block": 1}, {"block": 2}]
    assert [s[:2] for s in spy.seen] == [(0, 3), (1, 3), (2, 3)]
    assert [s[3] for s in spy.seen] == [True, True, False]  # nobody reads the last block's outputs
    spy = Spy()
    prune_model(model, ids, spy, CPU, weights=Recorder(), compile="eager")
    assert spy.prepared == (CPU, {"offload": True, "store": None, "micro_batch": 4})
    assert walked["kwargs"]["compile"] == "eager"


def test_walk_blocks_defaults_and_the_strategys_hooks(model_and_ids, monkeypatch):
    model, ids = model_and_ids
    made, bars = [], []
    real_resident, real_tqdm = walker.ResidentWeights, walker.tqdm
    monkeypatch.setattr(walker, "ResidentWeights", lambda *a, **k: made.append((a, k)) or real_resident(*a, **k))
    monkeypatch.setattr(walker, "tqdm", lambda it, **k: bars.append(k) or real_tqdm(it, **k))
    spy = Spy()
    out = walk_blocks(model, ids, spy.prune_block, CPU)
    assert made == [((CPU, True), {})] and bars == [{"desc": "blocks", "unit": "block"}]
    assert [s[1:] for s in spy.seen] == [(4, CPU, True)] * 3  # micro-batch 4, inputs stored on the device
    assert out.shape == (5, 16, model.config.hidden_size) and out.device == CPU
    rec = Recorder()
    walk_blocks(model, ids, Spy().prune_block, CPU, weights=rec, last_outputs=False)
    assert rec.calls == [("fetch", 0), ("prefetch", 1), ("release", 0), ("fetch", 1), ("prefetch", 2),
                         ("release", 1), ("fetch", 2), ("release", 2), ("flush",)]
    assert all(b is model.model.layers[i] for i, b in zip((1, 2), rec.prefetched, strict=True))


def test_walk_blocks_stores_inputs_where_asked_and_computes_on_the_device(model_and_ids, monkeypatch):
    model, ids = model_and_ids
    captured = []
    real_capture = walker.capture_block_inputs
    monkeypatch.setattr(walker, "capture_block_inputs",
                        lambda m, a, i, device, store: captured.append((device, store)) or real_capture(m, a, i,
                                                                                                      device, store))
    spy = Spy()
    out = walk_blocks(model, ids, spy.prune_block, CPU, store="meta", weights=Bare())  # no prefetch or flush
    walk_blocks(model, ids, Spy().prune_block, CPU, weights=Recorder())
    assert captured == [(CPU, torch.device("meta")), (CPU, CPU)]
    assert all(isinstance(s, torch.device) for _, s in captured)
    assert [s[2].type for s in spy.seen] == ["meta"] * 3 and out.is_meta


def test_prefetch_needs_both_an_overlapped_shuttle_and_a_shuttled_block(model_and_ids):
    model, _ = model_and_ids
    weights = ResidentWeights(CPU, offload=True, overlap=False)  # a plain shuttle: no prefetch, whatever the block
    sent = []
    weights.shuttle.prefetch = sent.append
    weights._shuttled = lambda block: True
    weights.prefetch(1, model.model.layers[1])
    assert sent == []


def test_stages_match_runs_one_sample_of_the_given_block_and_holds_at_the_edge(model_and_ids, monkeypatch):
    model, ids = model_and_ids
    block = model.model.layers[0]
    other = build_tiny_llama(seed=1, num_hidden_layers=1).model.layers[0]
    x = torch.randn(3, 16, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    kwargs = {"position_embeddings": model.model.rotary_emb(x, torch.arange(16).unsqueeze(0))}
    ran = []
    ctx = BlockContext(0, other, {}, x, kwargs, CPU)
    real_run = BlockContext.run
    monkeypatch.setattr(BlockContext, "run",
                        lambda self, x, b=None, eager=False: ran.append((x.shape[0], b, eager))
                        or real_run(self, x, b, eager))
    assert ctx._stages_match(block, BlockParts.of(block))  # checked on `block`, not on the context's own block
    assert ran == [(1, block, True)]  # eager: the staged forward is checked against the eager block
    ref = real_run(ctx, x[:1], block).float()
    # the tolerance is relative (<= 1e-3 of the reference's norm, inclusive): an error of exactly that passes
    edge = 1e-3 * ref.norm()
    for error, ok in [(edge, True), (edge * 1.01, False)]:
        monkeypatch.setattr(walker, "staged_forward",
                            lambda c, p, x, e=error: ref + e / ref.numel() ** 0.5)
        fresh = BlockContext(0, other, {}, x, kwargs, CPU)
        assert fresh._stages_match(block, BlockParts.of(block)) is ok


def test_a_method_that_reads_no_inputs_walks_without_forward_passes(model_and_ids, monkeypatch):
    """Magnitude: no capture, no block forward, no outputs; the same weights as a walk that propagates."""
    from wandapp.masks import SparsityPattern, follows_nm
    from wandapp.methods import build_method

    dense, ids = model_and_ids
    model, reference = copy.deepcopy(dense), copy.deepcopy(dense)
    method = build_method("magnitude", SparsityPattern.parse("2:4"))
    assert not method.reads_inputs and build_method("wanda", SparsityPattern.parse("2:4")).reads_inputs
    forwards, seen = [], []
    for block in model.model.layers:
        block.register_forward_pre_hook(lambda m, a: forwards.append(m))
    monkeypatch.setattr(walker, "capture_block_inputs", lambda *a: pytest.fail("captured inputs"))

    def visit(ctx):
        seen.append((ctx.nsamples, ctx.wants_outputs, tuple(ctx.inputs.shape[1:])))
        method.prune_block(ctx)

    assert walk_blocks(model, ids, visit, CPU, propagate=False) is None
    assert forwards == [] and seen == [(0, False, (16, model.config.hidden_size))] * 3
    monkeypatch.undo()
    walk_blocks(reference, ids, method.prune_block, CPU)  # a walk that captures and propagates
    a, b = model.state_dict(), reference.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert follows_nm(model.model.layers[2].mlp.down_proj.weight, 2, 4)
    # prune_model takes the method's word for it
    walked = []
    monkeypatch.setattr(walker, "walk_blocks", lambda *a, **k: walked.append(k["propagate"]))
    prune_model(model, ids, method, CPU)
    prune_model(model, ids, build_method("wanda", SparsityPattern.parse("2:4")), CPU)
    assert walked == [False, True]


def test_map_tensors_keeps_containers_and_module_device_reads_parameters_then_buffers():
    t = torch.zeros(1)
    mapped = _map_tensors({"a": (t, [t, 3]), "b": [t], "c": None}, lambda x: x + 1)
    assert type(mapped["a"]) is tuple and type(mapped["a"][1]) is list and type(mapped["b"]) is list
    assert mapped["a"][1][1] == 3 and mapped["c"] is None and mapped["b"][0].item() == 1.0
    buffers_only = torch.nn.Module()
    buffers_only.register_buffer("b", torch.zeros(1, device="meta"))
    assert module_device(torch.nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert module_device(buffers_only) == torch.device("meta")
    assert module_device(torch.nn.Module()) is None


def test_context_patterns_batches_on_the_device_and_kwargs_in_a_dtype():
    x = torch.randn(5, 3, 2)
    position = torch.arange(3)
    ctx = BlockContext(0, torch.nn.Linear(2, 2), {}, x, {"pos": position, "cs": (x[0], x[1])}, torch.device("meta"),
                       micro_batch=2, patterns={"mlp.up_proj": (2, 4)})
    assert ctx.pattern_for("mlp.up_proj", "own") == (2, 4) and ctx.pattern_for("mlp.down_proj", "own") == "own"
    for samples in (None, [4, 0, 2]):  # batches are made where the block computes, whatever stores the inputs
        got = list(ctx.batches(samples))
        assert [b.shape[0] for b in got] == ([2, 2, 1] if samples is None else [2, 1])
        assert all(b.is_meta for b in got)
    half = ctx.kwargs_for(torch.float16)
    assert half["pos"].dtype == torch.long and half["cs"][0].dtype == torch.float16  # only floating tensors


class RecordedMoves(torch.nn.Linear):
    """A block that records where it is asked to go (and stays put)."""

    def __init__(self):
        super().__init__(2, 2)
        self.moves = []

    def to(self, *args, **kwargs):
        self.moves.append(args[0] if args else kwargs.get("device"))
        return self


class SpyShuttle:
    def __init__(self, pinned):
        self.pinned, self.calls = pinned, []

    def to_device(self, block):
        self.calls.append("to_device")

    def home(self, block):
        self.calls.append("home")


def test_resident_weights_picks_its_shuttle(monkeypatch):
    def kind(**kwargs):
        return type(ResidentWeights(CPU, **kwargs).shuttle)

    assert ResidentWeights(CPU).offload is True
    assert kind() is BlockShuttle and kind(overlap=True) is BlockShuttle  # no overlap on a CPU unless asked
    assert kind(overlap_on_cpu=True) is OverlappedShuttle
    assert kind(offload=False, overlap_on_cpu=True) is BlockShuttle and kind(overlap=False, overlap_on_cpu=True) \
        is BlockShuttle
    made = []
    monkeypatch.setattr(walker, "OverlappedShuttle", lambda device: made.append(device) or "overlapped")
    assert ResidentWeights(torch.device("cuda", 1)).shuttle == "overlapped" and made == [torch.device("cuda", 1)]


def test_resident_weights_shuttles_only_offloaded_cpu_blocks_through_a_pinned_shuttle():
    weights = ResidentWeights(CPU, overlap_on_cpu=True)
    assert weights._shuttled(torch.nn.Linear(2, 2))
    assert not weights._shuttled(torch.nn.Linear(2, 2, device="meta"))  # not in CPU memory
    assert not weights._shuttled(torch.nn.Module())  # nothing to move
    assert not ResidentWeights(CPU, offload=False, overlap_on_cpu=True)._shuttled(torch.nn.Linear(2, 2))
    assert not ResidentWeights(CPU)._shuttled(torch.nn.Linear(2, 2))  # a CPU BlockShuttle is not pinned


@pytest.mark.parametrize("pinned", [True, False])
def test_resident_weights_fetch_and_release_go_through_the_shuttle_or_module_to(pinned):
    meta = torch.device("meta")
    weights, block = ResidentWeights(meta), RecordedMoves()
    weights.shuttle = SpyShuttle(pinned)
    weights.fetch(0, block)
    weights.release(0, block)
    if pinned:
        assert weights.shuttle.calls == ["to_device", "home"] and block.moves == []
    else:
        assert weights.shuttle.calls == [] and block.moves == [meta, CPU]
    kept = RecordedMoves()
    weights = ResidentWeights(meta, offload=False)
    weights.shuttle = SpyShuttle(pinned)
    weights.fetch(0, kept)
    weights.release(0, kept)  # no offload: the block stays on the device
    assert kept.moves == [meta] and weights.shuttle.calls == []
