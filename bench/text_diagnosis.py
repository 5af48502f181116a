"""Why tiny data2vec text does not learn what a masked LM learns: measurements over training (issue 23, item 2).

    OMP_NUM_THREADS=2 python bench/text_diagnosis.py                       # the default text run, 300 steps
    OMP_NUM_THREADS=2 python bench/text_diagnosis.py --extra "--config_overrides target_layer_norm=layer"
    OMP_NUM_THREADS=2 python bench/text_diagnosis.py --mlm                 # also the masked-LM anchor, same budget

`data2vec-pretrain --modality text` runs as it does by default (`--extra` adds flags), and every `--every` steps (and
at the initial weights) this measures, without touching the run's RNGs or its training clock:

- **per-layer probe**: the package's probe (mean and std over the real tokens, logistic regression, the built-in
  docstring areas) on each hidden state alone, from the embedding layer (0) to the last;
- **token identity**: a logistic regression that predicts a position's input token from that position's hidden state,
  per layer (the 50 most frequent tokens of the probe's training texts, other positions and <s> / </s> left out;
  trained on up to 6000 positions of the probe's training texts, scored on its held-out texts);
- **what the targets encode**: on a fixed batch of training blocks, the teacher's targets (`forward_teacher`, as the
  loss sees them) split into the share of their variance that position alone explains (each position's mean over the
  batch) and the share the input token alone explains (each token id's mean), and the same for each averaged layer;
- the loss, target_var and pred_var the run logs.

With `--mlm`, the masked-LM anchor of `bench/anchors.py` (RobertaForMaskedLM, same data / size / recipe) gets the
per-layer and token-identity measurements at the same steps. Prints tables; `--json` keeps the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modeling_data2vec_unified import trainer  # noqa: E402
from modeling_data2vec_unified.masking import DataCollatorForData2VecPretraining  # noqa: E402
from modeling_data2vec_unified.modeling_data2vec_pretraining import Data2VecForPreTraining, eval_mode  # noqa: E402
from modeling_data2vec_unified.probe import pool, probe_accuracy  # noqa: E402
from modeling_data2vec_unified.training.checkpointing import rng_untouched  # noqa: E402

TOKENS, POSITIONS = 50, 6000


@torch.no_grad()
def hidden_states(forward, examples: list[dict], pad_id: int, batch_size: int = 64) -> list[list[np.ndarray]]:
    """Per layer, per example: the (T, D) hidden states of `forward(input_ids, attention_mask)` (a tuple of L + 1)."""
    layers = None
    for start in range(0, len(examples), batch_size):
        part = [e["input_ids"] for e in examples[start : start + batch_size]]
        T = max(len(p) for p in part)
        ids = torch.full((len(part), T), pad_id)
        mask = torch.zeros(len(part), T, dtype=torch.long)
        for i, p in enumerate(part):
            ids[i, : len(p)], mask[i, : len(p)] = torch.as_tensor(p), 1
        states = forward(ids, mask)
        layers = layers or [[] for _ in states]
        for layer, h in zip(layers, states):
            layer += [h[i, : len(p)].float().numpy() for i, p in enumerate(part)]
    return layers


def layer_probes(train: list[list[np.ndarray]], test: list[list[np.ndarray]], train_y, test_y) -> list[float]:
    """The probe's accuracy on each layer alone (pooled as the text probe pools: mean and std over real tokens)."""
    def pooled(per_example):
        return np.stack([pool(torch.from_numpy(h)[None], torch.ones(1, len(h)), "mean_std")[0].numpy()
                         for h in per_example])

    return [probe_accuracy(pooled(a), train_y, pooled(b), test_y) for a, b in zip(train, test)]


