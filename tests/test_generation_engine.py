"""The cached engine against the plain recompute loop; batching, seeds, EOS, limits, re-windowing, the cache."""

import pytest
import torch

from notagen.config import BOS_ID, EOS_ID, VOCAB_SIZE, ModelConfig
from notagen.generation import GenerationEngine, GenerationLimits, PieceRequest, SamplingSettings
from notagen.generation.cache import KVCache
from notagen.generation.engine import body_lines_of, rewindow
from notagen.generation.reference import generate_plain
from notagen.model import NotaGenModel
from notagen.patchilizer import Patchilizer

GREEDY = SamplingSettings(top_k=1, strict=False)
PROMPT = "%Baroque\n%Bach, Johann Sebastian\n%Keyboard\n"
CONTINUATION = ("L:1/8\nM:4/4\nK:C\n"
                "[r:0/3][V:1]abcd|[V:2]cdef|\n[r:1/2][V:1]abcd|[V:2]cdef|\n[r:2/1][V:1]gfed|[V:2]cBAG|\n[r:3/0][V:1]ab")


class LineBias:
    """Wraps the char logits of a random model so it writes short units and lines (EOS, bar lines, newlines).

    A deterministic function of the hidden state, so cached and plain loops still see the same logits.
    """

    def __init__(self, logits) -> None:
        self.logits = logits
        self.bias = torch.zeros(VOCAB_SIZE, dtype=torch.float64)
        for char, boost in ((EOS_ID, 2.0), (ord("\n"), 1.5), (ord("|"), 1.0)):
            self.bias[char] = boost

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.logits(hidden) * 20 + self.bias.to(hidden.dtype)


def tiny_model(patch_length: int = 16, seed: int = 0, dtype=torch.float64) -> NotaGenModel:
    torch.manual_seed(seed)
    return NotaGenModel(ModelConfig.preset("tiny", patch_length=patch_length)).to(dtype).eval()


def test_greedy_engine_matches_plain_loop_across_rewindows():
    model = tiny_model(patch_length=16)
    model.char_level_decoder.logits = LineBias(model.char_level_decoder.logits)
    requests = [PieceRequest(PROMPT), PieceRequest(CONTINUATION), PieceRequest("")]
    limits = GenerationLimits(max_patches=45)
    engine = GenerationEngine(model)
    cached = engine.generate(requests, GREEDY, limits)
    plain = generate_plain(model, requests, GREEDY, limits)
    assert [p.text for p in cached] == [p.text for p in plain]
    assert [p.stop_reason for p in cached] == [p.stop_reason for p in plain]
    assert cached[1].rewindows >= 3  # the continuation crossed the 16-patch window several times
    assert cached[1].patches == 45 and cached[1].stop_reason == "max_patches"
    # nothing recomputed per step: one prefill per piece and per re-window
    assert engine.stats.prefills == sum(1 + p.rewindows for p in cached)


@pytest.mark.parametrize("strict", [False, True])
def test_sampled_engine_matches_plain_loop(strict):
    model = tiny_model(patch_length=32, seed=3)
    requests = [PieceRequest(CONTINUATION, seed=11), PieceRequest(PROMPT, seed=12)]
    limits = GenerationLimits(max_patches=40)
    settings = SamplingSettings(temperature=1.2, top_k=9, top_p=0.9, strict=strict)
    cached = GenerationEngine(model).generate(requests, settings, limits, batch_size=2)
    plain = generate_plain(model, requests, settings, limits)
    assert [p.text for p in cached] == [p.text for p in plain]


