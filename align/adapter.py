"""An align policy as a `wavalign eval` model: evaluate a checkpoint with the same scorers it was trained on.

    wavalign eval --benchmark align-heldout --model policy \
        --model-arg checkpoint=runs/reference-wavalign/checkpoint/trainer.pt

The policy answers in both channels at once: its text channel is the response text, its speech tokens are decoded
to the response audio. A spoken question reaches the policy as the ASR front-end's transcript (``hear="asr"``,
the packaged whisper tiny.en) or, for a codec that tokenizes audio, as speech tokens in the prompt
(``hear="audio"``); a text question goes in as text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from align.policy import SPEECH
from evalsuite.adapters import Request, Response, Turn, request_audio
from rewards.audio import AudioError
from rewards.base import one_line

_ASR_RATE = 16_000
HEAR = ("asr", "audio")


class PolicyAdapter:
    """Answers benchmark requests with an align policy (``tiny``, ``reference`` or ``module:factory``)."""

    def __init__(self, policy: str = "reference", checkpoint: str | None = None, *, name: str | None = None,
                 temperature: float = 0.0, top_p: float = 0.9, max_new_tokens: int = 96, seed: int = 0,
                 batch_size: int = 8, threads: int = 0, hear: str | None = None, system_prompt: bool = False,
                 data: str | None = None, **policy_args: Any):
        """
        Args:
            policy: the policy factory, as in an align config's ``policy``.
            checkpoint: an align run's ``checkpoint/trainer.pt`` (its weights are loaded; None: the untrained policy).
            name: the model's name in results and leaderboards (default: the policy and checkpoint folder).
            temperature: 0 = greedy (the default: one reproducible answer per item).
            hear: how a spoken question reaches the policy: ``audio`` (policies that hear audio) or ``asr`` (the
                transcript of the packaged whisper tiny.en); None: ``audio`` when the policy hears audio, else ``asr``.
            system_prompt: pass the benchmark's system prompt to the policy (False: the user turn only, as the
                align training prompts are built).
            data: the training prompts, for a policy built from its data (``tiny`` builds its vocabulary from them).
            policy_args: more keyword arguments of the policy factory (e.g. ``text_chunk``).
        """
        if hear is not None and hear not in HEAR:
            raise ValueError(f"hear must be one of {HEAR}, got {hear!r}")
        self.policy_name, self.checkpoint = policy, checkpoint
        self.policy_args = policy_args
        self.generation = {"temperature": float(temperature), "top_p": float(top_p),
                           "max_new_tokens": int(max_new_tokens), "seed": int(seed)}
        self.batch_size, self.threads, self.hear = int(batch_size), int(threads), hear
        self.use_system_prompt = bool(system_prompt)
        self.data = data
        self.name = name or _default_name(policy, checkpoint)
        self._policy: Any = None
        self._asr: Any = None

    def prepare(self) -> None:
        if self._policy is not None:
            return
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        from align.data import read_examples
        from align.policy import load_weights
        from align.train import AlignConfig, build_policy

        examples = read_examples(self.data)[0] if self.data else []
        self._policy = build_policy(AlignConfig(policy=self.policy_name, policy_args=self.policy_args), examples)
        if self.checkpoint:
            load_weights(self._policy.model, self.checkpoint)
        if self.hear is None:
            self.hear = "audio" if getattr(self._policy, "hears_audio", False) else "asr"

    @property
    def speaks(self) -> bool:
        """A policy answers in speech (unless it says ``speaks = False``): an answer without audio is its failure."""
        return bool(getattr(self._policy, "speaks", True))

    def info(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"policy": self.policy_name, "checkpoint": self.checkpoint,
                                    "policy_args": self.policy_args, **self.generation,
                                    "hear": self.hear, "system_prompt": self.use_system_prompt, "data": self.data}
        if self._policy is not None:
            settings["policy_info"] = self._policy.info()
        return settings

    def respond(self, requests: Sequence[Request]) -> list[Response]:
        self.prepare()
        responses = [Response(meta={"seconds": {}}) for _ in requests]
        prompts: list[list[int] | None] = [self._prompt(r, resp) for r, resp in zip(requests, responses)]
        todo = [i for i, p in enumerate(prompts) if p is not None]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            begin = time.perf_counter()
            groups = self._policy.generate([prompts[i] for i in chunk], 1, batch_size=self.batch_size,
                                           **self.generation)
            seconds = (time.perf_counter() - begin) / len(chunk)
            for i, (traj,) in zip(chunk, groups):
                self._answer(traj, responses[i], seconds)
        return responses

    # -- one request --------------------------------------------------------------------------------------
    def _prompt(self, request: Request, response: Response) -> Any:
        """The policy's prompt of a request: its earlier turns, then the question (None and an error when unusable).

        A spoken user turn goes in as audio when the policy hears audio (``hear="audio"``), else as the ASR
        front-end's transcript; an assistant turn as its text, else the transcript of its audio.
        """
        messages: list[dict[str, Any]] = []
        audios: list[tuple[np.ndarray, int]] = []
        if self.use_system_prompt and request.system_prompt:
            messages.append({"role": "system", "content": request.system_prompt})
        try:
            if request.audio is None and not (request.text or "").strip():
                raise ValueError("the request has neither audio nor text")
            current = Turn("user", request.text, request.audio, request.sample_rate)
            for k, turn in enumerate((*request.history, current)):
                last = k == len(request.history)
                content, source = self._turn_content(turn, audios)
                if last:
                    response.meta["question_source"] = source
                    if source == "asr":
                        response.meta["transcript"] = content
                if not content.strip():
                    where = "question" if last else f"turn {k + 1}"
                    raise ValueError(f"the ASR front-end heard no words in the {where} audio" if source == "asr"
                                     else f"the {where} is empty")
                messages.append({"role": turn.role, "content": content.strip() if source != "audio" else content})
            if request.history:
                response.meta["history_turns"] = len(request.history)
            return self._policy.build_prompt(messages, audios) if audios else self._policy.build_prompt(messages)
        except (AudioError, ValueError) as e:
            response.error = f"question: {one_line(e)}"
            return None

    def _turn_content(self, turn: Turn, audios: list) -> tuple[str, str]:
        """(message content, how it was made: text | audio | asr) of one turn; audio turns append to ``audios``."""
        if turn.audio is None or (turn.role == "assistant" and (turn.text or "").strip()):
            return turn.text or "", "text"
        audio = request_audio(turn, _ASR_RATE)
        if turn.role == "user" and self.hear == "audio":
            audios.append((audio, _ASR_RATE))
            return "<audio>", "audio"
        return self._transcribe(audio), "asr"

    def _transcribe(self, audio: np.ndarray) -> str:
        if self._asr is None:
            from rewards.asr import AsrScorer

            self._asr = AsrScorer()
            self._asr.prepare()
        return self._asr.transcribe([audio], ["en"])[0].text or ""

    def _answer(self, traj: Any, response: Response, seconds: float) -> None:
        response.text = traj.text.strip()
        response.meta["seconds"]["generate"] = round(seconds, 4)
        response.meta.update(finished=bool(traj.finished), speech_tokens=traj.count(SPEECH),
                             completion_tokens=len(traj.completion_ids))
        if not traj.count(SPEECH):
            return  # a text-only answer: scorers that listen record that there is no audio
        try:
            audio, rate = self._policy.decode_speech(traj.speech_tokens)
        except Exception as e:  # noqa: BLE001 - one undecodable answer must not sink the batch
            response.meta["decode_error"] = one_line(e)
            return
        if len(audio):
            response.audio, response.sample_rate = np.asarray(audio, dtype=np.float32), int(rate)


def _default_name(policy: str, checkpoint: str | None) -> str:
    if not checkpoint:
        return f"{policy}-untrained"
    from pathlib import Path

    path = Path(checkpoint)
    run = path.parent.parent.name if path.parent.name == "checkpoint" else path.stem
    return f"{policy}-{run}"


__all__ = ["HEAR", "PolicyAdapter"]
