"""The interleaved single-stream policy on tiny random-initialised Llama and Qwen2 models (real classes, CPU)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from align.interleaved import (
    DONE,
    InterleavedPolicy,
    InterleaveLogitsProcessor,
    InterleaveSpec,
    extend_vocab,
)
from align.policy import BOUNDARY, PAD_CHANNEL, SPEECH, TEXT, PolicyAdapter, SpeechCodec, Trajectory

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "what is two plus two? the answer is four.",
    "how many legs does a spider have? a spider has eight legs.",
    "say hello in a cheerful voice. hello there, how are you today?",
    "convert three kilometres to metres. three kilometres is three thousand metres.",
] * 4


class ToyCodec:
    """Speech tokens = UTF-8 bytes of the text; audio = one token per 100 samples; decode = a step waveform."""

    vocab_size = 256

    def encode_text(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_audio(self, audio: np.ndarray, sample_rate: int) -> list[int] | None:
        return [int(np.clip((x + 1) * 128, 0, 255)) for x in audio[::100]]

    def decode(self, tokens):
        return np.repeat((np.asarray(tokens, dtype=np.float32) - 128) / 128, 80), 8000

    def info(self) -> dict:
        return {"name": "toy"}


class TextOnlyCodec(ToyCodec):
    def encode_audio(self, audio, sample_rate):
        return None


def make_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in memory (any text encodes; no download) with a ChatML template."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    tok.chat_template = CHATML
    return tok


def make_model(arch: str, vocab: int, tie: bool | None = None):
    torch.manual_seed(0)
    common = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=bool(tie))).eval()
    return Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True if tie is None else tie)).eval()


def make_policy(arch: str = "llama", text_chunk: int = 3, speech_chunk: int = 5, codec=None) -> InterleavedPolicy:
    tok = make_tokenizer()
    model = make_model(arch, len(tok))
    spec = extend_vocab(model, tok, ToyCodec.vocab_size, text_chunk=text_chunk, speech_chunk=speech_chunk)
    return InterleavedPolicy(model, tok, spec, codec or ToyCodec())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: with several torch threads on a busy CPU, thread hand-offs cost more than the matmuls (~30x)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def policy(request) -> InterleavedPolicy:
    return make_policy(request.param)


def ask(policy: InterleavedPolicy, question: str) -> list[int]:
    return policy.build_prompt([{"role": "user", "content": question}])


def random_sentence(policy: InterleavedPolicy, rng: random.Random, end_prob: float = 0.15) -> list[int]:
    """Walk the grammar with random legal tokens (ending tokens favoured) until EOS."""
    grammar, spec = policy.grammar, policy.spec
    state, out = grammar.start(), []
    while state[0] != DONE:
        allowed = grammar.allowed[state[0]].nonzero().flatten().tolist()
        enders = [t for t in allowed if t in (spec.text_end_id, spec.eoa_id)]
        token = rng.choice(enders) if enders and rng.random() < end_prob else rng.choice(allowed)
        out.append(token)
        state = grammar.advance(state, token)
    return out


# ------------------------------------------------------------------------------------------------ protocol, spec
def test_protocols_are_satisfied(policy):
    assert isinstance(policy, PolicyAdapter)
    assert isinstance(ToyCodec(), SpeechCodec)
    info = policy.info()
    json.dumps(info)
    assert info["family"] == "interleaved" and info["spec"]["speech_vocab_size"] == 256
    assert info["model_class"] in ("LlamaForCausalLM", "Qwen2ForCausalLM")


def test_spec_rejects_overlapping_ids():
    with pytest.raises(ValueError, match="four different"):
        InterleaveSpec(speech_offset=10, speech_vocab_size=5, boa_id=1, eoa_id=1, text_end_id=2, eos_id=3)
    with pytest.raises(ValueError, match="speech range"):
        InterleaveSpec(speech_offset=10, speech_vocab_size=5, boa_id=12, eoa_id=1, text_end_id=2, eos_id=3)
    with pytest.raises(ValueError, match="chunks"):
        InterleaveSpec(speech_offset=10, speech_vocab_size=5, boa_id=0, eoa_id=1, text_end_id=2, eos_id=3, text_chunk=0)


def test_policy_needs_the_extended_vocab():
    tok = make_tokenizer()
    model = make_model("llama", len(tok))
    spec = InterleaveSpec(speech_offset=len(tok), speech_vocab_size=16, boa_id=0, eoa_id=1, text_end_id=2, eos_id=3)
    with pytest.raises(ValueError, match="extend_vocab"):
        InterleavedPolicy(model, tok, spec)


# ------------------------------------------------------------------------------------------------ extend_vocab
@pytest.mark.parametrize("arch,tie", [("llama", False), ("qwen2", True)])
def test_extend_vocab_adds_tokens_and_keeps_old_embeddings(arch, tie):
    tok = make_tokenizer()
    n_text = len(tok)
    model = make_model(arch, n_text, tie=tie)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    spec = extend_vocab(model, tok, 40, text_chunk=13, speech_chunk=26)

    assert len(tok) == n_text + 43
    assert (spec.speech_offset, spec.speech_vocab_size) == (n_text, 40)
    assert tok.convert_ids_to_tokens(spec.speech_offset + 7) == "<|speech_7|>"
    assert tok.convert_ids_to_tokens([spec.boa_id, spec.eoa_id, spec.text_end_id]) == [
        "<|begin_of_audio|>",
        "<|end_of_audio|>",
        "<|text_end|>",
    ]
    assert spec.eos_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert (spec.text_chunk, spec.speech_chunk) == (13, 26)
    new_in, new_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert new_in.shape[0] == new_out.shape[0] == len(tok) == model.config.vocab_size
    assert torch.equal(new_in[:n_text], old_in) and torch.equal(new_out[:n_text], old_out)
    assert torch.allclose(new_in[n_text:], old_in.mean(0).expand(43, -1))
    assert torch.allclose(new_out[n_text:], old_out.mean(0).expand(43, -1))
    assert (new_in.data_ptr() == new_out.data_ptr()) == tie

    # a second call finds the tokens and changes nothing
    before = new_in.detach().clone()
    assert extend_vocab(model, tok, 40, text_chunk=13, speech_chunk=26) == spec
    assert len(tok) == n_text + 43 and torch.equal(model.get_input_embeddings().weight, before)


def test_extend_vocab_uses_padding_rows_a_model_already_has():
    """Qwen2 checkpoints pad the embedding matrix past the tokenizer: new tokens land in those rows."""
    tok = make_tokenizer()
    n_text = len(tok)
    model = make_model("qwen2", n_text + 64, tie=False)
    old = model.get_input_embeddings().weight.detach().clone()
    spec = extend_vocab(model, tok, 10)
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == n_text + 64  # no resize needed
    assert torch.equal(weight[:n_text], old[:n_text])
    assert torch.allclose(weight[n_text : n_text + 13], old[:n_text].mean(0).expand(13, -1))
    assert torch.equal(weight[n_text + 13 :], old[n_text + 13 :])  # padding rows left alone
    policy = InterleavedPolicy(model, tok, spec)
    assert not policy.grammar.allowed[0][n_text + 13 :].any()  # padding ids are never sampled


# ------------------------------------------------------------------------------------------------ prompts
def test_build_prompt_text_turns_use_the_chat_template(policy):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is two plus two?"}]
    rendered = policy.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert policy.build_prompt(messages) == policy.tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_build_prompt_audio_turns_become_speech_tokens(policy, tmp_path):
    import soundfile as sf

    spec, codec = policy.spec, ToyCodec()
    audio = np.linspace(-0.9, 0.9, 1000, dtype=np.float32)
    speech = [spec.speech_offset + t for t in codec.encode_audio(audio, 16000)]
    ids = policy.build_prompt([{"role": "user", "content": "<audio>what is this?"}], [(audio, 16000)])
    head = policy.tokenizer("<|im_start|>user\n", add_special_tokens=False)["input_ids"]
    tail = policy.tokenizer("what is this?<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert ids == head + [spec.boa_id, *speech, spec.eoa_id] + tail

    # list contents (HF multimodal parts) and audio files give the same ids
    path = tmp_path / "q.wav"
    sf.write(path, audio, 16000, subtype="FLOAT")
    parts = [{"type": "audio"}, {"type": "text", "text": "what is this?"}]
    assert policy.build_prompt([{"role": "user", "content": parts}], [path]) == ids


def test_build_prompt_audio_errors(policy):
    audio = (np.zeros(800, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="1 <audio> placeholders in the messages, 0 audios"):
        policy.build_prompt([{"role": "user", "content": "<audio>hi"}])
    text_only = InterleavedPolicy(policy.model, policy.tokenizer, policy.spec, TextOnlyCodec())
    with pytest.raises(ValueError, match="cannot encode audio.*transcript"):
        text_only.build_prompt([{"role": "user", "content": "<audio>"}], [audio])
    no_codec = InterleavedPolicy(policy.model, policy.tokenizer, policy.spec)
    with pytest.raises(ValueError, match="no codec"):
        no_codec.build_prompt([{"role": "user", "content": "<audio>"}], [audio])
    with pytest.raises(ValueError, match="no codec"):
        no_codec.decode_speech([1, 2])


# ------------------------------------------------------------------------------------------------ grammar, layout
def test_layout_by_hand():
    policy = make_policy(text_chunk=2, speech_chunk=3)
    spec = policy.spec
    a, b, c, d, e = policy.tokenizer("a b c d e", add_special_tokens=False)["input_ids"][:5]
    B, E, TE, EOS = spec.boa_id, spec.eoa_id, spec.text_end_id, spec.eos_id
    s = [spec.speech_offset + i for i in range(8)]
    # text ends first: the speech finishes alone after TEND
    assert policy.layout([a, b, c], range(7)) == [a, b, B, *s[:3], c, TE, B, *s[3:7], E, EOS]
    # speech ends first: the text finishes alone after EOA
    assert policy.layout([a, b, c, d, e], [0]) == [a, b, B, s[0], E, c, d, e, TE, EOS]
    # exact multiples still close each channel with its marker
    assert policy.layout([a, b], range(3)) == [a, b, B, *s[:3], TE, B, E, EOS]
    assert policy.layout([], []) == [TE, B, E, EOS]
    with pytest.raises(ValueError, match="not text tokens"):
        policy.layout([a, spec.boa_id], [])
    with pytest.raises(ValueError, match="out of range"):
        policy.layout([a], [256])


def test_grammar_rejects_illegal_sequences():
    policy = make_policy(text_chunk=2, speech_chunk=3)
    spec, grammar = policy.spec, policy.grammar
    a = policy.tokenizer("a", add_special_tokens=False)["input_ids"][0]
    s0 = spec.speech_offset
    good = policy.layout([a, a, a], [0, 1, 2, 3])
    grammar.check(good, finished=True)
    grammar.check(good[:5], finished=False)
    with pytest.raises(ValueError, match="position 2"):
        grammar.check([a, a, a])  # BOA must follow a full text chunk
    with pytest.raises(ValueError, match="position 0"):
        grammar.check([spec.eos_id])  # no EOS before both channels ended
    with pytest.raises(ValueError, match="position 0"):
        grammar.check([s0])  # speech cannot open the answer
    with pytest.raises(ValueError, match="position 1"):
        grammar.check([a, policy.tokenizer.convert_tokens_to_ids("<|im_start|>")])  # special ids are not text
    with pytest.raises(ValueError, match="after EOS"):
        grammar.check([*good, a])
    with pytest.raises(ValueError, match="finished=True"):
        grammar.check(good[:-1], finished=True)


def test_random_sentences_are_the_layout_of_their_own_channels():
    """Every sentence of the grammar = layout(its text, its speech): sft_target and sampling agree on the pattern."""
    rng = random.Random(0)
    for k, m in [(1, 1), (2, 3), (3, 5), (13, 26)]:
        policy = make_policy(text_chunk=k, speech_chunk=m)
        for _ in range(60):
            sentence = random_sentence(policy, rng, end_prob=0.3 if k == 13 else 0.15)
            policy.grammar.check(sentence, finished=True)
            assert policy.layout(*policy.split(sentence)) == sentence


def test_sft_target(policy):
    prompt = ask(policy, "what is two plus two?")
    codec = ToyCodec()
    target = policy.sft_target(prompt, "the answer is four.")  # speech from the codec
    assert target.prompt_ids == prompt and target.finished
    assert target.text == "the answer is four."
    assert target.speech_tokens == codec.encode_text("the answer is four.")
    policy.grammar.check(target.completion_ids, finished=True)
    assert target.channels == [policy.spec.channel(t) for t in target.completion_ids]
    assert target.count(SPEECH) == len(target.speech_tokens)
    explicit = policy.sft_target(prompt, "four.", [1, 2, 3])
    assert explicit.speech_tokens == [1, 2, 3] and explicit.text == "four."
    with pytest.raises(ValueError, match="not text tokens"):
        policy.sft_target(prompt, "four<|im_end|>", [1])
    audio, rate = policy.decode_speech(target.speech_tokens)
    assert audio.dtype == np.float32 and rate == 8000 and len(audio) == 80 * len(target.speech_tokens)


def test_logits_processor_masks_follow_the_grammar():
    policy = make_policy(text_chunk=2, speech_chunk=3)
    grammar = policy.grammar
    sentence = random_sentence(policy, random.Random(1))
    processor = InterleaveLogitsProcessor(grammar)
    prompt = torch.tensor([[5, 6, 7]])
    state = grammar.start()
    for i in range(len(sentence) + 1):
        ids = torch.cat([prompt, torch.tensor([sentence[:i]], dtype=torch.long)], dim=1)
        scores = processor(ids, torch.zeros(1, grammar.vocab_size))
        assert torch.equal(scores[0] > float("-inf"), grammar.allowed[state[0]])
        if i < len(sentence):
            state = grammar.advance(state, sentence[i])


# ------------------------------------------------------------------------------------------------ generation
def test_generate_obeys_the_grammar(policy):
    prompts = [ask(policy, "what is two plus two?"), ask(policy, "say hello.")]
    groups = policy.generate(prompts, 3, temperature=1.0, top_p=0.95, max_new_tokens=40, seed=0)
    assert [len(g) for g in groups] == [3, 3]
    for prompt, group in zip(prompts, groups):
        for traj in group:
            assert traj.prompt_ids == prompt
            policy.grammar.check(traj.completion_ids, finished=traj.finished)
            assert traj.channels == [policy.spec.channel(t) for t in traj.completion_ids]
            spec = policy.spec
            for token, channel in zip(traj.completion_ids, traj.channels):
                if spec.speech_offset <= token < spec.speech_offset + spec.speech_vocab_size:
                    assert channel == SPEECH
                elif token in (spec.boa_id, spec.eoa_id):
                    assert channel == BOUNDARY
                else:
                    assert channel == TEXT
            assert traj.speech_tokens == [t - spec.speech_offset for t in traj.completion_ids if spec.is_speech(t)]
            assert len(traj.completion_ids) == 40 or traj.finished
    # the random model's first 3 tokens are text, then BOA, then 5 speech tokens
    first = groups[0][0]
    assert first.channels[:9] == [TEXT] * 3 + [BOUNDARY] + [SPEECH] * 5


def test_generate_glm_ratio():
    """GLM-4-Voice's 13 text : 26 speech: until a channel ends, the stream is T*13 BOA S*26 T*13 BOA S*26 ..."""
    policy = make_policy("qwen2", text_chunk=13, speech_chunk=26)
    spec = policy.spec
    pattern = ([TEXT] * 13 + [BOUNDARY] + [SPEECH] * 26) * 3
    groups = policy.generate([ask(policy, "hello")], 4, temperature=1.0, max_new_tokens=100, seed=3)
    for traj in groups[0]:
        policy.grammar.check(traj.completion_ids, finished=traj.finished)
        ends = [i for i, t in enumerate(traj.completion_ids) if t in (spec.text_end_id, spec.eoa_id)]
        before_end = ends[0] if ends else len(traj.completion_ids)
        assert before_end > 40  # a random model rarely picks 1 of ~300 ids: the pattern is exercised
        assert traj.channels[:before_end] == pattern[:before_end]