def test_batch_gives_the_same_pieces_as_one_by_one():
    model = tiny_model(patch_length=16, seed=1)
    requests = [PieceRequest(CONTINUATION, 0), PieceRequest(PROMPT, 1), PieceRequest("", 2),
                PieceRequest(CONTINUATION[:60], 3), PieceRequest("L:1/4\nK:G\n", 4)]
    limits = GenerationLimits(max_patches=30)
    engine = GenerationEngine(model)
    for settings in (GREEDY, SamplingSettings(seed_free := 1.0, top_k=5, top_p=0.95)):  # noqa: F841
        alone = [engine.generate([r], settings, limits)[0].text for r in requests]
        batched = engine.generate(requests, settings, limits, batch_size=3)  # rows refilled from the queue
        assert [p.text for p in batched] == alone
        assert [p.request for p in batched] == requests


def test_same_seed_same_piece_different_seed_different_piece():
    model = tiny_model(patch_length=64, seed=2, dtype=torch.float32)
    engine = GenerationEngine(model)
    limits = GenerationLimits(max_patches=12)
    settings = SamplingSettings()
    a, b, c = (engine.generate([PieceRequest(PROMPT, seed=s)], settings, limits)[0].text for s in (7, 7, 8))
    assert a == b
    assert a != c


class ScriptedLogits:
    """Replaces the char decoder's logits: each call strongly favours the next char of a fixed script."""

    def __init__(self, script: list[int]) -> None:
        self.script = script
        self.calls = 0

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(hidden.shape[0], VOCAB_SIZE, dtype=hidden.dtype)
        logits[:, self.script[min(self.calls, len(self.script) - 1)]] = 50.0
        self.calls += 1
        return logits


def script_of(units: list[str], end: bool = True) -> list[int]:
    ids = [c for unit in units for c in [ord(ch) for ch in unit] + [EOS_ID]]
    return ids + ([BOS_ID, EOS_ID] if end else [])


def test_eos_ends_a_patch_and_the_eos_patch_ends_the_piece():
    model = tiny_model(patch_length=64)
    units = ["L:1/8\n", "K:C\n", "[V:1]abc", "|[V:2]def|\n", "[V:1]g|[V:2]a|\n"]
    script = script_of(units)
    model.char_level_decoder.logits = ScriptedLogits(script)
    engine = GenerationEngine(model)
    engine.record_patches = True
    piece = engine.generate([PieceRequest("")], GREEDY)[0]
    assert piece.stop_reason == "eos" and piece.ended
    assert piece.generated == "".join(units)
    assert piece.patches == len(units) and piece.bars == 2
    # one char step per char up to and including each EOS: nothing computed after it
    assert engine.stats.char_steps == len(script)
    for patch, unit in zip(engine.patch_log[0][1:], units):
        assert patch == [ord(c) for c in unit] + [EOS_ID] + [0] * (15 - len(unit))


def test_first_body_patch_is_forced_to_start_at_line_zero():
    model = tiny_model(patch_length=64)
    # the script writes "[r:7/" but the engine must force "0/" after "[r:" (the script's "7/" is never read)
    script = script_of(["K:C\n"], end=False) + [ord(c) for c in "[r:"] + [ord(c) for c in "3][V:1]ab"] + [EOS_ID]
    model.char_level_decoder.logits = ScriptedLogits(script + script_of(["|\n"]))
    piece = GenerationEngine(model).generate([PieceRequest("")], GREEDY)[0]
    assert piece.generated.startswith("K:C\n[r:0/3][V:1]ab|\n")
    assert piece.stop_reason == "eos"


def test_limits_stop_generation():
    model = tiny_model(patch_length=64, dtype=torch.float32)
    engine = GenerationEngine(model)
    piece = engine.generate([PieceRequest(PROMPT)], GREEDY, GenerationLimits(max_chars=50))[0]
    assert piece.stop_reason == "max_chars" and 50 <= len(piece.generated) < 50 + 16
    piece = engine.generate([PieceRequest(PROMPT)], GREEDY, GenerationLimits(max_patches=3))[0]
    assert piece.stop_reason == "max_patches" and piece.patches == 3
    piece = engine.generate([PieceRequest(PROMPT)], GREEDY, GenerationLimits(max_seconds=0))[0]
    assert piece.stop_reason == "max_seconds" and piece.patches == 1

    scripted = tiny_model(patch_length=64)
    line = "[V:1]abc|\n"
    scripted.char_level_decoder.logits = ScriptedLogits(script_of(["K:C\n"] + [line] * 50))
    piece = GenerationEngine(scripted).generate([PieceRequest("")], GREEDY, GenerationLimits(max_bars=4))[0]
    assert piece.stop_reason == "max_bars" and piece.bars == 4
    assert piece.generated == "K:C\n" + line * 4