def token_identity(train, test, train_ids, test_ids, frequent: np.ndarray, rng) -> list[float]:
    """Per layer: held-out accuracy of predicting the input token (one of `frequent`) from its position's state."""
    from sklearn.linear_model import LogisticRegression

    def positions(ids_list):
        where = [(i, t) for i, ids in enumerate(ids_list) for t in range(1, len(ids) - 1) if ids[t] in frequent]
        return [where[k] for k in rng.permutation(len(where))[:POSITIONS]]

    train_pos, test_pos = positions(train_ids), positions(test_ids)
    ytr = np.array([train_ids[i][t] for i, t in train_pos])
    yte = np.array([test_ids[i][t] for i, t in test_pos])
    out = []
    for a, b in zip(train, test):
        xtr = np.stack([a[i][t] for i, t in train_pos])
        xte = np.stack([b[i][t] for i, t in test_pos])
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        clf = LogisticRegression(max_iter=500).fit((xtr - mu) / sd, ytr)
        out.append(float(clf.score((xte - mu) / sd, yte)))
    return out


def explained(y: torch.Tensor, ids: torch.Tensor) -> tuple[float, float]:
    """(share of the variance of (B, T, D) `y` explained by position, by input token id)."""
    total = (y - y.mean((0, 1))).square().mean()
    by_position = (y - y.mean(0, keepdim=True)).square().mean()
    flat, tokens = y.reshape(-1, y.shape[-1]), ids.reshape(-1)
    means = torch.zeros(int(tokens.max()) + 1, y.shape[-1]).index_add_(0, tokens, flat)
    counts = torch.zeros(int(tokens.max()) + 1).index_add_(0, tokens, torch.ones(len(tokens)))
    by_token = (flat - means[tokens] / counts[tokens, None]).square().mean()
    return float(1 - by_position / total), float(1 - by_token / total)


class Diagnosis:
    def __init__(self, data, config, seed: int):
        self.probe, self.config = data.probe, config
        self.train_y = np.array([e["labels"] for e in data.probe.train])
        self.test_y = np.array([e["labels"] for e in data.probe.test])
        self.train_ids = [np.asarray(e["input_ids"]) for e in data.probe.train]
        self.test_ids = [np.asarray(e["input_ids"]) for e in data.probe.test]
        counts = np.bincount(np.concatenate([ids[1:-1] for ids in self.train_ids]))
        self.frequent = np.argsort(counts)[::-1][:TOKENS]
        self.seed = seed
        blocks = [data.train[i] for i in range(32)]
        self.batch = DataCollatorForData2VecPretraining(config, seed=seed).collate_inputs(blocks)
        self.rows = []

    def encoder(self, forward, step: int, name: str) -> dict:
        pad = self.config.pad_token_id
        train = hidden_states(forward, self.probe.train, pad)
        test = hidden_states(forward, self.probe.test, pad)
        rng = np.random.default_rng(self.seed)
        return {"method": name, "step": step,
                "layer_probe": layer_probes(train, test, self.train_y, self.test_y),
                "token_identity": token_identity(train, test, self.train_ids, self.test_ids, self.frequent, rng)}

    @torch.no_grad()
    def data2vec(self, model: Data2VecForPreTraining, step: int) -> dict:
        with eval_mode(model):
            row = self.encoder(lambda ids, m: model.data2vec(ids, attention_mask=m, output_hidden_states=True)
                               .hidden_states, step, "data2vec")
            batch = {k: v for k, v in self.batch.items() if k in ("input_ids", "attention_mask")}
            targets = model.forward_teacher(batch, model.data2vec.embed(batch))
            c = model.config
            teacher = model.teacher
            front = model.data2vec.contextualize(model.data2vec.embed(batch))
            out = teacher(front.hidden_states, front.attention_mask, front.grid, output_ffn_outputs=True,
                          output_hidden_states=True)
            layers = out.ffn_outputs if c.target_layer_output == "ffn" else out.hidden_states[1:]
        ids = batch["input_ids"]
        row["targets_explained_by_position"], row["targets_explained_by_token"] = explained(targets, ids)
        from modeling_data2vec_unified.modeling_data2vec_pretraining import normalize_targets

        row["layers_explained"] = [explained(normalize_targets(h.float(), c.target_layer_norm), ids)
                                   for h in layers[-c.average_top_k_layers:]]
        self.rows.append(row)
        return row