def test_seeded_generation_is_reproducible_and_leaves_the_global_rng(policy):
    prompts = [ask(policy, "what is two plus two?")]
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = policy.generate(prompts, 4, temperature=1.0, max_new_tokens=30, seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    b = policy.generate(prompts, 4, temperature=1.0, max_new_tokens=30, seed=7)
    c = policy.generate(prompts, 4, temperature=1.0, max_new_tokens=30, seed=8)
    ids = lambda groups: [t.completion_ids for g in groups for t in g]  # noqa: E731
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)
    assert len(set(map(tuple, ids(a)))) > 1  # the 4 rollouts of one prompt differ
    # batching does not change the draw's validity (rows are independent samples)
    [chunked] = policy.generate(prompts, 4, temperature=1.0, max_new_tokens=30, seed=7, batch_size=2)
    assert len(chunked) == 4
    for traj in chunked:
        policy.grammar.check(traj.completion_ids, finished=traj.finished)


# ------------------------------------------------------------------------------------------------ log-probs
def manual_logprobs(model, traj: Trajectory, temperature: float = 1.0) -> torch.Tensor:
    ids = torch.tensor([traj.prompt_ids + traj.completion_ids])
    logits = model(input_ids=ids).logits[0].float() / temperature
    p = len(traj.prompt_ids)
    steps = logits[p - 1 : p - 1 + len(traj.completion_ids)].log_softmax(-1)
    return steps.gather(-1, torch.tensor(traj.completion_ids)[:, None]).squeeze(-1)