def test_progress_reports_bars_and_speed():
    model = tiny_model(patch_length=64, dtype=torch.float32)
    events = []
    GenerationEngine(model).generate([PieceRequest(PROMPT), PieceRequest("")], GREEDY,
                                     GenerationLimits(max_patches=4), batch_size=2, progress=events.append)
    assert len(events) == 4
    assert events[-1].done == 2 and events[-1].total == 2
    assert events[-1].chars > events[0].chars > 0 and events[-1].chars_per_second > 0


def test_rewindow_keeps_metadata_and_last_half_of_the_lines():
    patchilizer = Patchilizer(patch_length=64)
    body = [f"[r:{i}/9][V:1]abcdefgh|[V:2]ABCDEFGH|\n" for i in range(10)]
    text = "L:1/8\nK:C\n" + "".join(body) + "[r:10/0][V:1]ab"
    metadata, lines = body_lines_of(text)
    assert metadata == ["L:1/8\n", "K:C\n"] and len(lines) == 11
    full, prefix, cut = rewindow(text, None, patchilizer)
    assert cut == 5
    kept = "L:1/8\nK:C\n" + "".join(body[-4:]) + "[r:10/0][V:1]ab"
    assert patchilizer.decode(full) + "".join(map(chr, prefix)) == kept
    assert prefix == [ord(c) for c in "[r:10/0][V:1]ab"]
    # cut_index is reused, and lines are dropped while the window would not leave room
    tight = Patchilizer(patch_length=12)
    full, prefix, cut = rewindow(text, 5, tight)
    assert cut == 5 and len(full) <= 10
    assert rewindow("L:1/8\n", None, patchilizer) is None
    # A voice's unit the model has already ended (its EOS written, the next unit's barline not yet) stays ended:
    # the window closes it, so the next patch starts the next unit (strict decoding has seen it end).
    full, prefix, _ = rewindow(text, None, patchilizer, unit_closed=True)
    assert prefix == [] and full[-1][:16] == [ord(c) for c in "[r:10/0][V:1]ab"] + [EOS_ID]


