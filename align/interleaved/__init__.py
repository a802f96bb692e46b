"""The interleaved single-stream family: one causal LM writes text and speech tokens in one sequence.

- `align.interleaved.policy`: `InterleavedPolicy` (any Hugging Face causal LM + an `InterleaveSpec`), the grammar,
  `extend_vocab` (adds speech tokens to a text LM);
- `align.interleaved.native`: checkpoints whose vocabulary already has speech tokens (GLM-4-Voice, VITA-Audio,
  Step-Audio 2): the layout read from the tokenizer, the model's own interleave pattern, a codec by import path;
- `align.interleaved.tiny`: the ``tiny`` policy (random LlamaForCausalLM + tone codec) for smoke runs;
- `align.interleaved.reference`: the ``reference`` policy (SmolLM2-135M-Instruct + Piper phoneme speech tokens).
"""

from align.interleaved.policy import (
    AUDIO_PLACEHOLDER,
    DONE,
    InterleavedPolicy,
    InterleaveGrammar,
    InterleaveLogitsProcessor,
    InterleaveSpec,
    extend_vocab,
)

__all__ = ["AUDIO_PLACEHOLDER", "DONE", "InterleaveGrammar", "InterleaveLogitsProcessor", "InterleaveSpec",
           "InterleavedPolicy", "extend_vocab"]