def test_logprobs_match_a_manual_gather_and_are_differentiable(policy):
    prompts = [ask(policy, "what is two plus two?"), ask(policy, "hi")]  # different prompt lengths
    trajs = [t for g in policy.generate(prompts, 2, temperature=1.0, max_new_tokens=25, seed=1) for t in g]
    trajs.append(policy.sft_target(prompts[1], "four.", [1, 2]))  # a short one: padding on the right
    logp, mask, channels = policy.logprobs(trajs)
    longest = max(len(t.completion_ids) for t in trajs)
    assert logp.shape == mask.shape == channels.shape == (len(trajs), longest)
    assert logp.dtype == torch.float32 and mask.dtype == torch.bool and channels.dtype == torch.long
    for i, traj in enumerate(trajs):
        n = len(traj.completion_ids)
        assert mask[i, :n].all() and not mask[i, n:].any()
        assert channels[i, :n].tolist() == traj.channels and (channels[i, n:] == PAD_CHANNEL).all()
        assert torch.allclose(logp[i, :n], manual_logprobs(policy.model, traj), atol=1e-5)
        assert (logp[i, n:] == 0).all()
    hot, _, _ = policy.logprobs(trajs[:1], temperature=0.7)
    n = len(trajs[0].completion_ids)
    assert torch.allclose(hot[0, :n], manual_logprobs(policy.model, trajs[0], temperature=0.7), atol=1e-5)

    policy.model.zero_grad()
    loss = -(logp * mask).sum() / mask.sum()
    loss.backward()
    grads = [p.grad for p in policy.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert policy.model.get_input_embeddings().weight.grad.abs().sum() > 0
    policy.model.zero_grad()


def test_sft_then_greedy_generation_reproduces_the_target():
    """End to end: SFT through `logprobs` teaches the layout; greedy sampling then emits exactly the target."""
    policy = make_policy("llama", text_chunk=3, speech_chunk=4)
    prompt = ask(policy, "what is two plus two?")
    target = policy.sft_target(prompt, "the answer is four.", ToyCodec().encode_text("four"))
    policy.model.train()
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=1e-2)
    for _ in range(60):
        logp, mask, _ = policy.logprobs([target])
        loss = -(logp * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    [[greedy]] = policy.generate([prompt], 1, temperature=0, max_new_tokens=60)
    assert greedy.completion_ids == target.completion_ids
    assert greedy.finished and greedy.text == "the answer is four." and greedy.speech_tokens == target.speech_tokens
    assert policy.model.training  # generate restores the training flag
    # left padding in a batch with a longer prompt changes nothing
    longer = ask(policy, "convert three kilometres to metres, and say hello in a cheerful voice.")
    [[padded], _] = policy.generate([prompt, longer], 1, temperature=0, max_new_tokens=60)
    assert len(longer) > len(prompt) and padded.completion_ids == target.completion_ids
    # sampled rollouts of the trained model finish, and each is the layout of its own channels
    sampled = policy.generate([prompt], 8, temperature=1.5, top_p=1.0, max_new_tokens=60, seed=0)[0]
    finished = [t for t in sampled if t.finished]
    assert finished
    for traj in finished:
        assert policy.layout(*policy.split(traj.completion_ids)) == traj.completion_ids