def _rewindow_by_scan(text, cut_index, patchilizer):
    """The definition rewindow's bisection must match: the most lines (up to cut_index) that leave room."""
    from notagen.generation.engine import close_finished_line, split_context

    metadata, body = body_lines_of(text)
    cut_index = cut_index or max(1, len(body) // 2)
    for keep in range(min(cut_index, len(body)), 0, -1):
        window = "".join(metadata + body[-keep:])
        full, prefix = close_finished_line(*split_context(patchilizer.encode_generate(window), 16), window, 16)
        if len(full) <= patchilizer.patch_length - 2:
            return full, prefix, cut_index
    return None


def test_rewindow_bisection_keeps_what_the_scan_keeps():
    rng = __import__("random").Random(3)
    for trial in range(60):
        lines = [f"[r:{i}/0][V:1]" + "a" * rng.randrange(0, 70) + "|\n" for i in range(rng.randrange(1, 120))]
        text = "L:1/8\nK:C\n" + "".join(lines) + ("[r:99/0][V:1]ab" if trial % 2 else "")
        patchilizer = Patchilizer(patch_length=rng.choice([6, 12, 40, 200]))
        for cut in (None, 1, 7, 500):
            assert rewindow(text, cut, patchilizer) == _rewindow_by_scan(text, cut, patchilizer), (trial, cut)


def test_kv_cache_ragged_rows():
    cache = KVCache(layers=1, batch=2, heads=1, head_dim=2, capacity=6)
    k = torch.arange(4.0).view(2, 1, 1, 2)
    cache.update(0, k, k)
    cache.update(0, k + 10, k + 10)
    assert cache.length == 2 and cache.attention_mask() is None
    single = KVCache(layers=1, batch=1, heads=1, head_dim=2, capacity=6)
    single.update(0, torch.full((1, 1, 3, 2), 7.0), torch.full((1, 1, 3, 2), 7.0))
    cache.place_row(1, single)  # longer than the batch: everything shifts right
    assert cache.length == 3 and cache.starts.tolist() == [1, 0]
    assert cache.keys[0][1, 0, :3].eq(7).all() and cache.keys[0][0, 0, 1:3, 0].tolist() == [0.0, 10.0]
    mask = cache.attention_mask()
    assert mask.shape == (2, 1, 1, 4) and mask[0, 0, 0].tolist() == [False, True, True, True]
    assert cache.positions().tolist() == [[2], [3]]
    cache.select_rows([0])  # drop row 1; compaction moves row 0 back to slot 0
    assert cache.length == 2 and cache.starts.tolist() == [0]
    assert cache.keys[0][0, 0, :2, 0].tolist() == [0.0, 10.0]
    cache.update(0, k[:1] + 20, k[:1] + 20)
    cache.update(0, k[:1] + 30, k[:1] + 30)
    cache.update(0, k[:1] + 40, k[:1] + 40)
    cache.update(0, k[:1] + 50, k[:1] + 50)
    with pytest.raises(RuntimeError):
        cache.update(0, k[:1], k[:1])


@pytest.mark.parametrize("bars", [300, pytest.param(3000, marks=pytest.mark.slow)])
def test_long_piece_through_many_rewindows(bars):
    model = tiny_model(patch_length=64, dtype=torch.float32)
    line = "[V:1]abc|\n"
    model.char_level_decoder.logits = ScriptedLogits(script_of(["K:C\n"] + [line] * (bars + 1)))
    engine = GenerationEngine(model)
    piece = engine.generate([PieceRequest("")], GREEDY, GenerationLimits(max_bars=bars))[0]
    assert piece.stop_reason == "max_bars" and piece.bars == bars
    assert piece.generated == "K:C\n" + line * bars
    assert piece.rewindows > bars // 40
    assert engine.stats.prefills == 1 + piece.rewindows


def test_initial_context_encoding():
    from notagen.generation.engine import PieceState

    patchilizer = Patchilizer(patch_length=64)
    state = PieceState(PieceRequest(PROMPT), 0, patchilizer, GenerationLimits())
    expected = [patchilizer.bos_patch] + [p for line in PROMPT.splitlines(keepends=True)
                                          for p in patchilizer.unit_to_patches(line)]
    assert state.initial_context() == expected and state.prefix == [] and not state.body_started
    # an unfinished last line becomes the forced prefix of the next patch
    state = PieceState(PieceRequest(CONTINUATION), 0, patchilizer, GenerationLimits())
    context = state.initial_context()
    assert state.body_started and state.prefix == [ord(c) for c in "[r:3/0][V:1]ab"]
    assert patchilizer.decode(context) + "[r:3/0][V:1]ab" == CONTINUATION
    # complete lines are closed with their EOS, so the model starts a new line
    complete = CONTINUATION.rsplit("\n", 1)[0] + "\n"
    state = PieceState(PieceRequest(complete), 0, patchilizer, GenerationLimits())
    context = state.initial_context()
    metadata, body = patchilizer.split_text(complete, add_stream=False)
    units = metadata + [unit for line in body for unit in line]
    assert state.prefix == []
    assert context == [patchilizer.bos_patch] + [p for unit in units for p in patchilizer.unit_to_patches(unit)]
    assert context[-1] == patchilizer.unit_to_patches("|[V:2]cBAG|\n")[-1]