def show(rows: list[dict]) -> str:
    lines = []
    for key, title in (("layer_probe", "probe on each layer alone (0 = embeddings)"),
                       ("token_identity", f"input token from its position's state ({TOKENS} most frequent)")):
        lines += [f"{title}:", "| method | step | " + " | ".join(f"L{i}" for i in range(len(rows[0][key]))) + " |",
                  "|---|---|" + "---|" * len(rows[0][key])]
        lines += [f"| {r['method']} | {r['step']} | " + " | ".join(f"{100 * v:.1f}" for v in r[key]) + " |"
                  for r in rows]
        lines.append("")
    d2v = [r for r in rows if "targets_explained_by_position" in r]
    if d2v:
        lines += ["teacher targets: share of variance explained by position / by input token (final targets; each "
                  "averaged layer, normalised):", "| step | targets | layers |", "|---|---|---|"]
        lines += [f"| {r['step']} | {r['targets_explained_by_position']:.2f} / {r['targets_explained_by_token']:.2f} | "
                  + ", ".join(f"{p:.2f} / {t:.2f}" for p, t in r["layers_explained"]) + " |" for r in d2v]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extra", default="", help="more data2vec-pretrain flags, one string")
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mlm", action="store_true", help="also the masked-LM anchor, same steps")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    diag: Diagnosis | None = None
    original = trainer.Data2VecPretrainer.periodic_probe

    def periodic_probe(self, step):
        nonlocal diag
        began = time.perf_counter()
        if diag is None:
            diag = Diagnosis(self.data, self.config, args.seed)
            with rng_untouched(self.accelerator.device):  # building a model draws: not the run's RNG
                initial = Data2VecForPreTraining(self.config)
            initial.load_state_dict(self._initial_encoder_state)
            diag.data2vec(initial, 0)
        diag.data2vec(self.unwrapped, step)
        print(show(diag.rows[-1:]), flush=True)
        return original(self, step) + time.perf_counter() - began

    init = trainer.Data2VecPretrainer.__init__

    def remember_initial(self, *a, **kw):
        init(self, *a, **kw)
        self._initial_encoder_state = {k: v.clone() for k, v in self.unwrapped.state_dict().items()}

    trainer.Data2VecPretrainer.periodic_probe = periodic_probe
    trainer.Data2VecPretrainer.__init__ = remember_initial
    with tempfile.TemporaryDirectory(prefix="text-diagnosis.") as tmp:
        out = Path(tmp) / "run"
        argv_run = ["--modality", "text", "--output_dir", str(out), "--probe_steps", str(args.every), "--report_to",
                    "none", "--disable_tqdm", "--seed", str(args.seed), "--save_steps", "1000000000",
                    *args.extra.split()]
        trainer.cli(argv_run)
        rows = diag.rows
        if args.mlm:
            rows += mlm_rows(out, args, diag)
    text = show(rows)
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": argv_run, "rows": rows}, indent=1))


def mlm_rows(reference: Path, args, diag: Diagnosis) -> list[dict]:
    """The masked-LM anchor trained as bench/anchors.py trains it, measured at the same steps."""
    import anchors

    rows, calls = [], [0]
    original = anchors.TextMaskedLM.features

    def features(self, examples, pooling, batch_size=64):
        step = len(rows) * args.every
        calls[0] += 1
        if calls[0] % 2 == 1:  # run_anchor's probe asks for the train features, then the held-out ones
            model = self.model
            was = model.training
            model.eval()
            rows.append(diag.encoder(lambda ids, m: model.roberta(ids, attention_mask=m, output_hidden_states=True)
                                     .hidden_states, step, "masked LM"))
            model.train(was)
        return original(self, examples, pooling, batch_size)

    anchors.TextMaskedLM.features = features
    steps = trainer.TRAINING_DEFAULTS["tiny"]["text"][2]
    for flag, value in zip(args.extra.split()[::2], args.extra.split()[1::2]):
        if flag == "--max_steps":
            steps = int(value)
    anchors.run_anchor("text", reference, steps, args.every, args.seed)
    return rows


if __name__ == "__main__":
    main()
