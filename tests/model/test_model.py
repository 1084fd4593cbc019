"""The tiny model end to end on the CPU: logits against the float32 reference, both layouts,
greedy generation against teacher forcing, KV-cached decode against recompute."""

import pytest
import torch

from tritonllm import LLM
from tritonllm.engine import PromptError
from tritonllm.model.config import preset
from tritonllm.model.reference import reference_logits
from tritonllm.model.rope import yarn_frequencies
from tritonllm.model.transformer import KVCache

# Both longer than the tiny model's sliding window (8): its layers' rings wrap around.
PROMPT = [200006, 17360, 200008, 3575, 553, 261, 10297, 20994, 13, 200007, 200006, 1428, 200008, 12194, 0, 2405]
LONG_PROMPT = torch.randint(0, 200000, (40,), generator=torch.Generator().manual_seed(0)).tolist()


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module")
def prompt_logits(tiny_llm):
    return tiny_llm.logits(PROMPT)


def test_logits_match_float32_reference(tiny_llm, prompt_logits):
    ref = reference_logits(tiny_llm.weights, torch.tensor(PROMPT))
    assert prompt_logits.shape == (len(PROMPT), 201088) and prompt_logits.dtype == torch.float32
    assert rel_err(prompt_logits, ref) < 2e-2
    assert (prompt_logits.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9


@pytest.fixture(scope="module")
def long_logits(tiny_llm):
    return tiny_llm.logits(LONG_PROMPT)


def test_logits_match_float32_reference_far_beyond_the_window(tiny_llm, long_logits):
    ref = reference_logits(tiny_llm.weights, torch.tensor(LONG_PROMPT))
    assert rel_err(long_logits, ref) < 2e-2
    assert (long_logits.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9


def test_sliding_layers_cache_only_their_window(tiny_llm):
    cfg, cache = tiny_llm.config, tiny_llm.engine.cache
    assert cache.context_length == 64 and any(cfg.sliding_layers) and not all(cfg.sliding_layers)
    for i, sliding in enumerate(cfg.sliding_layers):
        assert cache.k[i].shape == cache.v[i].shape == (8 if sliding else 64, 2, 16)
    # gpt-oss-20b at 8192 tokens: 12 full layers of 8192 rows and 12 rings of 128, 4 KiB a row
    big = KVCache.allocate(preset("20b"), 8192, torch.device("meta"))
    assert sum(t.numel() * t.element_size() for t in big.k + big.v) == 12 * (8192 + 128) * 8 * 64 * 4 * 2


@pytest.mark.parametrize("first", [10, 30], ids=["second_chunk_longer_than_window", "second_chunk_shorter"])
def test_chunked_prefill_and_decode_equal_one_shot(tiny_llm, long_logits, first):
    model, n = tiny_llm.engine.model, len(LONG_PROMPT) - 3
    cache, scratch = KVCache.allocate(tiny_llm.config, 64, torch.device("cpu")), model.decode_scratch(64)
    ids = torch.tensor(LONG_PROMPT, dtype=torch.int32)
    logits = [model.prefill(ids[:first], 0, cache, all_logits=True)]
    logits.append(model.prefill(ids[first:n], first, cache, all_logits=True))
    for p in range(n, len(LONG_PROMPT)):
        logits.append(model.decode(ids[p : p + 1], torch.tensor([p], dtype=torch.int32), cache, scratch))
    assert rel_err(torch.cat(logits), long_logits) < 1e-4


def test_hf_layout_gives_the_same_logits(tiny_checkpoints, prompt_logits):
    hf = LLM(tiny_checkpoints["hf"], device="cpu", context_length=32)
    assert torch.equal(hf.logits(PROMPT), prompt_logits)


def test_greedy_generation_is_the_argmax_chain_of_teacher_forcing(tiny_llm):
    generated = list(tiny_llm.generate(PROMPT, 4, temperature=0))
    assert len(generated) == 4
    full = tiny_llm.logits(PROMPT + generated)
    assert full[len(PROMPT) - 1 : -1].argmax(-1).tolist() == generated


def test_kv_cached_decode_equals_full_recompute(tiny_llm):
    engine = tiny_llm.engine
    prefix, extra = PROMPT[:12], PROMPT[12:]  # crosses the sliding window of 8
    engine.prefill(prefix)
    decoded = []
    for token in extra:
        engine.token.fill_(token)
        engine.pos.fill_(len(engine.cached))
        decoded.append(engine.model.decode(engine.token, engine.pos, engine.cache, engine.scratch)[0])
        engine.cached.append(token)
    full = tiny_llm.logits(PROMPT)[len(prefix) :]
    assert rel_err(torch.stack(decoded), full) < 1e-4


def _spy_prefills(engine, monkeypatch) -> list[tuple[int, int]]:
    """(tokens, first position) of every prefill the engine runs from now on."""
    calls, original = [], engine.model.prefill

    def prefill(tokens, pos0, *args, **kwargs):
        calls.append((len(tokens), pos0))
        return original(tokens, pos0, *args, **kwargs)

    monkeypatch.setattr(engine.model, "prefill", prefill)
    return calls


def test_next_turn_reuses_the_cached_prefix(tiny_llm, monkeypatch):
    engine = tiny_llm.engine
    first = list(tiny_llm.generate(PROMPT, 2, temperature=0))
    prefilled = _spy_prefills(engine, monkeypatch)
    follow_up = PROMPT + first + [200007, 200006]
    again = list(tiny_llm.generate(follow_up, 2, temperature=0))
    assert prefilled == [(len(follow_up) - len(PROMPT) - 1, len(PROMPT) + 1)]
    assert again == tiny_llm.logits(follow_up + again)[len(follow_up) - 1 : -1].argmax(-1).tolist()


def test_a_prompt_diverging_inside_the_rings_window_is_prefilled_in_full(tiny_llm, long_logits, monkeypatch):
    engine = tiny_llm.engine
    engine.prefill(LONG_PROMPT)
    prefilled = _spy_prefills(engine, monkeypatch)
    # The same prompt again: its last token runs again, and the rings still hold its window.
    assert rel_err(engine.prefill(LONG_PROMPT)[0], long_logits[39]) < 1e-4
    # A prompt that stops at 33 tokens reruns position 32, whose window 25..31 positions
    # 33..39 overwrote in the sliding layers' rings (8 rows): it is prefilled in full.
    assert rel_err(engine.prefill(LONG_PROMPT[:33])[0], long_logits[32]) < 1e-4
    assert prefilled == [(1, 39), (33, 0)]


def test_a_next_turn_without_the_last_answers_reasoning_resumes_after_the_last_prompt(tiny_llm, monkeypatch):
    """Harmony drops a finished turn's reasoning, so the next prompt keeps the last prompt but not
    the tokens generated after it, which overwrote the sliding layers' rings (window 8): the
    rings saved at the end of the last prompt let it resume there instead of from 0."""
    engine = tiny_llm.engine
    engine.reset()
    generated = list(tiny_llm.generate(PROMPT, 9, temperature=0))
    assert len(generated) == 9  # 8 decoded past the window: the live rings no longer hold PROMPT's end
    answer = [t for t in (200005, 1, 2) if t != generated[0]][:2]
    follow_up = PROMPT + answer + [200007, 200006, 1428, 200008]
    prefills = _spy_prefills(engine, monkeypatch)
    logits = engine.prefill(follow_up)
    assert prefills == [(len(follow_up) - len(PROMPT), len(PROMPT))]
    assert rel_err(logits[0], tiny_llm.logits(follow_up)[-1]) < 1e-4
    # Regenerating an answer to the same prompt reruns only its last token.
    list(tiny_llm.generate(PROMPT, 9, temperature=0))
    prefills.clear()
    assert rel_err(engine.prefill(PROMPT)[0], tiny_llm.logits(PROMPT)[-1]) < 1e-4
    assert prefills[0] == (1, len(PROMPT) - 1)


def test_seeded_sampling_is_reproducible(tiny_llm):
    a = list(tiny_llm.generate(PROMPT, 3, temperature=1.0, top_p=0.9, seed=5))
    b = list(tiny_llm.generate(PROMPT, 3, temperature=1.0, top_p=0.9, seed=5))
    assert a == b


def test_generation_ended_early_leaves_every_decoded_token_in_the_cache(tiny_llm, monkeypatch):
    """A token's decode step is launched before the host reads the token (one in flight), so a
    stop token is decoded too, and so is the last token a consumer took before closing the
    stream: the cache records both, and the next prompt continues after them."""
    engine = tiny_llm.engine
    greedy = list(tiny_llm.generate(PROMPT, 3, temperature=0))
    stopped = greedy[: greedy.index(greedy[1]) + 1]
    assert list(tiny_llm.generate(PROMPT, 5, temperature=0, stop_tokens=[greedy[1]])) == stopped
    assert engine.cached == PROMPT + stopped
    prefills = _spy_prefills(engine, monkeypatch)
    follow_up = PROMPT + stopped + [200007]
    assert rel_err(engine.prefill(follow_up)[0], tiny_llm.logits(follow_up)[-1]) < 1e-4
    assert prefills[0] == (1, len(follow_up) - 1)
    stream = tiny_llm.generate(PROMPT, 10, temperature=0)
    taken = [next(stream) for _ in range(3)]
    stream.close()
    assert taken == greedy and engine.cached == PROMPT + greedy


def test_generation_stops_when_the_context_is_full(tiny_checkpoints):
    llm = LLM(tiny_checkpoints["original"], device="cpu", context_length=len(PROMPT) + 2)
    assert len(list(llm.generate(PROMPT, 10, temperature=0))) == 3


def test_bad_prompts_get_clear_errors(tiny_llm):
    with pytest.raises(PromptError, match="empty"):
        tiny_llm.logits([])
    with pytest.raises(PromptError, match="201088 is outside the vocabulary"):
        tiny_llm.logits([1, 201088])
    with pytest.raises(PromptError, match="65 tokens but the context holds 64"):
        list(tiny_llm.generate([1] * 65, 1))
    with pytest.raises(ValueError, match="top_p"):
        list(tiny_llm.generate([1], 1, top_p=0))


def test_yarn_frequencies():
    from tritonllm.model.config import preset

    concentration, inv_freq = yarn_frequencies(preset("20b"))
    assert concentration == pytest.approx(0.1 * torch.log(torch.tensor(32.0)).item() + 1)
    base = 1.0 / 150000 ** (torch.arange(0, 64, 2) / 64)
    assert torch.allclose(inv_freq[:8], base[:8])  # short wavelengths keep their frequency
    assert torch.allclose(inv_freq[-4:], base[-4:] / 32)  # long ones are interpolated
    assert (inv_freq[8:-4] <= base[8:-4]).all() and (inv_freq[8:-4] >= base[8:-4] / 32).all()


def test_no_gpu_message(monkeypatch):
    from tritonllm.llm import DeviceError, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU found"):
        resolve_device(None)
