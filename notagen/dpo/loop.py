"""`notagen dpo RECIPE.yaml key=value…`: CLaMP-DPO iterations.

Iteration k starts from checkpoint k (the recipe's `init_checkpoint` for k = 0, else `iter_{k-1}/checkpoint`) and
writes, in `output_dir/iter_k/`:

1. `samples/`: `samples_per_prompt` pieces per prompt, each as `<name>.raw.abc` (the model's text: prompt lines,
   `[r:]`, reduced rests), `<name>.interleaved.abc` (rest-unreduced; absent when that fails) and `<name>.json`
   (prompt, seed, stop reason, validity; the score is added after scoring). The JSON is written last, so a sample
   whose JSON exists is complete and is never regenerated.
2. `scores.json` (+ `features.npy`): per sample the cosine to its prompt's reference centroid (global centroid when
   the prompt has no reference pieces), the largest cosine to a single reference piece, the memorisation run,
   the instrument-grouping check and the validity.
3. `eval.json`: ACS (mean, per prompt), validity rate, BAE, label accuracy of linear probes trained on the
   reference features (when the reference has two classes or more), memorised share.
4. `preferences.json`: per prompt the chosen/rejected pieces and every candidate's status (`notagen.dpo.preferences`).
5. `train_state.pt`, `metrics.jsonl`, `checkpoint/`: DPOP training. The policy starts from checkpoint k; the
   reference model is a frozen copy in `eval()` under `no_grad` (the reference implementation left its dropout
   on). Each step draws, per pair of the global batch, a prompt and then one (chosen, rejected) pair of it; both
   pieces are cropped once (seeded) and the same tensors go through the policy and the reference. The new
   checkpoint is the next iteration's sampler and reference.

With `final_eval`, `iter_K/` holds the samples, scores and eval of the final model. `report.json` / `report.md`
give one row per iteration. Every step resumes: finished files are reused and training continues from its state
file. Under torchrun, sampling is split over the processes, scoring runs on rank 0, training uses DDP.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from notagen import __version__
from notagen.abc.text import ACCIDENTALS_DIRECTIVE
from notagen.checkpoint import load_checkpoint, save_checkpoint
from notagen.dpo.loss import dpop_loss
from notagen.dpo.preferences import (
    PreferenceFilters,
    PromptPreferences,
    calibrate_plagiarism_cosine,
    instrument_grouping_problem,
    sample_problem,
    select_preferences,
)
from notagen.dpo.recipe import DPOConfig, dump_dpo_recipe, keys_help, load_dpo_recipe
from notagen.errors import ConfigError, InputError
from notagen.formats import INTERLEAVED_ABC, RAW_ABC
from notagen.io import append_jsonl, atomic_write_json, atomic_write_text, content_hash
from notagen.metrics.evaluate import format_mean, is_missing
from notagen.metrics.evaluate import format_value as _cell
from notagen.metrics.scores import acs, nearest_cosine, standard_error
from notagen.metrics.theory import METRICS, analyse_text, theory_reward
from notagen.metrics.theory_report import summarise
from notagen.patchilizer import Patchilizer
from notagen.prompt import Prompt, prompt_key, resolve_prompt
from notagen.train.core import (
    METRICS_FILE,
    STATE_FILE,
    GuardedStep,
    build_optimizer,
    collate,
    load_state,
    read_metrics,
    rng_state,
    save_state,
    seed_int,
    seeded,
    set_rng_state,
    setup_runtime,
    trainable,
    trim_metrics,
)
from notagen.weights import open_checkpoint

VALIDITY_FIELDS = ("valid", "parses", "error", "voices", "bars", "misaligned_bars", "bae", "format_problems")
# Recipe fields that define an iteration's samples, pairs and steps; a resumed run must not change them.
RUN_FIELDS = ("seed", "samples_per_prompt", "portion", "batch_size", "temperature", "top_k", "top_p")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: unreadable ({error})") from error


def scoring_text(interleaved: str | None, raw: str) -> str:
    """The text a sample is embedded from: rest-unreduced interleaved ABC without `X:` and the accidentals directive
    (reference pieces have neither); the raw text without `[r:]` when unreducing failed. Prompt lines are dropped by
    the extractor."""
    if interleaved is None:
        from notagen.metrics.evaluate import normalise_generated

        return normalise_generated(raw)
    return "".join(line for line in interleaved.splitlines(keepends=True)
                   if not line.startswith("X:") and line.strip() != ACCIDENTALS_DIRECTIVE)


class DPORun:
    """One CLaMP-DPO run: `DPORun(config).run()`; every step skips what is already on disk."""

    def __init__(self, config: DPOConfig) -> None:
        config.check_runnable()
        self.config = config
        self.rt = setup_runtime(config.device, batch_size=config.batch_size)
        self.run_dir = Path(config.output_dir)
        self.device = self.rt.device
        start = open_checkpoint(config.init_checkpoint)
        self.registry = start.prompts
        del start
        from notagen.encoder.corpus import is_dataset, load_pieces

        split = None if config.reference_split == "all" else config.reference_split
        self.reference_pieces = load_pieces(config.reference, split=split)
        if not self.reference_pieces:
            raise InputError(f"reference {config.reference} has no {config.reference_split} pieces")
        self.reference_keys = [prompt_key(p.labels) for p in self.reference_pieces]
        self.prompts = self._resolve_prompts()
        self.held_out_pieces: list[Any] = []
        if config.plagiarism_filter and config.plagiarism_cosine is None:
            self.held_out_pieces = (load_pieces(config.reference, split="eval")
                                    if config.reference_split == "train" and is_dataset(Path(config.reference))
                                    else [])
            if not self.held_out_pieces:
                raise ConfigError("plagiarism_cosine: null calibrates on the eval pieces of a dataset reference "
                                  f"with reference_split train; {config.reference} (split {config.reference_split}) "
                                  "has none: give a number")
        self._filters: PreferenceFilters | None = None
        self._encoder: Any = None
        self._reference_features: np.ndarray | None = None
        self._memorisation: Any = None
        self._probes: dict[str, Any] | None = None
        self.stop_at_step: int | None = None
        """Tests: leave training at this step without saving, as if the process had been killed."""
        if self.rt.main:
            self._write_run_file()
        self._barrier()

    # -- setup ---------------------------------------------------------------------------------------------------
    def _resolve_prompts(self) -> list[Prompt]:
        config = self.config
        counts = Counter(k for k in self.reference_keys if k is not None)
        if config.all_prompts:
            if not self.registry:
                raise ConfigError(f"{config.init_checkpoint} has no prompt registry: list the prompts "
                                  "(prompts: ['period | composer | instrumentation', …])")
            registry = [prompt for prompt in map(Prompt.of, self.registry) if prompt is not None]
            chosen = [p for p in registry if counts.get(str(p), 0) >= config.min_reference_pieces]
            if not chosen:
                raise ConfigError(f"no registry prompt has {config.min_reference_pieces} or more reference pieces "
                                  f"in {config.reference}; lower min_reference_pieces or list the prompts")
            return chosen
        resolved = [resolve_prompt(*Prompt.parse(text).fields(), self.registry) for text in config.prompts]
        return [prompt for prompt in resolved if prompt is not None]  # never None: all three fields are given

    def _write_run_file(self) -> None:
        """run.json pins what defines the samples and pairs; a resumed run with other values is refused."""
        path = self.run_dir / "run.json"
        current = {"prompts": [p.to_dict() for p in self.prompts], **{k: getattr(self.config, k) for k in RUN_FIELDS},
                   "init_checkpoint": str(self.config.init_checkpoint)}
        if path.is_file():
            saved = _read_json(path)
            changed = [k for k in current if k in saved and saved[k] != current[k]]
            if changed:
                raise ConfigError(f"cannot resume {self.run_dir}: {', '.join(changed)} changed since the run "
                                  "started; use a new output_dir")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, current)
        atomic_write_text(self.run_dir / "recipe.yaml", dump_dpo_recipe(self.config))

    def _barrier(self) -> None:
        self.rt.barrier()

    def iter_dir(self, k: int) -> Path:
        return self.run_dir / f"iter_{k}"

    def checkpoint_of(self, k: int) -> str:
        """The checkpoint that samples in iteration k (and is its reference model)."""
        return self.config.init_checkpoint if k == 0 else str(self.iter_dir(k - 1) / "checkpoint")

    def sample_names(self) -> list[tuple[str, int, int]]:
        """(name, prompt index, sample index) of every sample of an iteration."""
        return [(f"p{j:02d}_{i:04d}", j, i) for j in range(len(self.prompts))
                for i in range(self.config.samples_per_prompt)]

    # -- 1. sampling ---------------------------------------------------------------------------------------------
    def sample(self, k: int) -> None:
        """Generate the samples of iteration k that are not on disk yet (this process's share of them)."""
        from tqdm.auto import tqdm

        from notagen.generation import GenerationEngine, GenerationLimits, PieceRequest, SamplingSettings
        from notagen.generation.postprocess import finish_text

        config = self.config
        folder = self.iter_dir(k) / "samples"
        todo = [(name, j, i) for n, (name, j, i) in enumerate(self.sample_names())
                if n % self.rt.world == self.rt.rank and not (folder / f"{name}.json").is_file()]
        if not todo:
            return
        checkpoint = load_checkpoint(self.checkpoint_of(k), device=self.device)
        engine = GenerationEngine(checkpoint.model, device=self.device)
        sampling = SamplingSettings(temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                                    strict=config.strict)
        limits = GenerationLimits(max_bars=config.max_bars, max_chars=config.max_chars,
                                  max_seconds=config.max_seconds)
        chunk = config.sample_batch_size * 4  # written after each chunk: an interruption loses at most one
        bar = tqdm(total=len(todo), unit="piece", desc=f"iter {k} sampling", dynamic_ncols=True,
                   disable=not (config.progress and self.rt.main))
        try:
            for start in range(0, len(todo), chunk):
                part = todo[start:start + chunk]
                requests = [PieceRequest(self.prompts[j].context(),
                                         seed_int(config.seed, "sample", k, str(self.prompts[j]), i)
                                         % (2 ** 31 - 1)) for _, j, i in part]
                pieces = engine.generate(requests, sampling, limits, batch_size=config.sample_batch_size)
                for (name, j, i), request, piece in zip(part, requests, pieces):
                    finished = finish_text(piece.text)
                    atomic_write_text(folder / f"{name}{RAW_ABC}", piece.text)
                    if finished.interleaved is not None:
                        atomic_write_text(folder / f"{name}{INTERLEAVED_ABC}", finished.interleaved)
                    validity = {f: finished.validity.get(f) for f in VALIDITY_FIELDS if f in finished.validity}
                    validity["error"] = finished.error
                    atomic_write_json(folder / f"{name}.json", {
                        "name": name, "iteration": k, "prompt": self.prompts[j].to_dict(), "prompt_key":
                        str(self.prompts[j]), "index": i, "seed": request.seed,
                        "checkpoint": self.checkpoint_of(k), "stop_reason": piece.stop_reason,
                        "chars": len(piece.generated), "bars": piece.bars, "seconds": round(piece.seconds, 3),
                        "valid": finished.valid, "validity": validity,
                    })
                    bar.update(1)
        finally:
            bar.close()
        del engine, checkpoint

    def read_samples(self, k: int) -> list[dict[str, Any]]:
        folder = self.iter_dir(k) / "samples"
        samples = []
        for name, _, _ in self.sample_names():
            path = folder / f"{name}.json"
            if not path.is_file():
                raise InputError(f"{path}: missing sample (sampling did not finish)")
            record = _read_json(path)
            record["raw"] = (folder / f"{name}{RAW_ABC}").read_text(encoding="utf-8")
            inter = folder / f"{name}{INTERLEAVED_ABC}"
            record["interleaved"] = inter.read_text(encoding="utf-8") if inter.is_file() else None
            samples.append(record)
        return samples

    # -- 2. scoring ----------------------------------------------------------------------------------------------
    def extractor(self) -> Any:
        if self._encoder is None:
            from notagen.encoder.loading import load_encoder

            loaded = load_encoder(self.config.encoder)
            self._encoder = loaded.extractor(batch_size=self.config.encoder_batch_size, device=str(self.device))
        return self._encoder

    def reference_features(self) -> np.ndarray:
        """Encoder features of the reference pieces, cached in the run folder per encoder and reference."""
        if self._reference_features is None:
            extractor = self.extractor()
            digest = content_hash("\n".join(p.id + ":" + content_hash(p.text) for p in self.reference_pieces))
            path = self.run_dir / "cache" / f"reference_{extractor.weights_id}_{digest}.npy"
            features = np.load(path) if path.is_file() else None
            if features is None or len(features) != len(self.reference_pieces):
                features = extractor.embed([p.text for p in self.reference_pieces])
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, features)
            self._reference_features = features
        return self._reference_features

    def memorisation_index(self) -> Any:
        if self._memorisation is None:
            from notagen.metrics.memorisation import MemorisationIndex

            self._memorisation = MemorisationIndex.build((p.id, p.text) for p in self.reference_pieces)
        return self._memorisation

    def score(self, k: int) -> dict[str, Any]:
        """scores.json of iteration k (reused when it covers the same samples)."""
        path = self.iter_dir(k) / "scores.json"
        names = [name for name, _, _ in self.sample_names()]
        if path.is_file() and (self.iter_dir(k) / "features.npy").is_file():
            scores = _read_json(path)
            theory_scored = self.config.theory_weight == 0 or all("theory_values" in s for s in scores["samples"])
            if [s["name"] for s in scores["samples"]] == names and theory_scored:
                return scores
        samples = self.read_samples(k)
        extractor = self.extractor()
        reference = self.reference_features()
        features = extractor.embed([scoring_text(s["interleaved"], s["raw"]) for s in samples])
        result = acs(features, [s["prompt_key"] for s in samples], reference, self.reference_keys)
        # The same nearest-reference cosine that calibrates the plagiarism limit (preferences.py).
        largest, nearest = nearest_cosine(features, reference)
        index = self.memorisation_index() if self.config.memorisation_bars > 0 else None
        entries = []
        for s, value, used, similarity, closest in zip(samples, result.scores, result.centroid_used, largest,
                                                       nearest):
            entry: dict[str, Any] = {
                "name": s["name"], "prompt": s["prompt_key"], "score": value, "centroid": used,
                "max_reference_cosine": float(similarity),
                "nearest_reference": self.reference_pieces[int(closest)].id,
                "valid": bool(s["valid"]), "error": s["validity"].get("error"),
                "bars": s["validity"].get("bars"), "misaligned_bars": s["validity"].get("misaligned_bars"),
                "parses": s["validity"].get("parses"), "stop_reason": s["stop_reason"],
                "grouping": instrument_grouping_problem(s["interleaved"] or s["raw"]),
                "memorised": False, "memorised_run": None,
            }
            if self.config.theory_weight > 0:
                analysed = analyse_text(scoring_text(s["interleaved"], s["raw"]),
                                        Prompt.parse(s["prompt_key"]).instrumentation)
                # every theory value (None when the piece could not be analysed): the reward's term and the
                # per-metric report are derived from them with the recipe's theory_terms
                entry["theory_values"] = analysed.get("values")
            if index is not None:
                try:
                    check = index.check(scoring_text(s["interleaved"], s["raw"]),
                                        threshold=self.config.memorisation_bars)
                    entry["memorised"] = check.flagged
                    entry["memorised_run"] = {"bars": check.longest.bars, "piece": check.longest.piece}
                except (ValueError, KeyError, IndexError) as error:  # an unparsable sample copies nothing
                    entry["memorised_run"] = {"bars": 0, "piece": None, "error": f"{type(error).__name__}: {error}"}
            entries.append(entry)
        scores = {"iteration": k, "checkpoint": self.checkpoint_of(k), "encoder": extractor.describe(),
                  "n": len(entries), "n_reference": len(reference), "acs": result.mean,
                  "per_prompt": result.per_prompt, "samples": entries}
        folder = self.iter_dir(k) / "samples"
        for entry in entries:  # the sample's own JSON carries its score too
            sample_path = folder / f"{entry['name']}.json"
            record = _read_json(sample_path)
            record["score"] = entry["score"]
            atomic_write_json(sample_path, record)
        np.save(self.iter_dir(k) / "features.npy", features)
        atomic_write_json(path, scores)  # last: its presence means the whole step is done
        return scores

    # -- 3. evaluation -------------------------------------------------------------------------------------------
    def probes(self) -> dict[str, Any]:
        """Linear probes (period, instrumentation) on the reference features; a reason instead when impossible."""
        if self._probes is None:
            from notagen.metrics.scores import LinearProbe

            features = self.reference_features()
            self._probes = {}
            for label in ("period", "instrumentation"):
                values = [p.labels.get(label) for p in self.reference_pieces]
                keep = [i for i, v in enumerate(values) if v]
                if len({values[i] for i in keep}) < 2:
                    self._probes[label] = "fewer than two labelled classes in the reference"
                    continue
                self._probes[label] = LinearProbe.fit(features[keep], [values[i] for i in keep])
        return self._probes

    def evaluate(self, k: int, scores: dict[str, Any]) -> dict[str, Any]:
        """eval.json of iteration k's samples (reused when present)."""
        path = self.iter_dir(k) / "eval.json"
        entries = scores["samples"]
        acs_se = standard_error([e["score"] for e in entries])
        if path.is_file():
            report = _read_json(path)
            stale = "theory_metrics" not in report and any("theory_values" in e for e in entries)
            if report.get("n") == scores["n"] and not stale:
                report.setdefault("acs_se", acs_se)  # eval.json written before standard errors were reported
                return report
        bars = sum(e["bars"] or 0 for e in entries)
        report: dict[str, Any] = {
            "iteration": k, "checkpoint": scores["checkpoint"], "n": scores["n"], "encoder": scores["encoder"],
            "acs": scores["acs"], "acs_se": acs_se,
            "acs_per_prompt": scores["per_prompt"],
            "valid_rate": sum(e["valid"] for e in entries) / len(entries),
            "parse_rate": sum(bool(e["parses"]) for e in entries) / len(entries),
            "bae": sum(e["misaligned_bars"] or 0 for e in entries) / bars if bars else None,
            "memorised_share": sum(e["memorised"] for e in entries) / len(entries),
            "stop_reasons": dict(Counter(e["stop_reason"] for e in entries)),
            "label_accuracy": {},
        }
        theory = [t for t in map(self.theory_term, entries) if t is not None]
        if theory:  # the theory term of the reward, on the pieces that could be analysed
            report["theory"] = sum(theory) / len(theory)
            report["theory_se"] = standard_error(theory)
            report["theory_n"] = len(theory)
            report["theory_metrics"] = theory_metric_summary(entries)
        features = np.load(self.iter_dir(k) / "features.npy")
        prompt_of = {str(p): p.to_dict() for p in self.prompts}
        for label, probe in self.probes().items():
            if isinstance(probe, str):
                report["label_accuracy"][label] = {"skipped": probe}
                continue
            truth = [prompt_of[e["prompt"]][label] for e in entries]
            report["label_accuracy"][label] = {"la": probe.accuracy(features, truth), "classes": probe.classes,
                                               "n_train": probe.n_train}
        atomic_write_json(path, report)
        return report

    # -- 4. preferences ------------------------------------------------------------------------------------------
    def preference_filters(self) -> PreferenceFilters:
        """The filters, with the plagiarism cosine calibrated on the held-out pieces when the recipe asks for it
        (computed once per run and kept in cache/, so a resumed run uses the same limit)."""
        if self._filters is None:
            config = self.config
            cosine = config.plagiarism_cosine
            if cosine is None and self.held_out_pieces:
                extractor = self.extractor()
                path = self.run_dir / "cache" / f"plagiarism_cosine_{extractor.weights_id}.json"
                if path.is_file():
                    cosine = float(_read_json(path)["plagiarism_cosine"])
                else:
                    held_out = extractor.embed([p.text for p in self.held_out_pieces])
                    cosine = calibrate_plagiarism_cosine(self.reference_features(), held_out)
                    atomic_write_json(path, {"plagiarism_cosine": cosine, "percentile": 95,
                                             "held_out": len(held_out)})
            self._filters = PreferenceFilters(config.alignment_filter, config.grouping_filter,
                                              config.plagiarism_filter, 1.0 if cosine is None else cosine)
        return self._filters

    def theory_term(self, entry: dict[str, Any]) -> float | None:
        """The theory term of a scored sample (the recipe's `theory_terms`); None when it was not analysed."""
        values = entry.get("theory_values")
        return theory_reward(values, self.config.theory_terms) if values else None

    def reward(self, entry: dict[str, Any]) -> float:
        """What pairs are chosen by: the encoder similarity, plus theory_weight × the theory term when scored."""
        if self.config.theory_weight == 0:
            return entry["score"]
        return entry["score"] + self.config.theory_weight * (self.theory_term(entry) or 0.0)

    def preferences(self, k: int, scores: dict[str, Any]) -> list[PromptPreferences]:
        """preferences.json of iteration k (reused when present)."""
        path = self.iter_dir(k) / "preferences.json"
        if path.is_file():
            return [PromptPreferences.from_dict(p) for p in _read_json(path)["prompts"]]
        selections = []
        filters = self.preference_filters()
        for prompt in self.prompts:
            key = str(prompt)
            entries = [e for e in scores["samples"] if e["prompt"] == key]
            selections.append(select_preferences(
                [(e["name"], self.reward(e)) for e in entries], self.config.portion,
                {e["name"]: sample_problem(e, filters) for e in entries}, prompt=key))
        atomic_write_json(path, {
            "iteration": k, "portion": self.config.portion, "filters": dataclasses.asdict(filters),
            "plagiarism_cosine_calibrated": self.config.plagiarism_cosine is None and self.config.plagiarism_filter,
            "pairs": sum(len(s.pairs) for s in selections), "prompts": [s.to_dict() for s in selections]})
        return selections

    # -- 5. training ---------------------------------------------------------------------------------------------
    def train(self, k: int, selections: list[PromptPreferences]) -> dict[str, Any]:
        """DPOP steps of iteration k from its state file; writes iter_k/checkpoint when done."""
        config, rt = self.config, self.rt
        folder = self.iter_dir(k)
        done = folder / "checkpoint" / "config.json"
        state_path = folder / STATE_FILE
        if done.is_file():
            return self._train_summary(k)
        pairs = {s.prompt: s.pairs for s in selections if s.pairs}
        start = load_checkpoint(self.checkpoint_of(k), device=self.device)
        policy = start.model.float()
        training = {"stage": "dpo", "iteration": k, "steps": config.steps_per_iteration, "pairs":
                    sum(map(len, pairs.values())), "start_checkpoint": self.checkpoint_of(k),
                    "recipe": config.to_dict(), "notagen_version": __version__,
                    # the start's own record (fine-tuning, earlier iterations): a DPO model keeps its history
                    "start_training": start.info.get("training", {})}
        if not pairs or config.steps_per_iteration == 0:
            if rt.main:
                training["note"] = "no preference pairs: the checkpoint is unchanged" if not pairs else "0 steps"
                save_checkpoint(folder / "checkpoint", policy, prompts=start.prompts, training=training)
            self._barrier()
            return self._train_summary(k)

        reference = copy.deepcopy(policy).eval()
        reference.requires_grad_(False)
        policy.patch_level_decoder.base.wte.weight.requires_grad_(False)  # unused placeholder (DDP needs grads)
        optimizer = build_optimizer(policy, config.lr, config.weight_decay)
        update = GuardedStep(optimizer, trainable(policy), config.grad_clip, what="DPO gradient")
        step = 0
        if state_path.is_file():
            state = load_state(state_path)
            policy.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            for group in optimizer.param_groups:  # the recipe is the source of truth for the step size
                group["lr"] = config.lr
            step, update.skipped = int(state["step"]), int(state.get("skipped", 0))
            set_rng_state(state["rng"])
        module = rt.wrap(policy)
        policy.train(config.policy_dropout)
        patchilizer = Patchilizer(patch_size=policy.config.patch_size, patch_length=policy.config.patch_length)
        raw = {name: (folder / "samples" / f"{name}{RAW_ABC}").read_text(encoding="utf-8")
               for plist in pairs.values() for pair in plist for name in pair}
        prompt_order = sorted(pairs)

        def write_state() -> None:
            if rt.main:
                save_state(state_path, {"step": step, "skipped": update.skipped,
                                        "model": {n: t.detach().cpu() for n, t in policy.state_dict().items()},
                                        "optimizer": optimizer.state_dict(), "rng": rng_state(),
                                        "recipe": config.to_dict()})

        if rt.main:
            trim_metrics(folder / METRICS_FILE, step)
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps_per_iteration, initial=step, unit="step", desc=f"iter {k} DPO",
                   dynamic_ncols=True, disable=not (config.progress and rt.main))
        window: list[dict[str, float]] = []
        try:
            while step < config.steps_per_iteration:
                if self.stop_at_step is not None and step >= self.stop_at_step:  # a simulated kill: no save
                    return {"interrupted_at": step}
                draws = range(rt.rank, config.batch_size, rt.world)
                sequences = []
                for draw in draws:
                    rng = seeded(config.seed, "pair", k, step, draw)
                    chosen, rejected = rng.choice(pairs[rng.choice(prompt_order)])
                    sequences.append(patchilizer.encode_train(raw[chosen], seeded(config.seed, "crop", k, step,
                                                                                  draw, "chosen")))
                    sequences.append(patchilizer.encode_train(raw[rejected], seeded(config.seed, "crop", k, step,
                                                                                    draw, "rejected")))
                patches, masks = collate(sequences, patchilizer.patch_size)
                patches, masks = patches.to(self.device), masks.to(self.device)
                torch.manual_seed(seed_int(config.seed, "dropout", k, step, rt.rank))
                policy_logps = -module(patches, masks, reduction="sequence")
                with torch.no_grad():
                    ref_logps = -reference(patches, masks, reduction="sequence")
                loss, metrics = dpop_loss(policy_logps[0::2], policy_logps[1::2], ref_logps[0::2],
                                          ref_logps[1::2], config.beta, config.lam)
                loss.backward()
                grad_norm = update(step, finite_loss=math.isfinite(metrics["loss"]))
                step += 1
                if rt.distributed:  # every process holds as many pairs: the mean of the means is the global mean
                    names = sorted(metrics)
                    values = torch.tensor([metrics[n] for n in names], dtype=torch.float64, device=self.device)
                    dist.all_reduce(values)
                    metrics = dict(zip(names, (values / rt.world).tolist()))
                metrics["grad_norm"] = float(grad_norm)
                window.append(metrics)
                bar.update(1)
                if step % config.log_every == 0 or step == config.steps_per_iteration:
                    record = {"step": step, **{key: float(np.mean([w[key] for w in window])) for key in window[0]}}
                    if rt.main:
                        append_jsonl(folder / METRICS_FILE, record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", margin=f"{record['margin']:.3f}")
                    window = []
                if step % config.save_every == 0 and step < config.steps_per_iteration:
                    write_state()
        finally:
            bar.close()
        if rt.main:
            training["skipped_steps"] = update.skipped
            save_checkpoint(folder / "checkpoint", policy, prompts=start.prompts, training=training)
            write_state()  # after the checkpoint: the state file then describes a finished iteration
        self._barrier()
        return self._train_summary(k)

    def _train_summary(self, k: int) -> dict[str, Any]:
        rows = read_metrics(self.iter_dir(k) / METRICS_FILE)
        summary: dict[str, Any] = {"steps": rows[-1]["step"] if rows else 0}
        if rows:
            summary.update(first_loss=rows[0]["loss"], last_loss=rows[-1]["loss"], first_margin=rows[0]["margin"],
                           last_margin=rows[-1]["margin"], last_accuracy=rows[-1]["accuracy"])
        return summary

    # -- the run -------------------------------------------------------------------------------------------------
    def iteration(self, k: int, train: bool = True) -> dict[str, Any]:
        """Sample, score, evaluate and (when `train`) select pairs and train; returns the report row."""
        started = time.perf_counter()
        self.sample(k)
        self._barrier()
        selections: list[PromptPreferences] = []
        row: dict[str, Any] = {"iteration": k, "checkpoint": self.checkpoint_of(k)}
        if self.rt.main:
            scores = self.score(k)
            report = self.evaluate(k, scores)
            row.update({key: report[key] for key in ("n", "acs", "acs_se", "valid_rate", "bae", "memorised_share")})
            row.update({key: report[key] for key in ("theory", "theory_se", "theory_n", "theory_metrics")
                        if key in report})
            row["acs_per_prompt"] = {p: v["mean"] for p, v in report["acs_per_prompt"].items()}
            row["acs_se_per_prompt"] = {p: v.get("se") for p, v in report["acs_per_prompt"].items()}
            for label, entry in report["label_accuracy"].items():
                row[f"la_{label}"] = entry.get("la")
            if train:
                selections = self.preferences(k, scores)
        self._barrier()
        if train:
            if not self.rt.main:
                selections = [PromptPreferences.from_dict(p)
                              for p in _read_json(self.iter_dir(k) / "preferences.json")["prompts"]]
            row["pairs"] = sum(len(s.pairs) for s in selections)
            row["chosen"] = sum(len(s.chosen) for s in selections)
            row["rejected"] = sum(len(s.rejected) for s in selections)
            row["training"] = self.train(k, selections)
        row["seconds"] = round(time.perf_counter() - started, 1)
        return row

    def run(self) -> dict[str, Any]:
        rows = [self.iteration(k) for k in range(self.config.iterations)]
        if self.config.final_eval:
            rows.append(self.iteration(self.config.iterations, train=False))
        report = {"output_dir": str(self.run_dir), "prompts": [str(p) for p in self.prompts],
                  "samples_per_prompt": self.config.samples_per_prompt, "encoder": None, "rows": rows,
                  "final_checkpoint": str(self.iter_dir(self.config.iterations - 1) / "checkpoint")}
        if self.rt.main:
            report["encoder"] = self.extractor().describe()
            atomic_write_json(self.run_dir / "report.json", report)
            atomic_write_text(self.run_dir / "report.md", report_markdown(report))
        return report

    def close(self) -> None:
        self.rt.close()


REPORTED_THEORY = ("tonic_ending", "beat_triads", "parallel_fifths", "parallel_octaves", "whole_bar_rests",
                   "out_of_range_pieces", "instrumentation_fit")
"""The music-theory metrics a DPO report follows per iteration (the terms of `theory_reward`)."""


def theory_metric_summary(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean, standard error and N of each reported theory metric over the samples that have a value (the theory
    report's own summary)."""
    metrics = summarise([{"values": e["theory_values"], "detail": {}} for e in entries
                         if e.get("theory_values")]).metrics
    return {metric: metrics[metric] for metric in REPORTED_THEORY}


def acs_change(first: dict[str, Any], last: dict[str, Any]) -> tuple[float, float] | None:
    """(ACS of `last` − ACS of `first`, standard error of that difference); the two rows' samples are independent.

    None when a row has no ACS or no standard error. At a few dozen samples per prompt the error is often as large
    as what one iteration changes, so the report says whether a change exceeds twice its error.
    """
    if any(is_missing(row.get(key)) for row in (first, last) for key in ("acs", "acs_se")):
        return None
    return last["acs"] - first["acs"], math.hypot(first["acs_se"], last["acs_se"])


def describe_change(change: tuple[float, float] | None) -> str:
    """"+0.012 ± 0.005" and whether that is more than twice the standard error."""
    if change is None:
        return "–"
    delta, error = change
    verdict = "measurable" if abs(delta) > 2 * error else "within noise"
    return f"{delta:+.3f} ± {error:.3f} ({verdict})"


def report_markdown(report: dict[str, Any]) -> str:
    """report.md: one row per iteration (K = the model after K DPO iterations)."""
    encoder = report.get("encoder") or {}
    lines = ["# CLaMP-DPO run", "", f"Run: `{report['output_dir']}`; {report['samples_per_prompt']} samples per "
             f"prompt; encoder {encoder.get('encoder', '?')} (weights {encoder.get('weights', '?')}).", "",
             "ACS is given ± its standard error; the change is against K = 0 (fresh, independent samples), called "
             "measurable when it exceeds twice its error.", "",
             "| K | N | ACS | ACS change | valid | BAE | LA period | LA instr. | memorised | pairs | "
             "DPO loss first → last | margin last |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    first = report["rows"][0] if report["rows"] else {}
    for row in report["rows"]:
        training = row.get("training") or {}
        loss = (f"{_cell(training.get('first_loss'))} → {_cell(training.get('last_loss'))}"
                if "first_loss" in training else "–")
        change = describe_change(acs_change(first, row)) if row is not first else "–"
        lines.append(f"| {row['iteration']} | {_cell(row.get('n'))} | {format_mean(row.get('acs'), row.get('acs_se'))} "
                     f"| {change} | "
                     f"{_cell(row.get('valid_rate'), 2)} | {_cell(row.get('bae'))} | {_cell(row.get('la_period'), 2)} "
                     f"| {_cell(row.get('la_instrumentation'), 2)} | {_cell(row.get('memorised_share'), 2)} | "
                     f"{_cell(row.get('pairs'))} | {loss} | {_cell(training.get('last_margin'))} |")
    last = report["rows"][-1] if report["rows"] else {}
    if first.get("theory_metrics") and last is not first and last.get("theory_metrics"):
        better = {m.key: m.better for m in METRICS}
        lines += ["", f"Music theory on the samples of K = {first['iteration']} and K = {last['iteration']} (the "
                  "theory term's metrics; fresh samples each side, change measurable beyond twice its error):", "",
                  "| metric | better | K = first | K = last | change |", "|---|---|---|---|---|"]
        for metric in REPORTED_THEORY:
            a, b = first["theory_metrics"].get(metric, {}), last["theory_metrics"].get(metric, {})
            change = None
            if not any(is_missing(x) for x in (a.get("mean"), b.get("mean"), a.get("se"), b.get("se"))):
                change = (b["mean"] - a["mean"], math.hypot(a["se"], b["se"]))
            lines.append(f"| {metric} | {better.get(metric, '?')} | {format_mean(a.get('mean'), a.get('se'))} "
                         f"(N {a.get('n', 0)}) | {format_mean(b.get('mean'), b.get('se'))} (N {b.get('n', 0)}) | "
                         f"{describe_change(change)} |")
    names = [p.replace("|", "/") for p in report["prompts"]]  # a raw "|" would split the table cell
    lines += ["", "ACS per prompt:", "", "| K | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(report["prompts"])]
    for row in report["rows"]:
        per = row.get("acs_per_prompt") or {}
        errors = row.get("acs_se_per_prompt") or {}
        lines.append(f"| {row['iteration']} | " + " | ".join(format_mean(per.get(p), errors.get(p))
                                                            for p in report["prompts"]) + " |")
    lines.append("")
    return "\n".join(lines)


def dpo_command(recipe: Path, overrides: list[str]) -> int:
    """Improve a fine-tuned model with CLaMP-DPO: sample, score with the encoder, pick pairs, train DPOP; K times.

    Resumes automatically: finished samples, scores, pairs and checkpoints in output_dir are reused and training
    continues from its state file. Under torchrun sampling is split over the processes and training uses DDP.
    Writes output_dir/iter_k/{samples/, scores.json, eval.json, preferences.json, metrics.jsonl, train_state.pt,
    checkpoint/} and output_dir/report.{md,json}.

    Args:
        recipe: YAML recipe (see recipes/*/dpo.yaml); every key is a DPOConfig field.
        overrides: key=value pairs applied after the recipe (prompts separated by `;`).

    Examples:
        notagen dpo recipes/mini/dpo.yaml init_checkpoint=runs/mini-finetune/checkpoints/best encoder=ENCODER
        torchrun --nproc_per_node=8 -m notagen.cli dpo recipes/mini/dpo.yaml
    """
    config = load_dpo_recipe(recipe, overrides)
    run = DPORun(config)
    try:
        report = run.run()
    finally:
        run.close()
    if run.rt.main:
        rows = report["rows"]
        acs = " → ".join(format_mean(row.get("acs"), row.get("acs_se")) for row in rows)
        change = f" (change {describe_change(acs_change(rows[0], rows[-1]))})" if len(rows) > 1 else ""
        print(f"{config.iterations} DPO iteration(s); ACS {acs}{change}; final model {report['final_checkpoint']}; "
              f"report in {run.run_dir / 'report.md'}")
    return 0


dpo_command.__doc__ = (dpo_command.__doc__ or "").replace(
    "\n\n    Args:", "\n\n    Recipe keys:\n" + textwrap.indent(keys_help(), "    ") + "\n\n    Args:", 1)


__all__ = ["DPORun", "dpo_command", "scoring_text"]
